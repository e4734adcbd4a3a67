"""Boundary Attack, single-step mode: ANNT against Foolbox over several seeds, same images.

The peer table (attacks_vs_peers.py) times one seed; the strength of a random-walk attack
moves by a few percent from seed to seed, so this script compares median L2 over ``--seeds``
seeds on the same correctly classified MNIST test images and the same number of steps.

    pip install -e ".[bench]"
    OMP_NUM_THREADS=1 python benchmarks/boundary_single_seeds.py --images 40 --steps 600 --seeds 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from annt.attacks import run_attack  # noqa: E402
from annt.zoo import load_model  # noqa: E402
from attacks_vs_peers import pick_images  # noqa: E402


def judged(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which returned images fool the model (judged here, the same way for both), and their L2."""
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    return fooled, (adv - x).flatten(1).norm(dim=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--models", default="mnist_a@fp,mnist_a@1bit")
    args = p.parse_args(argv)
    import foolbox as fb

    torch.set_num_threads(1)
    print("| model | steps | ANNT median L2 | Foolbox | ANNT / Foolbox | Foolbox / ANNT on common (per seed) | time ANNT / Foolbox |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model = load_model(f"zoo:{name}").eval()
        x, y = pick_images(model, "mnist", args.images, 0)

        ours, theirs, common, t_ours, t_theirs = [], [], [], 0.0, 0.0
        for seed in range(args.seeds):
            tic = time.perf_counter()
            res = run_attack("boundary", model, x, y, {"max_iter": args.steps, "step_mode": "single"}, seed=seed)
            t_ours += time.perf_counter() - tic
            torch.manual_seed(seed)
            tic = time.perf_counter()
            adv = fb.attacks.BoundaryAttack(steps=args.steps)(fb.PyTorchModel(model, bounds=(0, 1)), x, y, epsilons=None)[0]
            t_theirs += time.perf_counter() - tic
            ok_a, d_a = judged(model, x, y, res.adversarial)
            ok_f, d_f = judged(model, x, y, adv)
            both = ok_a & ok_f
            ours.append(d_a[ok_a].median().item())
            theirs.append(d_f[ok_f].median().item())
            common.append((d_f[both].median() / d_a[both].median()).item())
        a, f = sum(ours) / len(ours), sum(theirs) / len(theirs)
        print(
            f"| {name} | {args.steps} | {a:.3f} | {f:.3f} | {a / f:.3f} | {min(common):.2f}-{max(common):.2f} | {t_ours / t_theirs:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
