"""The binarization-test table of docs/results/robustness.md: ``annt selftest`` for each model and
attack (an attack may name a quantizer gradient: ``apgd_ce[sigmoid]``), one JSON file each under
``--root`` (a finished one is read back, so a killed run resumes), then a Markdown table of the
pass rates (models as rows, attacks as columns).

    OMP_NUM_THREADS=1 python scripts/selftest_table.py --root runs/selftest --dataset mnist --eps 0.1 \\
        --models zoo:mnist_a@fp,zoo:mnist_a@1bit --attacks fgsm,pgd,apgd_ce,apgd_ce[sigmoid],square
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from annt.cli.main import main as annt
from annt.robustness.ensemble import ensemble_spec

ATTACKS = "fgsm,pgd,apgd_ce,apgd_ce[sigmoid],apgd_dlr,apgd_t,fab_t,square"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--models", required=True, help="comma-separated model names")
    ap.add_argument("--attacks", default=ATTACKS)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--eps", type=float, required=True)
    ap.add_argument("--n-images", type=int, default=50)
    ap.add_argument("--param", action="append", default=[], metavar="ATTACK.KEY=VALUE")
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    attacks = args.attacks.split(",")
    rates: dict[tuple[str, str], dict] = {}
    for model in args.models.split(","):
        for token in attacks:
            ((attack, own),) = ensemble_spec(token)  # the ensembles' ATTACK[GRADIENT] syntax
            gradient = own.get("gradient")
            out = root / f"{model.replace('zoo:', '').replace('@', '-')}-eps{args.eps:g}-{token}.json"
            if not out.is_file():
                extra = [f"gradient={gradient}"] if gradient else []
                extra += [p.split(".", 1)[1] for p in args.param if p.split(".", 1)[0] == attack]
                annt(["selftest", "--checkpoint", model, "--dataset", args.dataset, "--attack", attack,
                      "--eps", str(args.eps), "--n-images", str(args.n_images), "--out", str(out),
                      *[a for p in extra for a in ("--param", p)]])
            rates[model, token] = json.loads(out.read_text())
    print(f"| model (eps {args.eps:g}, {args.n_images} images) | " + " | ".join(attacks) + " |")
    print("|---|" + "---|" * len(attacks))
    for model in args.models.split(","):
        cells = []
        for token in attacks:
            r = rates[model, token]
            cells.append(f"{r['pass_rate']:.2f}" + ("" if r["strong_enough"] else " ✗"))
        print(f"| {model} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
