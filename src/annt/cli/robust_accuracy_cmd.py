"""``annt robust-accuracy``: robust accuracy against an attack ensemble (AutoAttack style)."""

from __future__ import annotations

import argparse
from typing import Any

from annt.cli.common import (
    add_data_dir,
    add_device,
    add_model_source,
    add_trust,
    load_model_source,
    model_label,
    positive_int,
    resolve_device,
)
from annt.cli.diagnose_cmd import parse_attack_params
from annt.device import exact_float32
from annt.inputs.numbers import seed_arg
from annt.robustness.defaults import (
    DEFAULT_ENSEMBLE,
    DEFAULT_IMAGES,
    DEFAULT_NORM,
    ENSEMBLES,
    NORMS,
    stage_label,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("robust-accuracy",
                       help="robust accuracy against an attack ensemble (each attack on the images still robust)")
    add_model_source(p, flag_help="the model to evaluate")
    p.add_argument("--dataset", default=None, help="dataset (default: the checkpoint's)")
    p.add_argument("--eps", type=float, required=True, help="budget")
    p.add_argument("--norm", default=DEFAULT_NORM, choices=NORMS)
    p.add_argument("--ensemble", default=DEFAULT_ENSEMBLE,
                   help="; ".join(f"{k}: {', '.join(stage_label(a, o) for a, o in v)}" for k, v in ENSEMBLES.items())
                   + f"; or a comma-separated list of attacks, each with an optional [gradient]"
                   f" (apgd_ce,apgd_ce[sigmoid],square) (default {DEFAULT_ENSEMBLE})")
    p.add_argument("--n-images", type=positive_int, default=DEFAULT_IMAGES,
                   help=f"the first N test images (default {DEFAULT_IMAGES})")
    p.add_argument("--param", action="append", default=[], metavar="ATTACK.KEY=VALUE",
                   help="attack parameter, e.g. apgd_ce.steps=50 (repeatable)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--out", default=None,
                   help="folder for robust_accuracy.json / .npz and the finished stages (a re-run resumes)")
    add_data_dir(p)
    add_device(p)
    add_trust(p)
    p.set_defaults(func=run)


def format_result(result: Any) -> str:
    """Per-attack rows, then both robust accuracies, clearly labelled."""
    lines = [f"{result.checkpoint} on {result.dataset}: first {result.images} test images, ensemble "
             f"{result.ensemble}, eps {result.eps:g} (norm {result.norm}), seed {result.seed}",
             f"  {'attack':16s} {'attacked':>8s} {'broken':>7s} {'seconds':>8s}"]
    for s in result.stages:
        lines.append(f"  {s.name:16s} {s.attacked:8d} {s.broken:7d} {s.seconds:8.1f}"
                     + ("  (reused)" if s.reused else ""))
    correct, robust = int(result.clean_correct.sum()), int(result.robust.sum())
    lines += [
        f"clean accuracy: {result.clean_accuracy:.4f} ({correct}/{result.images})",
        f"robust accuracy (RobustBench: of all {result.images} images): {result.robust_accuracy:.4f}"
        f" ({robust}/{result.images})",
        f"robust accuracy (ANNT: of the {correct} correctly classified): {result.robust_accuracy_correct:.4f}"
        f" ({robust}/{correct})",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from annt.robustness.ensemble import ensemble_stages, robust_accuracy

    params = parse_attack_params(args.param)
    ensemble_stages(args.ensemble, args.norm, args.eps, params)  # bad options: one line, before loading
    device = resolve_device(args.device)
    exact_float32(device)  # attacks end on the decision boundary: no TF32 (see annt.device)
    model = load_model_source(args, device)
    result = robust_accuracy(
        model, args.dataset, eps=args.eps, norm=args.norm, ensemble=args.ensemble, n_images=args.n_images,
        params=params, seed=args.seed, data_dir=args.data_dir, batch_size=args.batch_size, out_dir=args.out,
        label=model_label(args), progress=not args.quiet,
    )
    print(format_result(result))
    if args.out:
        print(f"wrote {args.out}")
    return 0
