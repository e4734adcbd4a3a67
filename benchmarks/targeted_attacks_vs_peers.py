"""ANNT's APGD-T and FAB-T against torchattacks' APGDT and FAB (multi-targeted), AutoAttack's settings.

Loads a zoo model, takes the first N test images (misclassified ones included: RobustBench's
convention, a clean error is not robust) and runs each attack through ANNT and through
torchattacks (``pip install --no-deps torchattacks``) with the same settings: 100 steps, one
restart, 9 target classes, FAB's alpha_max 0.1, eta 1.05, beta 0.9. A reference's image counts as
broken only if it is misclassified within eps. Prints robust accuracy and wall time per attack
as a Markdown table (and JSON with ``--json``).

    OMP_NUM_THREADS=1 ANNT_DATA_DIR=... python benchmarks/targeted_attacks_vs_peers.py --samples 200 --eps 0.1
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import annt
from annt.attacks import run_attack
from annt.data import load_dataset


def reference(model: torch.nn.Module, name: str, eps: float, norm: str, steps: int, targets: int):
    import torchattacks as ta

    ta_norm = "Linf" if norm == "inf" else "L2"
    if name == "apgd_t":
        return ta.APGDT(model, norm=ta_norm, eps=eps, steps=steps, n_restarts=1, n_classes=targets + 1, seed=0)
    return ta.FAB(model, norm=ta_norm, eps=eps, steps=steps, n_restarts=1, alpha_max=0.1, eta=1.05, beta=0.9,
                  multi_targeted=True, n_classes=targets + 1, seed=0)


def robust_accuracy(model, x, y, adv, eps: float, norm: str) -> float:
    """Share of images classified correctly at ``adv`` or whose ``adv`` is outside the budget."""
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    d = (adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "inf" else d.norm(dim=1)
    fooled &= size <= (eps + 1e-6 if norm == "inf" else eps * (1 + 1e-5))
    return 1.0 - fooled.float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--norm", default="inf", choices=["inf", "2"])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--targets", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--model", default="zoo:mnist_a@fp")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    test = load_dataset(args.dataset, "test")
    model = annt.load(args.model)
    x, y = test.x[: args.samples].float(), test.y[: args.samples].long()
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    rows = []
    for name in ("apgd_t", "fab_t"):
        params = {"eps": args.eps, "norm": args.norm, "steps": args.steps, "n_target_classes": args.targets}
        tic = time.perf_counter()
        ours = run_attack(name, model, x, y, params, seed=0)
        annt_s = time.perf_counter() - tic
        tic = time.perf_counter()
        ref_adv = reference(model, name, args.eps, args.norm, args.steps, args.targets)(x, y)
        ref_s = time.perf_counter() - tic
        rows.append({"attack": name, "annt_robust": robust_accuracy(model, x, y, ours.adversarial, args.eps, args.norm),
                     "annt_success_robust": 1.0 - ours.success.float().mean().item(),
                     "ref_robust": robust_accuracy(model, x, y, ref_adv, args.eps, args.norm),
                     "annt_s": annt_s, "ref_s": ref_s})
        print(rows[-1], flush=True)
    print(f"\n{args.model}, first {args.samples} {args.dataset} test images (clean accuracy {clean:.3f}), "
          f"{'Linf' if args.norm == 'inf' else 'L2'} eps {args.eps}, {args.steps} steps, {args.targets} targets, "
          f"{args.threads} thread(s)\n")
    print("| attack | robust accuracy ANNT / torchattacks | ANNT s | torchattacks s |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['attack']} | {r['annt_robust']:.3f} / {r['ref_robust']:.3f} | {r['annt_s']:.1f} | {r['ref_s']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
