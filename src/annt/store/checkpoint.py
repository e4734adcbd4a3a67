"""Checkpoints: ``model.safetensors`` + ``model.json`` sidecar; loading never unpickles.

The sidecar records how to rebuild the model (name, bitwidth, dataset geometry) and the
sha256 of the weights file, which is verified on every load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from annt.errors import AnntError
from annt.store.atomic import atomic_write_bytes, atomic_write_json
from annt.store.hashing import file_digest
from annt.version import __version__

WEIGHTS = "model.safetensors"
SIDECAR = "model.json"


def _resolve(path: str | Path) -> Path:
    """Accept the checkpoint folder, its weights file or its sidecar."""
    path = Path(path).expanduser()
    if path.name in (WEIGHTS, SIDECAR):
        path = path.parent
    if not path.is_dir():
        raise AnntError(f"checkpoint {path} does not exist")
    for name in (WEIGHTS, SIDECAR):
        if not (path / name).is_file():
            raise AnntError(f"checkpoint {path} is incomplete: {name} is missing")
    return path


def save_checkpoint(folder: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write weights then sidecar (sidecar last, so a present sidecar means complete weights)."""
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(folder / WEIGHTS, save(state))
    sidecar = dict(meta)
    sidecar["annt_version"] = __version__
    sidecar["weights_sha256"] = file_digest(folder / WEIGHTS)
    atomic_write_json(folder / SIDECAR, sidecar)
    return folder


def read_meta(path: str | Path) -> dict[str, Any]:
    folder = _resolve(path)
    try:
        return json.loads((folder / SIDECAR).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnntError(f"corrupt checkpoint sidecar {folder / SIDECAR}: {exc}") from None


def load_state(path: str | Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    folder = _resolve(path)
    meta = read_meta(folder)
    expected = expected_sha256 or meta.get("weights_sha256")
    actual = file_digest(folder / WEIGHTS)
    if expected and actual != expected:
        raise AnntError(
            f"corrupt checkpoint {folder}: weights sha256 {actual[:12]}... does not match"
            f" the recorded {expected[:12]}...; retrain or restore the file"
        )
    try:
        return load_file(folder / WEIGHTS)
    except (SafetensorError, OSError, ValueError) as exc:
        raise AnntError(f"corrupt checkpoint {folder}: {exc}") from None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """One call from a checkpoint folder to a ready ``nn.Module`` in eval mode."""

    from annt.models import create_model

    meta = read_meta(path)
    try:
        geometry = meta["geometry"]
        model = create_model(
            meta["model"],
            meta["bits"],
            in_channels=geometry["channels"],
            num_classes=geometry["num_classes"],
            image_size=geometry["image_size"],
        )
    except KeyError as exc:
        raise AnntError(f"corrupt checkpoint sidecar {path}: missing key {exc}") from None
    state = load_state(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "shape mismatch"
        raise AnntError(f"checkpoint {path} does not fit model {meta['model']}: {first}") from None
    model.annt_meta = meta  # type: ignore[attr-defined]

    return model.to(device).eval()
