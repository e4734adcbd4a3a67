"""``annt export``: a model as the ONNX file that ships (fp32, int8 PTQ or DoReFa's integer graph)."""

from __future__ import annotations

import argparse
import json
import sys

from annt.cli.common import (
    add_data_dir,
    add_model_source,
    add_trust,
    fit_to_data,
    load_model_source,
    model_label,
    positive_int,
)
from annt.errors import AnntError


def register(sub: argparse._SubParsersAction) -> None:
    from annt.deploy.export import FORMATS, INT8_FORMATS

    p = sub.add_parser("export", help="export a model to ONNX (fp32, int8, dorefa) with a sealed sidecar")
    p.add_argument("model", nargs="?", default=None,
                   help="checkpoint folder, zoo:NAME, TorchScript or ONNX file (or use --model-factory)")
    add_model_source(p)
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="fp32: the float graph; int8: ONNX Runtime static quantization; dorefa: a DoReFa"
                        " model on its own integer grid")
    p.add_argument("--out", required=True, metavar="FILE.onnx", help="the ONNX file (its sidecar: FILE.json)")
    p.add_argument("--int8-format", choices=INT8_FORMATS, default="qdq",
                   help="int8 graph layout: qdq (Quantize/Dequantize pairs, default) or qoperator")
    p.add_argument("--calibration-images", type=positive_int, default=1000, metavar="N",
                   help="training images that calibrate int8 and check every export (default 1000)")
    p.add_argument("--dataset", default=None, help="dataset of those images (default: the model's)")
    add_data_dir(p)
    add_trust(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from annt.data import load_dataset
    from annt.deploy.export import export_model
    from annt.deploy.runtime import require_onnx
    from annt.deploy.sidecar import check_sidecar_target
    from annt.inputs.files import output_file

    require_onnx()
    if args.model and args.checkpoint:
        raise AnntError("name the model once: as the MODEL argument or with --checkpoint")
    args.checkpoint = args.checkpoint or args.model
    out = output_file(args.out, "--out", ".onnx")
    check_sidecar_target(out)
    model = load_model_source(args, torch.device("cpu"))
    label = model_label(args)
    dataset = args.dataset or (getattr(model, "annt_meta", None) or {}).get("dataset")
    if not dataset:
        raise AnntError(f"{label} names no dataset; pass --dataset for the calibration images")
    images = load_dataset(dataset, "train", args.data_dir)
    x, y = images.x[: args.calibration_images], images.y[: args.calibration_images]
    fit_to_data(model, x, y, len(images.classes), f"dataset {dataset}", label)
    meta = export_model(model, out, args.format, x, label=label, int8_format=args.int8_format)
    if args.format != "fp32" and meta["float_compute_operators"]:
        ops = ", ".join(f"{k} x{v}" for k, v in meta["float_compute_operators"].items())
        why = " (the layers DoReFa keeps at full precision)" if args.format == "dorefa" else ""
        print(f"annt: note: ONNX Runtime runs float {ops}{why}", file=sys.stderr)
    summary = {
        "out": str(out), "format": args.format, "source": label,
        "integer_operators": meta["integer_operators"], "float_compute_operators": meta["float_compute_operators"],
        "check": meta["check"],
    }
    print(json.dumps(summary))
    return 0
