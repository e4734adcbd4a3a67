"""ANNT's PGD / APGD against torchattacks on the same models, images, budget and machine.

Loads the zoo's Mnist A (FP and 1-bit), takes the same N correctly classified MNIST test
images for each model and runs every setting through ANNT and through torchattacks
(``pip install --no-deps torchattacks``), alternating which goes first; reports the best
wall time over ``--repeats``, the speed ratio, success rate and median norm of the
successful examples as a Markdown table (and JSON with ``--json``).

    OMP_NUM_THREADS=1 python benchmarks/new_attacks_vs_reference.py --samples 100 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

import annt
from annt.attacks import run_attack
from annt.data import load_dataset
from annt.data.sampling import sample_correct


def settings() -> dict[str, tuple[str, dict[str, Any]]]:
    """Row label -> (ANNT attack, parameters); torchattacks gets the same values."""
    return {
        "PGD Linf 0.1, 40 steps": ("pgd", {"eps": 0.1, "norm": "inf", "steps": 40}),
        "PGD L2 1.5, 40 steps": ("pgd", {"eps": 1.5, "norm": "2", "steps": 40}),
        "APGD-CE Linf 0.1, 100 steps": ("apgd_ce", {"eps": 0.1, "norm": "inf", "steps": 100}),
        "APGD-DLR Linf 0.1, 100 steps": ("apgd_dlr", {"eps": 0.1, "norm": "inf", "steps": 100}),
        "APGD-CE L2 1.5, 100 steps": ("apgd_ce", {"eps": 1.5, "norm": "2", "steps": 100}),
    }


def reference(model: torch.nn.Module, name: str, p: dict[str, Any]):
    import torchattacks as ta

    if name == "pgd":
        cls = ta.PGD if p["norm"] == "inf" else ta.PGDL2
        return cls(model, eps=p["eps"], alpha=2.5 * p["eps"] / p["steps"], steps=p["steps"], random_start=True)
    return ta.APGD(model, norm="Linf" if p["norm"] == "inf" else "L2", eps=p["eps"], steps=p["steps"],
                   loss=name.removeprefix("apgd_"), seed=0)


def measure(model, x, y, adv, norm: str) -> tuple[float, float]:
    with torch.no_grad():
        hit = model(adv).argmax(1) != y
    d = (adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "inf" else d.norm(dim=1)
    return hit.float().mean().item(), size[hit].median().item() if hit.any() else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--models", default="fp,1bit")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    test = load_dataset(args.dataset, "test")
    rows = []
    for bits in args.models.split(","):
        model = annt.load(f"zoo:mnist_a@{bits}")
        s = sample_correct(model, test, args.samples, 0)
        x, y = s.x, s.y
        for label, (name, p) in settings().items():
            best = {"annt": float("inf"), "torchattacks": float("inf")}
            out = {}
            for r in range(args.repeats):
                order = ("annt", "torchattacks") if r % 2 == 0 else ("torchattacks", "annt")
                for who in order:
                    tic = time.perf_counter()
                    if who == "annt":
                        adv = run_attack(name, model, x, y, p, seed=0).adversarial
                    else:
                        torch.manual_seed(0)
                        adv = reference(model, name, p)(x, y)
                    best[who] = min(best[who], time.perf_counter() - tic)
                    out[who] = measure(model, x, y, adv, p["norm"])
            rows.append({"model": f"Mnist A {bits}", "setting": label, "annt_s": best["annt"],
                         "ref_s": best["torchattacks"], "ratio": best["annt"] / best["torchattacks"],
                         "annt_success": out["annt"][0], "ref_success": out["torchattacks"][0],
                         "annt_median_norm": out["annt"][1], "ref_median_norm": out["torchattacks"][1]})
            print(rows[-1], flush=True)
    print(f"\n{args.samples} images, {args.threads} thread(s), best of {args.repeats}\n")
    print("| model | setting | ANNT s | torchattacks s | ANNT / ref time | success ANNT / ref | median norm ANNT / ref |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['setting']} | {r['annt_s']:.2f} | {r['ref_s']:.2f} | {r['ratio']:.2f} | "
              f"{r['annt_success']:.2f} / {r['ref_success']:.2f} | "
              f"{r['annt_median_norm']:.3f} / {r['ref_median_norm']:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
