"""Gradient attacks adapted to low-bit quantizers against the Square Attack (gradient masking check).

On the zoo's 1- and 2-bit Mnist A the straight-through gradient is masked: APGD-CE leaves far
more images robust than the gradient-free Square Attack. This runs, per model, on the first N
MNIST test images (robust accuracy over all N, misclassified ones count as not robust) at one
Linf budget: APGD-CE with the default ``ste`` gradient, with ``soft``, and the gradient attacks
with the ``sigmoid`` surrogate (annt.quant.surrogate), their union, and Square (5000 queries by
default; its result is cached in ``--cache``, keyed by model, images, budget, queries and seed,
so that reruns skip it).

    OMP_NUM_THREADS=1 python benchmarks/adaptive_attacks.py --samples 200 --eps 0.1 \\
        --cache /tmp/square_cache.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

import annt
from annt.attacks import run_attack
from annt.data import load_dataset
from annt.errors import AnntError
from annt.store.atomic import atomic_write_json


def rows(steps: int, targets: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """Row label -> (attack, parameters besides eps)."""
    sig = {"gradient": "sigmoid", "gradient_temperature": 0.25}
    return {
        f"apgd_ce ste (default), {steps} steps": ("apgd_ce", {"steps": steps}),
        f"apgd_ce soft T=0.5, {steps} steps": ("apgd_ce", {"steps": steps, "gradient": "soft",
                                                           "gradient_temperature": 0.5}),
        f"apgd_ce sigmoid T=0.25, {steps} steps": ("apgd_ce", {"steps": steps} | sig),
        f"apgd_ce sigmoid T=0.35, {steps} steps": ("apgd_ce", {"steps": steps, "gradient": "sigmoid",
                                                               "gradient_temperature": 0.35}),
        f"apgd_dlr sigmoid T=0.25, {steps} steps": ("apgd_dlr", {"steps": steps} | sig),
        f"pgd sigmoid T=0.25, {steps} steps, step 0.01": ("pgd", {"steps": steps, "step_size": 0.01} | sig),
        f"apgd_t sigmoid T=0.25, {steps} steps, {targets} targets": (
            "apgd_t", {"steps": steps, "n_target_classes": targets} | sig),
    }


def images(samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``samples`` MNIST test images (the data directory's, else the bundled 1,000,
    which are the same images)."""
    try:
        ds = load_dataset("mnist", "test", download=False)
    except AnntError:
        ds = load_dataset("mnist-embedded", "test")
    return ds.x[:samples].float(), ds.y[:samples].long()


@torch.no_grad()
def judged(model, x, y, adv, eps: float) -> torch.Tensor:
    """The model's own verdict on ``adv`` (a fresh forward pass, no surrogate), after checking that
    ``adv`` is an image within the Linf budget."""
    assert adv.min() >= 0 and adv.max() <= 1 and (adv - x).abs().max() <= eps + 1e-6
    return model(adv).argmax(1) != y


def square(model, name: str, x, y, eps: float, queries: int, seed: int, cache: Path | None) -> torch.Tensor:
    """Square's success mask, from ``cache`` when it holds this exact setting."""
    key = f"{name}|n={len(x)}|eps={eps}|queries={queries}|seed={seed}"
    stored = json.loads(cache.read_text()) if cache is not None and cache.exists() else {}
    if key in stored:
        return torch.tensor(stored[key], dtype=torch.bool)
    t = time.perf_counter()
    res = run_attack("square", model, x, y, {"eps": eps, "max_queries": queries}, seed=seed)
    hit = judged(model, x, y, res.adversarial, eps)
    print(f"  (square ran in {time.perf_counter() - t:.0f} s)", flush=True)
    if cache is not None:
        stored[key] = hit.tolist()
        atomic_write_json(cache, stored)
    return hit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["zoo:mnist_a@1bit", "zoo:mnist_a@2bit"])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--targets", type=int, default=3, help="apgd_t's runner-up classes")
    ap.add_argument("--queries", type=int, default=5000, help="Square's query budget")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=None, help="JSON file caching Square's results")
    ap.add_argument("--only", nargs="*", default=None, help="run only the rows whose label starts so")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, y = images(args.samples)
    for name in args.models:
        model = annt.load(name)
        with torch.no_grad():
            clean = model(x).argmax(1) == y
        print(f"\n{name}: {args.samples} images, Linf {args.eps}, clean accuracy {clean.float().mean():.3f}")
        print("| attack | robust accuracy | seconds |\n| --- | --- | --- |")
        union = ~clean
        for label, (attack, params) in rows(args.steps, args.targets).items():
            if args.only and not any(label.startswith(o) for o in args.only):
                continue
            t = time.perf_counter()
            res = run_attack(attack, model, x, y, {"eps": args.eps} | params, seed=args.seed)
            hit = judged(model, x, y, res.adversarial, args.eps) | ~clean
            assert torch.equal(hit, res.success | ~clean), label  # the attack's mask is the model's verdict
            if "sigmoid" in label:
                union |= hit
            print(f"| {label} | {1 - hit.float().mean():.3f} | {time.perf_counter() - t:.0f} |", flush=True)
        print(f"| union of the sigmoid rows | {1 - union.float().mean():.3f} | |")
        sq = square(model, name, x, y, args.eps, args.queries, args.seed, args.cache) | ~clean
        print(f"| square {args.queries} queries | {1 - sq.float().mean():.3f} | |")
        print(f"| union of the sigmoid rows and square | {1 - (union | sq).float().mean():.3f} | |", flush=True)


if __name__ == "__main__":
    main()
