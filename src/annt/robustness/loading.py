"""The model and the test split a robustness command works on, checked to fit each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from annt.errors import AnntError


def model_and_test(checkpoint: str | Path | nn.Module, dataset: str | None, data_dir: str | Path | None,
                   device: str | torch.device, what: str) -> tuple[nn.Module, dict[str, Any], Any, str, torch.device]:
    """(model, its meta, the test split, the model's name, its device); ``dataset`` defaults to
    the model's. One line, naming ``what`` (the command), when the two do not fit."""
    from annt.data import load_dataset
    from annt.inputs.fit import check_fits
    from annt.models.sources import check_logits
    from annt.zoo import load_model

    model = checkpoint if isinstance(checkpoint, nn.Module) else load_model(checkpoint, device=device)
    meta = dict(getattr(model, "annt_meta", {}) or {})
    dataset = dataset or meta.get("dataset")
    if not dataset:
        raise AnntError(f"{what}: the model names no dataset; pass dataset (--dataset)")
    name = str(checkpoint) if not isinstance(checkpoint, nn.Module) else str(meta.get("zoo", "model"))
    test = load_dataset(dataset, "test", data_dir)
    params = list(model.parameters())
    dev = params[0].device if params else torch.device(device)
    check_fits(meta, test.x, test.y, f"dataset {dataset}", name)
    check_logits(model, test.x[:2].to(dev), len(test.classes), name)
    meta["dataset"] = str(dataset)
    return model, meta, test, name, dev
