"""``annt diagnose``: the gradient-masking checklist on one model, with a verdict."""

from __future__ import annotations

import argparse
from typing import Any

from annt.cli.common import (
    add_data_dir,
    add_device,
    add_model_source,
    add_trust,
    load_model_arg,
    load_model_source,
    model_label,
    positive_int,
    resolve_device,
)
from annt.device import exact_float32
from annt.errors import AnntError
from annt.robustness.defaults import (
    DEFAULT_NORM,
    DEFAULT_SAMPLES,
    DEFAULT_SEED,
    DEFAULT_SELFTEST,
    DEFAULT_TOLERANCE,
    ENSEMBLES,
    GRADIENT_ATTACKS,
    NORMS,
    SELFTEST_MIN_PASS,
)

# The options mirror the study spec's ``diagnose:`` block (annt.experiments.spec.DiagnoseSpec),
# field -> option dest; defaults come from annt.robustness.defaults, the one source that
# annt.diagnose uses too. tests/foundation/test_cli_reference.py fails when a DiagnoseSpec
# field has no option here, or a default disagrees.
SPEC_OPTIONS = {
    "eps": "eps", "norm": "norm", "samples": "samples", "attacks": "attacks", "params": "param",
    "surrogate": "surrogate", "grow": "no_grow", "tolerance": "tolerance", "selftest": "selftest",
    "ensemble": "ensemble",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diagnose", help="is the model robust or are its gradients masked? (checklist + verdict)")
    add_model_source(p, flag_help="the model to diagnose")
    p.add_argument("--dataset", default=None, help="dataset (default: the checkpoint's)")
    p.add_argument("--samples", type=positive_int, default=DEFAULT_SAMPLES, help="correctly classified test images")
    p.add_argument("--eps", type=float, action="append", required=True, help="budget (repeatable)")
    p.add_argument("--norm", default=DEFAULT_NORM, choices=NORMS)
    p.add_argument("--attacks", default=None,
                   help=f"comma-separated attacks (default: {','.join(GRADIENT_ATTACKS)} + gradient-free ones registered)")
    p.add_argument("--param", action="append", default=[], metavar="ATTACK.KEY=VALUE", help="attack parameter, e.g. pgd.steps=100 (repeatable)")
    p.add_argument("--surrogate", default=None,
                   help="model to craft transfer attacks on: checkpoint folder, zoo:NAME or TorchScript file")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--no-grow", action="store_true", help="skip the growing-eps check")
    p.add_argument(
        "--tolerance", type=unit_float, default=DEFAULT_TOLERANCE, metavar="T",
        help=f"robust accuracies closer than T count as equal in the verdict (0..1, default {DEFAULT_TOLERANCE:g})",
    )
    p.add_argument(
        "--selftest", type=count, default=DEFAULT_SELFTEST, metavar="N",
        help="strength self-test (binarization test) of the strongest gradient and gradient-free attack at the"
             f" largest eps on the first N images; below a pass rate of {SELFTEST_MIN_PASS:g} the verdict is"
             f" 'attacks too weak' instead of robust (default {DEFAULT_SELFTEST}; 0: off)")
    p.add_argument("--ensemble", default=None,
                   help=f"also run this attack ensemble (as annt robust-accuracy) on the same images at each eps:"
                        f" {', '.join(ENSEMBLES)} or a list such as apgd_ce,apgd_ce[sigmoid],square")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--out", default=None, help="folder for diagnose.json / diagnose.npz")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_data_dir(p)
    add_device(p)
    add_trust(p)
    p.set_defaults(func=run)


def count(text: str) -> int:
    """argparse type for a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def unit_float(text: str) -> float:
    """argparse type for a number in [0, 1] (DiagnoseSpec.tolerance's range)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 <= value <= 1:  # also rejects nan
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def parse_attack_params(items: list[str]) -> dict[str, dict[str, Any]]:
    """``pgd.steps=100`` -> ``{"pgd": {"steps": 100}}``."""
    from annt.attacks import parse_param

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, value = parse_param(item)
        attack, dot, name = key.partition(".")
        if not dot or not attack or not name:
            raise AnntError(f"bad --param {item!r}: write ATTACK.KEY=VALUE, e.g. pgd.steps=100")
        out.setdefault(attack, {})[name] = value
    return out


def format_result(result: Any) -> str:
    """Tables per eps (robust accuracy per attack, worst case, ensemble), checks, self-test,
    verdict with its explanation, evidence."""
    lines = [f"{result.checkpoint} on {result.dataset}: {result.samples} correctly classified test images, "
             f"norm {result.norm}, seed {result.seed}"]
    ens = {r["eps"]: r for r in (result.ensemble or {}).get("per_eps", [])}
    for e in result.eps:
        lines.append(f"eps {e:g}: robust accuracy")
        for o in [o for o in result.outcomes if o.eps == e]:
            lines.append(f"  {o.name:24s} {o.kind:14s} {o.robust_accuracy:.3f}  ({o.seconds:.1f} s)")
        lines.append(f"  {'worst case':24s} {'all together':14s} {result.worst_case[e]:.3f}")
        if e in ens:
            r, seconds = ens[e], sum(st["seconds"] for st in ens[e]["stages"])
            lines.append(f"  {result.ensemble['name'] + ' ensemble':24s} {'as robust-acc.':14s} "
                         f"{r['robust_accuracy']:.3f}  ({seconds:.1f} s; RobustBench convention "
                         f"{r['robust_accuracy_robustbench']:.3f} = clean accuracy "
                         f"{result.ensemble['clean_accuracy']:.3f} x {r['robust_accuracy']:.3f})")
    if result.growing:
        lines.append("growing eps (pgd success): " + ", ".join(f"{e:g}: {r:.3f}" for e, r in result.growing))
    g = result.gradient
    lines.append(f"input gradient: {g['zero_gradient']:.3f} zero, {g['vanishing_gradient']:.3f} vanishing, "
                 f"median L2 {g['median_gradient_l2']:.3g}")
    if result.selftests:
        lines.append("self-test (binarization test: an adversarial example is planted within eps):")
        for r in result.selftests:
            rate = "n/a" if r["valid"] == 0 else f"{r['pass_rate']:.3f}"
            lines.append(f"  {r['name']:24s} eps {r['eps']:<6g} found {r['passed']}/{r['valid']}  pass rate {rate}  "
                         f"{'pass' if r['strong_enough'] else 'FAIL'}  ({r['role']}, {r['seconds']:.1f} s)")
    lines += [f"skipped: {s}" for s in result.skipped]
    lines.append(f"verdict: {result.verdict}")
    lines += [f"  {line}" for line in result.explanation]
    if result.evidence:
        lines.append("  evidence:")
    lines += [f"  - {line}" for line in result.evidence]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from annt.robustness import diagnose

    device = resolve_device(args.device)
    exact_float32(device)  # attacks end on the decision boundary: no TF32 (see annt.device)
    model = load_model_source(args, device)
    surrogate = load_model_arg(args.surrogate, device, args.trust_unverified) if args.surrogate else None
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()] if args.attacks else None
    result = diagnose(
        model, args.dataset, samples=args.samples, eps=args.eps, norm=args.norm, attacks=attacks,
        params=parse_attack_params(args.param), surrogate=surrogate, seed=args.seed,
        data_dir=args.data_dir, batch_size=args.batch_size, grow=not args.no_grow, tolerance=args.tolerance,
        selftest=args.selftest, ensemble=args.ensemble, progress=not args.quiet,
    )
    result.checkpoint = model_label(args)
    if args.surrogate:
        result.meta["surrogate"] = args.surrogate
    if args.out:
        from annt.robustness import save_diagnose

        save_diagnose(args.out, result)
    print(format_result(result))
    return 0
