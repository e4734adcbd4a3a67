"""ANNT's standard ensemble (``annt robust-accuracy``) against the reference AutoAttack and torchattacks' AutoAttack.

Same process, same model, same first N test images (misclassified ones included and counted as
not robust: RobustBench's convention), same budget. The three run the standard version: APGD-CE,
APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries), each on the images still robust.
Every tool's adversarial images are checked here the same way: an image counts as broken only if
the model misclassifies it within the budget (and inside [0, 1]).

Reference AutoAttack: Croce & Hein's code as packaged on PyPI (``pip install --no-deps
pyautoattack``, module ``pyautoattack``); torchattacks: ``pip install --no-deps torchattacks``.

    OMP_NUM_THREADS=1 ANNT_DATA_DIR=... python benchmarks/ensemble_vs_autoattack.py \\
        --model zoo:mnist_a@fp --dataset mnist --eps 0.1 --samples 200 --seeds 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time

import torch

import annt
from annt.data import load_dataset
from annt.robustness.ensemble import run_ensemble


def robust_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor, eps: float) -> float:
    """Share of images that stay correctly classified, or whose ``adv`` leaves the Linf ball or [0, 1]."""
    with torch.no_grad():
        wrong = model(adv).argmax(1) != y
    inside = ((adv - x).flatten(1).abs().amax(1) <= eps + 1e-6) & (adv.flatten(1).amin(1) >= 0) & (adv.flatten(1).amax(1) <= 1)
    return 1.0 - (wrong & inside).float().mean().item()


def reference_autoattack(model, x, y, eps: float, seed: int) -> torch.Tensor:
    from pyautoattack import AutoAttack

    attack = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=seed, device="cpu")
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a log line per attack
        return attack.run_standard_evaluation(x, y, batch_size=len(x))[0]  # (adversarial, labels)


def torchattacks_autoattack(model, x, y, eps: float, seed: int) -> torch.Tensor:
    import torchattacks as ta

    return ta.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=seed)(x, y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="zoo:mnist_a@fp")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1,
                    help="run each tool with seeds SEED .. SEED+N-1 and report the means (Square is random: on a"
                         " masked model one seed's result is luck within a few images)")
    ap.add_argument("--skip", default="", help="comma-separated tools to skip: annt, reference, torchattacks")
    ap.add_argument("--json", default=None, help="append the row as one JSON line to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = annt.load(args.model).eval()
    test = load_dataset(args.dataset, "test")
    x, y = test.x[: args.samples].float(), test.y[: args.samples].long()
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    skip = {s for s in args.skip.split(",") if s}
    row = {"model": args.model, "dataset": args.dataset, "eps": args.eps, "samples": len(x), "clean": clean,
           "threads": args.threads}
    seeds = range(args.seed, args.seed + args.seeds)
    tools = {"annt": None, "reference": reference_autoattack, "torchattacks": torchattacks_autoattack}
    for name, fn in tools.items():
        if name in skip:
            continue
        accs, secs = [], []
        for seed in seeds:
            tic = time.perf_counter()
            if fn is None:
                _, broken_by, adv, _ = run_ensemble(model, x, y, args.eps, ensemble="standard", seed=seed)
                adv = torch.as_tensor(adv)
                row.setdefault("annt_reported", []).append(float((broken_by == -1).mean()))
            else:
                adv = fn(model, x, y, args.eps, seed)
            secs.append(time.perf_counter() - tic)
            accs.append(robust_accuracy(model, x, y, adv, args.eps))
        row[name], row[f"{name}_s"] = sum(accs) / len(accs), sum(secs) / len(secs)
        row[f"{name}_seeds"], row[f"{name}_seeds_s"] = accs, secs
    print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
