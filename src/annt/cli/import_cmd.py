"""``annt import``: a user's own network and weights -> a sealed ANNT checkpoint.

The checkpoint records how to rebuild the model (factory reference, its arguments, the
normalisation inside, the factory file's sha256), so ``annt.load``, studies (``checkpoints:``),
``--init-from`` and ``--teacher`` take it like any checkpoint ANNT trained itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from annt.cli.common import (
    add_data_dir,
    add_device,
    add_model_source,
    fit_to_data,
    load_model_source,
    resolve_device,
)
from annt.errors import AnntError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import", help="save your own network (factory + weights) as a sealed ANNT checkpoint",
    )
    add_model_source(p, flag_help="your own network", checkpoint=False)
    p.add_argument("--dataset", required=True, help="dataset the model was trained for (geometry, classes, accuracy)")
    p.add_argument("--out", required=True, help="checkpoint folder to write (model.safetensors + model.json)")
    add_data_dir(p)
    add_device(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from annt.data import dataset_info, load_dataset
    from annt.inputs.files import output_dir
    from annt.models.inference import accuracy
    from annt.models.sources import factory_fingerprint
    from annt.quant.bits import parse_bits
    from annt.store.checkpoint import save_checkpoint

    out = Path(args.out)
    if (out / "model.json").exists():
        raise AnntError(f"--out {out} already holds a checkpoint; choose another folder or remove it")
    device = resolve_device(args.device)
    model = load_model_source(args, device)
    info = dataset_info(args.dataset)
    test = load_dataset(args.dataset, "test", args.data_dir)
    fit_to_data(model, test.x, test.y, len(test.classes), f"dataset {info.name}", args.model_factory)
    test_accuracy = accuracy(model, test.x, test.y)
    output_dir(args.out, "--out")
    fp = parse_bits("fp")
    loaded = dict(getattr(model, "annt_meta", {}) or {})
    meta = {
        "model": args.model_factory, "model_args": loaded.get("model_args", {}), "bits": str(fp),
        "bits_tag": fp.tag, "dataset": info.name,
        "geometry": {"channels": int(test.x.shape[1]), "image_size": int(test.x.shape[2]),
                     "num_classes": len(test.classes)},
        "classes": list(test.classes), "test_accuracy": test_accuracy,
        **({"preprocess": loaded["preprocess"]} if loaded.get("preprocess") else {}),
        **({"imported_weights": loaded["weights"]} if loaded.get("weights") else {}),
        **factory_fingerprint(args.model_factory),
    }
    save_checkpoint(out, model.cpu(), meta)
    print(json.dumps({"checkpoint": str(out), "model": args.model_factory, "dataset": info.name,
                      "test_accuracy": round(test_accuracy, 4)}))
    return 0
