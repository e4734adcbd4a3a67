"""``annt run`` (studies), ``annt report``, ``annt show`` and ``annt evaluate --adversarial``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from annt.cli.common import add_data_dir, add_trust, positive_int
from annt.device import resolve_device
from annt.errors import AnntError
from annt.inputs.files import output_dir, output_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a study (YAML): train, attack, evaluate, report; resumable")
    p.add_argument("spec", help="study YAML file (see examples/quickstart.yaml)")
    p.add_argument("--out", default=None, help="output directory (default: the spec's `output`, else runs/NAME)")
    p.add_argument("--device", default=None, help="override the spec's device: cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch (overrides the spec)")
    p.add_argument("--no-report", action="store_true", help="skip writing the report at the end")
    p.add_argument("--check", action="store_true", help="only validate the spec (nothing is written)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="cells run at once (local processes unless --executor says otherwise)")
    p.add_argument("--executor", choices=("serial", "processes", "ray"), default=None,
                   help="where cells run (overrides the spec's `executor`)")
    p.add_argument("--ray-address", default=None, help="Ray cluster to use (HOST:PORT, auto) or `local`")
    p.add_argument("--wait", action="store_true",
                   help="if another run holds the output folder, wait for it instead of stopping")
    p.set_defaults(func=run_command)

    p = sub.add_parser("report", help="write report.md, tables (CSV) and figures (PNG) of a study directory")
    p.add_argument("outdir", help="a study output directory (holds results.sqlite)")
    p.add_argument("--study", default=None, help="study id (default: the latest; `all` for every result)")
    p.add_argument("--out", default=None, help="report folder (default: OUTDIR/report)")
    p.add_argument("--grid-images", type=positive_int, default=8, help="images per adversarial grid")
    p.add_argument("--html", action="store_true",
                   help="also write report.html: one self-contained file (tables, figures inline, no scripts)")
    add_data_dir(p)
    p.set_defaults(func=report_command)

    p = sub.add_parser("show", help="draw an adversarial set (.npz) as an image grid (PNG)")
    p.add_argument("set", help="adversarial set .npz")
    p.add_argument("--out", default=None, help="PNG path (default: beside the set, .png)")
    p.add_argument("--images", type=positive_int, default=10, help="how many images to draw")
    p.add_argument("--dataset", default=None, help="dataset of the clean images (default: the set's)")
    add_data_dir(p)
    add_trust(p)
    p.set_defaults(func=show_command)


def run_command(args: argparse.Namespace) -> int:
    from annt.experiments import prepare, run_study

    where = {"executor": args.executor, "workers": args.workers, "ray_address": args.ray_address}
    if args.check:
        from annt.experiments import count_kinds
        from annt.experiments.runner import _test_sets

        plan = prepare(args.spec, out=args.out, device=args.device, threads=args.threads, **where)
        _test_sets(plan, download=False)  # the data must be there, not only the spec valid
        cells = plan.cells(report=False if args.no_report else None)
        print(json.dumps({"spec": args.spec, "valid": True, "cells": plan.cell_count(),
                          "by_kind": count_kinds(cells), "executor": plan.spec.executor.kind,
                          "device": str(plan.device), "output": str(plan.out_dir), "study": plan.study_id}))
        return 0
    result = run_study(args.spec, out=args.out, device=args.device, threads=args.threads, progress=not args.quiet,
                       report=False if args.no_report else None, wait=args.wait, **where)
    print(json.dumps({
        "output": str(result.out_dir), "study": result.study_id, "database": str(result.database),
        "report": str(result.report) if result.report else None, "cells_computed": result.computed,
        "cells_reused": result.reused, "seconds": round(result.seconds, 1),
    }))
    return 0


def report_command(args: argparse.Namespace) -> int:
    from annt.report import write_report

    if not Path(args.outdir).is_dir():
        raise AnntError(f"{args.outdir} is not a directory")
    if args.out:
        output_dir(args.out, "--out")
    path = write_report(args.outdir, study=args.study, data_dir=args.data_dir,
                        grid_images=args.grid_images, report_dir=args.out)
    written = {"report": str(path)}
    if args.html:
        from annt.report.html import write_html

        written["html"] = str(write_html(path.parent))
    print(json.dumps(written))
    return 0


def _clean_for(adv, dataset: str | None, data_dir: str | None):
    """Clean images of a set when its dataset can be loaded, else None."""
    from annt.data import load_dataset
    from annt.metrics import match_clean

    if not dataset:
        return None
    return match_clean(adv, load_dataset(dataset, "test", data_dir))


def show_command(args: argparse.Namespace) -> int:
    from annt.report.images import adversarial_grid
    from annt.store.adversarial_set import load_adversarial_set

    adv = load_adversarial_set(args.set, trust_unverified=args.trust_unverified)
    out = output_file(args.out if args.out else Path(args.set).with_suffix(".png"), "--out", ".png")
    take = slice(0, min(args.images, len(adv)))
    clean = _clean_for(adv, args.dataset or adv.meta.get("dataset"), args.data_dir)
    title = " ".join(str(adv.meta[k]) for k in ("attack", "model", "bits") if adv.meta.get(k))
    adversarial_grid(
        adv.images[take].numpy(), out, clean=None if clean is None else clean[take].numpy(), title=title,
        captions=[f"y={int(y)}" for y in adv.labels[take]],
    )
    print(json.dumps({"image": str(out), "images": take.stop}))
    return 0


def _json_number(value: float | int) -> float | int | None:
    """Rounded, with NaN (no successful example) as null so the line stays valid JSON."""
    if isinstance(value, float):
        return None if value != value else round(value, 6)
    return value


def evaluate_adversarial_command(args: argparse.Namespace) -> int:
    """``annt evaluate --checkpoint C --adversarial SET.npz [--direct] [--max-samples N] [--out DIR]``.

    Without ``--direct`` the transfer protocol applies: only samples whose clean image the
    model classifies correctly count (at most ``--max-samples``, default 1000).
    """
    from annt.cli.common import fit_to_data, load_model_source, model_label
    from annt.metrics import evaluate_set
    from annt.store.adversarial_set import load_adversarial_set
    from annt.store.atomic import atomic_save_npz, atomic_write_json

    if getattr(args, "out", None):
        output_dir(args.out, "--out")
    adv = load_adversarial_set(args.adversarial, trust_unverified=args.trust_unverified)
    device = resolve_device(args.device)
    model = load_model_source(args, device)
    label = model_label(args)
    dataset = args.dataset or adv.meta.get("dataset") or getattr(model, "annt_meta", {}).get("dataset")
    if not dataset:
        raise AnntError("neither the set nor the checkpoint names a dataset; pass --dataset")
    from annt.data import dataset_info

    fit_to_data(model, adv.images, adv.labels, dataset_info(dataset).num_classes,
                f"adversarial set {args.adversarial}", label)
    clean = _clean_for(adv, dataset, args.data_dir)
    direct = bool(getattr(args, "direct", False))
    max_samples = getattr(args, "max_samples", None) or (None if direct else 1000)
    ev = evaluate_set(model, adv, clean, mode="direct" if direct else "transfer", max_samples=max_samples)
    summary = {"checkpoint": label, "adversarial": args.adversarial, "dataset": dataset,
               "mode": ev.mode, **{k: _json_number(v) for k, v in ev.summary.items()}}
    if getattr(args, "out", None):
        out = Path(args.out)
        atomic_save_npz(out / "records.npz", **ev.records.to_arrays())
        atomic_write_json(out / "summary.json", summary)
        summary["written"] = str(out)
    print(json.dumps(summary))
    return 0
