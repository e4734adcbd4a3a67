"""Boundary Attack, single-step mode: ANNT against Foolbox over several seeds, same images.

The peer table (attacks_vs_peers.py) times one seed; the strength of a random-walk attack
moves by a few percent from seed to seed, so this script compares median L2 over ``--seeds``
seeds on the same correctly classified MNIST test images and the same number of steps.

    pip install -e ".[bench]"
    OMP_NUM_THREADS=1 python benchmarks/boundary_single_seeds.py --images 40 --steps 600 --seeds 4
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from annt.zoo import load_model  # noqa: E402
from attacks_vs_peers import annt_method, measure, pick_images, summarise  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--models", default="mnist_a@fp,mnist_a@1bit")
    args = p.parse_args(argv)
    import foolbox as fb

    torch.set_num_threads(1)
    params = {"max_iter": args.steps, "step_mode": "single"}
    print("| model | steps | ANNT median L2 | Foolbox | ANNT / Foolbox | Foolbox / ANNT on common (per seed) | time ANNT / Foolbox |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model = load_model(f"zoo:{name}").eval()
        x, y = pick_images(model, "mnist", args.images, 0)
        ours, theirs, common, t_ours, t_theirs = [], [], [], 0.0, 0.0
        for seed in range(args.seeds):

            def foolbox(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, goal, seed: int = seed) -> torch.Tensor:
                torch.manual_seed(seed)  # Foolbox draws from torch's global generator
                return fb.attacks.BoundaryAttack(steps=args.steps)(fb.PyTorchModel(m, bounds=(0, 1)), x, y, epsilons=None)[0]

            ours_run = annt_method(importlib.import_module("annt.attacks"), "boundary", params, seed)
            s_a, adv_a, _, _ = measure(model, ours_run, x, y, y)
            s_f, adv_f, _, _ = measure(model, foolbox, x, y, y)
            a, f = summarise(model, x, y, y, False, adv_a), summarise(model, x, y, y, False, adv_f)
            both = a["ok"] & f["ok"]
            t_ours, t_theirs = t_ours + s_a, t_theirs + s_f
            ours.append(a["l2"])
            theirs.append(f["l2"])
            common.append(float(f["l2_all"][both].median() / a["l2_all"][both].median()))
        a_mean, f_mean = sum(ours) / len(ours), sum(theirs) / len(theirs)
        print(
            f"| {name} | {args.steps} | {a_mean:.3f} | {f_mean:.3f} | {a_mean / f_mean:.3f} | "
            f"{min(common):.2f}-{max(common):.2f} | {t_ours / t_theirs:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
