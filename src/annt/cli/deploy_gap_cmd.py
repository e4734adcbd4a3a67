"""``annt deploy-gap``: inputs near test images on which a model and its deployed ONNX file disagree."""

from __future__ import annotations

import argparse
import json
import sys

from annt.cli.common import (
    add_data_dir,
    add_device,
    add_model_source,
    add_trust,
    fit_to_data,
    float_list,
    load_model_source,
    model_label,
    positive_int,
    resolve_device,
)
from annt.errors import AnntError
from annt.inputs.numbers import seed_arg


def eps_list(text: str) -> list[float]:
    """argparse type for ``--eps 0.05,0.1``: budgets in (0, 1]."""
    values = float_list(text)
    if any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"eps values must be in (0, 1], got {text!r}")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy-gap", help="search Linf balls around test images for inputs the PyTorch model"
                       " and its deployed ONNX file classify differently (one right, one wrong)")
    add_model_source(p, flag_help="the PyTorch model (its gradients guide the search)")
    p.add_argument("--deployed", required=True, metavar="FILE.onnx",
                   help="the deployed model (annt export; its sidecar is checked)")
    p.add_argument("--eps", type=eps_list, required=True, metavar="E[,E...]", help="Linf budgets, e.g. 0.05,0.1")
    p.add_argument("--n-images", type=positive_int, default=200, help="the first N test images (default 200)")
    p.add_argument("--dataset", default=None, help="dataset (default: the model's)")
    p.add_argument("--steps", type=positive_int, default=50, help="gradient steps per restart (default 50)")
    p.add_argument("--restarts", type=positive_int, default=5,
                   help="restarts (default 5): the clean image, then random points of the ball")
    p.add_argument("--batch-size", type=positive_int, default=200)
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--allow-other-source", action="store_true",
                   help="compare with a deployed file exported from another model")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for gap.json and gap.npz")
    add_data_dir(p)
    add_device(p)
    add_trust(p)
    p.set_defaults(func=run)


def _same_source(model_meta: dict, deployed_meta: dict, allow: bool, label: str, path: str) -> None:
    """The deployed file's sidecar must name the model's weights (unless ``allow``)."""
    source = (deployed_meta.get("deployment") or {}).get("source") or {}
    for key in ("weights_sha256", "checkpoint_sha256", "source_sha256", "factory_sha256"):
        mine, theirs = model_meta.get(key), source.get(key)
        if mine and theirs and mine != theirs and not allow:
            raise AnntError(f"{path} was exported from {source.get('reference') or 'another model'}, not {label}"
                            f" ({key} differs); pass --allow-other-source to compare them anyway")


def run(args: argparse.Namespace) -> int:

    from annt.data import load_dataset
    from annt.deploy.gap import DIRECTIONS, gap_search, save_gap
    from annt.deploy.runtime import load_deployed, require_onnx
    from annt.device import exact_float32
    from annt.inputs.files import output_dir
    from annt.inputs.hashing import file_digest

    require_onnx()
    out = output_dir(args.out, "--out")
    device = resolve_device(args.device)
    exact_float32(device)
    model = load_model_source(args, device)
    label = model_label(args)
    deployed = load_deployed(args.deployed)
    meta = getattr(model, "annt_meta", None) or {}
    dmeta = deployed.annt_meta
    _same_source(meta, dmeta, args.allow_other_source, label, args.deployed)
    dataset = args.dataset or meta.get("dataset") or dmeta.get("dataset")
    if not dataset:
        raise AnntError(f"{label} names no dataset; pass --dataset")
    test = load_dataset(dataset, "test", args.data_dir)
    n = min(args.n_images, len(test))
    x, y = test.x[:n], test.y[:n]
    fit_to_data(model, x, y, len(test.classes), f"dataset {dataset}", label)
    fit_to_data(deployed, x, y, len(test.classes), f"dataset {dataset}", args.deployed)
    print(f"annt: deploy-gap {label} vs {args.deployed}: {n} images, eps {','.join(f'{e:g}' for e in args.eps)}",
          file=sys.stderr)
    result = gap_search(model, deployed, x, y, args.eps, steps=args.steps, restarts=args.restarts,
                        seed=args.seed, batch_size=args.batch_size)
    deployment = dmeta.get("deployment") or {}
    info = {
        "model": label, "model_sha256": meta.get("weights_sha256") or meta.get("source_sha256"),
        "deployed": str(args.deployed), "deployed_sha256": file_digest(args.deployed),
        "deployed_format": deployment.get("format"), "dataset": dataset, "split": "test",
        "image_index": f"the first {n}", "seed": args.seed, "steps": args.steps, "restarts": args.restarts,
        "directions": {"deployed_wrong": "PyTorch correct, deployed wrong",
                       "deployed_right": "PyTorch wrong, deployed correct"},
    }
    npz, js = save_gap(out, result, y, test.index[:n], info, device)
    c = result.clean
    print(f"clean: PyTorch correct {c['pytorch_correct']}/{n}, deployed correct {c['deployed_correct']}/{n},"
          f" gaps at eps 0: {c['deployed_wrong']} + {c['deployed_right']}")
    print(f"{'eps':>6s} {'images':>6s} {'reached':>7s} {'deployed_wrong':>14s} {'deployed_right':>14s}"
          f" {'either':>6s} {'ties':>5s}")
    for row in result.summary():
        ties = sum(row[f"{d}_ties"] for d in DIRECTIONS)
        print(f"{row['eps']:6g} {row['images']:6d} {row['boundary_reached']:7d} {row['deployed_wrong']:14d}"
              f" {row['deployed_right']:14d} {row['either']:6d} {ties:5d}")
    print("reached: images whose PyTorch decision boundary the search reached; ties: gap inputs on which the"
          " PyTorch margin is below 1e-4 (float rounding)", file=sys.stderr)
    print(json.dumps({"out": str(js), "inputs": str(npz)}))
    return 0
