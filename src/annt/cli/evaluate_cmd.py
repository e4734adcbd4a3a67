"""``annt evaluate``: clean accuracy of a checkpoint on a split (or, with --adversarial, robustness)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from annt.cli.common import (
    add_data_dir,
    add_device,
    add_model_source,
    add_trust,
    fit_to_data,
    load_model_source,
    model_label,
    positive_int,
    resolve_device,
)
from annt.data import SPLITS, load_dataset
from annt.device import exact_float32
from annt.errors import AnntError
from annt.inputs.files import output_dir
from annt.store.atomic import atomic_save_npz, atomic_write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy of a checkpoint; --adversarial applies a saved set")
    add_model_source(p)
    p.add_argument("--dataset", default=None, help="dataset (default: the checkpoint's)")
    p.add_argument("--split", choices=SPLITS, default="test")
    p.add_argument("--out", default=None, help="folder for correct/incorrect index files and summary")
    p.add_argument("--adversarial", default=None, help="adversarial set (.npz) to apply to this model")
    p.add_argument("--direct", action="store_true", help="the set was crafted on this same model")
    p.add_argument("--max-samples", type=positive_int, default=None)
    add_data_dir(p)
    add_device(p)
    add_trust(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.adversarial:
        from annt.cli.study_cmd import evaluate_adversarial_command

        return evaluate_adversarial_command(args)
    from annt.models.inference import predict_labels

    if args.out:
        output_dir(args.out, "--out")
    device = resolve_device(args.device)
    exact_float32(device)  # attacks end on the decision boundary: no TF32 (see annt.device)
    model = load_model_source(args, device)
    label = model_label(args)
    dataset = args.dataset or model.annt_meta.get("dataset")
    if not dataset:
        raise AnntError(f"{label} names no dataset; pass --dataset")
    images = load_dataset(dataset, args.split, args.data_dir)
    fit_to_data(model, images.x, images.y, len(images.classes), f"dataset {dataset}", label)
    pred = predict_labels(model, images.x)
    correct = pred == images.y
    summary = {
        "checkpoint": label, "dataset": dataset, "split": args.split,
        "samples": len(images), "accuracy": round(correct.float().mean().item(), 6),
    }
    if args.out:
        out = Path(args.out)
        idx = images.index.numpy()
        atomic_save_npz(
            out / "classified.npz",
            correct_index=idx[correct.numpy()], incorrect_index=idx[~correct.numpy()],
            predictions=pred.numpy().astype(np.int64), labels=images.y.numpy(),
        )
        atomic_write_json(out / "summary.json", summary)
        summary["written"] = str(out / "classified.npz")
    print(json.dumps(summary))
    return 0
