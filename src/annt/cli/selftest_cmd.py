"""``annt selftest``: is an attack strong enough? The binarization test (planted adversarial examples)."""

from __future__ import annotations

import argparse

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
from annt.cli.diagnose_cmd import unit_float
from annt.device import exact_float32
from annt.inputs.numbers import seed_arg
from annt.robustness.defaults import (
    DEFAULT_NORM,
    NORMS,
    SELFTEST_IMAGES,
    SELFTEST_INNER,
    SELFTEST_MIN_PASS,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("selftest", help="does an attack find adversarial examples planted within eps? (binarization test)")
    add_model_source(p, flag_help="the model whose logits the test builds on")
    p.add_argument("--attack", required=True, help="attack name (`annt attacks` lists them)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="attack parameter (repeatable)")
    p.add_argument("--dataset", default=None, help="dataset (default: the checkpoint's)")
    p.add_argument("--eps", type=float, required=True, help="budget")
    p.add_argument("--norm", default=DEFAULT_NORM, choices=NORMS)
    p.add_argument("--n-images", type=positive_int, default=SELFTEST_IMAGES,
                   help=f"correctly classified test images (default {SELFTEST_IMAGES})")
    p.add_argument("--inner", type=positive_int, default=SELFTEST_INNER,
                   help=f"random class-0 points per image (default {SELFTEST_INNER})")
    p.add_argument("--min-pass", type=unit_float, default=SELFTEST_MIN_PASS, metavar="R",
                   help=f"pass rate below which the attack counts as too weak (default {SELFTEST_MIN_PASS:g})")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--out", default=None, help="JSON file for the result")
    add_data_dir(p)
    add_device(p)
    add_trust(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from annt.attacks import parse_param
    from annt.robustness.selftest import check_selftest_args, selftest

    params = dict(parse_param(item) for item in args.param)
    check_selftest_args(args.attack, args.eps, args.norm, args.inner, params)
    out = None
    if args.out:
        from annt.inputs.files import output_file

        out = output_file(args.out, "selftest output", ".json")
    device = resolve_device(args.device)
    exact_float32(device)
    model = load_model_source(args, device)
    result = selftest(
        model, args.dataset, attack=args.attack, eps=args.eps, norm=args.norm, params=params,
        n_images=args.n_images, inner=args.inner, seed=args.seed, min_pass=args.min_pass,
        data_dir=args.data_dir, batch_size=args.batch_size,
    )
    result.meta["checkpoint"] = model_label(args)
    valid, passed = int(result.valid.sum()), int((result.passed & result.valid).sum())
    print(f"{result.attack} on {result.meta['checkpoint']}: eps {result.eps:g} (norm {result.norm}),"
          f" {len(result.index)} images, {valid} with a valid planted task")
    print(f"found the planted adversarial example on {passed}/{valid}: pass rate {result.pass_rate:.3f}"
          f" ({result.seconds:.1f} s)")
    print(f"verdict: {'strong enough' if result.strong_enough else 'too weak'} (threshold {result.min_pass:g})")
    if out is not None:
        from annt.store.atomic import atomic_write_json

        atomic_write_json(out, result.to_dict())
    return 0
