"""The adaptive-evaluation table of docs/results/robustness.md: per zoo model and eps, on the
first N test images (RobustBench convention: a misclassified clean image is not robust):

- ``standard``: AutoAttack's standard ensemble (APGD-CE, APGD-T, FAB-T, Square-5000);
- ``adaptive``: the adaptive ensemble; its gradient stages together (every stage before Square)
  are the "gradient attacks" column;
- ``square`` (optional): Square with 5000 queries alone, on every image; "Square after them" is
  how many images the adaptive ensemble's Square stage broke after its gradient stages, which
  bounds how far the gradient attacks trail Square (gap <= that count / N);
- worst case: an image counts as robust only if it survived every run.

Each run is ``annt robust-accuracy`` with ``--out ROOT/<model>/<eps>/<run>``: a killed run resumes
from its last finished stage, and a finished one is read back. Run slices in parallel processes
(one thread each), then once more with ``--table`` to print the Markdown rows.

    OMP_NUM_THREADS=1 python scripts/adaptive_table.py --root runs/adaptive --family mnist_a \\
        --dataset mnist --eps 0.1 --eps 0.3 --n-images 1000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from annt.robustness.ensemble import ROBUST, robust_accuracy
from annt.robustness.store import load_robust_accuracy

BITS = ("fp", "16bit", "12bit", "8bit", "4bit", "2bit", "1bit")
RUNS = {"standard": ("standard", {}), "adaptive": ("adaptive", {}),
        "square": ("square", {"square": {"max_queries": 5000}})}


def run_dir(root: Path, model: str, eps: float, run: str) -> Path:
    return root / model.replace("zoo:", "").replace("@", "-") / f"eps{eps:g}" / run


def one(root: Path, model: str, dataset: str, eps: float, run: str, n: int) -> None:
    out = run_dir(root, model, eps, run)
    if (out / "robust_accuracy.json").is_file():
        return
    ensemble, params = RUNS[run]
    res = robust_accuracy(model, dataset, eps=eps, ensemble=ensemble, n_images=n, params=params, out_dir=out)
    print(f"{model} eps {eps:g} {run}: {res.robust_accuracy:.4f}", flush=True)


def row(root: Path, model: str, eps: float) -> dict | None:
    """The table row of one model and eps; None until both ensembles finished (Square alone is
    optional)."""
    found = {}
    for run in RUNS:
        out = run_dir(root, model, eps, run)
        if (out / "robust_accuracy.json").is_file():
            found[run] = load_robust_accuracy(out)
    if "standard" not in found or "adaptive" not in found:
        return None
    broken = {run: np.asarray(r["broken_by"]) for run, r in found.items()}
    square_stage = len(found["adaptive"]["stages"]) - 1
    gradient = (broken["adaptive"] == ROBUST) | (broken["adaptive"] == square_stage)
    worst = np.logical_and.reduce([b == ROBUST for b in broken.values()])
    return {"model": model, "eps": eps, "images": len(broken["standard"]),
            "clean": float(np.mean(found["standard"]["clean_correct"])),
            "standard": float(np.mean(broken["standard"] == ROBUST)),
            "adaptive": float(np.mean(broken["adaptive"] == ROBUST)),
            "gradient": float(np.mean(gradient)),
            "square_after": int(np.sum(broken["adaptive"] == square_stage)),
            "square": float(np.mean(broken["square"] == ROBUST)) if "square" in broken else None,
            "worst": float(np.mean(worst)),
            "seconds": {run: round(sum(st["seconds"] for st in r["stages"]), 1) for run, r in found.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--family", default="mnist_a")
    ap.add_argument("--bits", default=",".join(BITS))
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--eps", type=float, action="append", required=True)
    ap.add_argument("--runs", default=",".join(RUNS))
    ap.add_argument("--n-images", type=int, default=1000)
    ap.add_argument("--table", action="store_true", help="print the rows of the finished runs, run nothing")
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(args.root)
    models = [f"zoo:{args.family}@{b}" for b in args.bits.split(",")]
    if args.table:
        print("| model | eps | images | clean | standard ensemble | adaptive ensemble | gradient attacks |"
              " Square after them | Square-5000 alone | worst case |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for eps in args.eps:
            for m in models:
                r = row(root, m, eps)
                if r is None:
                    continue
                alone = "-" if r["square"] is None else f"{r['square']:.3f}"
                print(f"| {m} | {eps:g} | {r['images']} | {r['clean']:.3f} | {r['standard']:.3f} | {r['adaptive']:.3f}"
                      f" | {r['gradient']:.3f} | {r['square_after']} | {alone} | **{r['worst']:.3f}** |")
                with open(root / "rows.jsonl", "a") as f:
                    f.write(json.dumps(r) + "\n")
        return
    for eps in args.eps:
        for run in args.runs.split(","):
            for m in models:
                one(root, m, args.dataset, eps, run, args.n_images)


if __name__ == "__main__":
    main()
