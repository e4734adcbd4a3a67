"""Bundled trained models, loadable by name (``mnist_a@1bit``) and verified by sha256 on load."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from annt.errors import AnntError

MANIFEST = "manifest.json"


def list_zoo() -> list[dict[str, Any]]:
    ref = resources.files("annt.zoo") / MANIFEST
    if not ref.is_file():
        return []
    return json.loads(ref.read_text())["models"]


def zoo_entry(name: str) -> dict[str, Any]:
    entries = {e["name"]: e for e in list_zoo()}
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none bundled"
        raise AnntError(f"unknown zoo model {name!r}: choose one of {known}")
    return entries[name]


def load_zoo_model(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """Load ``zoo:NAME``; the weights' sha256 must match the manifest, not only the sidecar."""
    from annt.store.checkpoint import load_checkpoint, load_state

    entry = zoo_entry(name)
    ref = resources.files("annt.zoo") / entry["path"]
    with resources.as_file(ref) as folder:
        load_state(folder, expected_sha256=entry["sha256"])  # raises on mismatch
        model = load_checkpoint(folder, device=device)
    model.annt_meta["zoo"] = name  # type: ignore[index]
    return model


def load_model(spec: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A checkpoint folder or ``zoo:NAME`` -> ``nn.Module`` in eval mode (hash-verified)."""
    from annt.store.checkpoint import load_checkpoint

    if str(spec).startswith("zoo:"):
        return load_zoo_model(str(spec)[4:], device=device)
    return load_checkpoint(spec, device=device)
