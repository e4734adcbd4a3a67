"""Bundled trained models, loadable by name (``mnist_a@1bit``) and verified on load.

``manifest.json`` records each entry's weights sha256 and checkpoint seal; loading checks
the folder against both, so neither the weights nor the sidecar can change unnoticed.
"""

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


def zoo_folder(name: str) -> Path:
    """The installed folder of ``zoo:NAME``."""
    return Path(str(resources.files("annt.zoo") / zoo_entry(name)["path"]))


def verify_zoo_checkpoint(name: str) -> dict[str, Any]:
    """The verified sidecar of ``zoo:NAME``: weights and seal must match the manifest."""
    from annt.store.checkpoint import verify_checkpoint

    entry = zoo_entry(name)
    meta = verify_checkpoint(zoo_folder(name), expected_seal=entry.get("checkpoint_sha256", ""))
    if meta["weights_sha256"] != entry["sha256"]:  # the file matched its sidecar's hash just now
        raise AnntError(f"zoo:{name} does not match its manifest: weights sha256"
                        f" {meta['weights_sha256'][:12]}... is not {entry['sha256'][:12]}...")
    return meta


def load_zoo_model(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """Load ``zoo:NAME``; weights and sidecar must match the manifest, not only each other."""
    from annt.store.checkpoint import load_checkpoint

    verify_zoo_checkpoint(name)
    model = load_checkpoint(zoo_folder(name), device=device, expected_seal=zoo_entry(name)["checkpoint_sha256"])
    model.annt_meta["zoo"] = name  # type: ignore[index]
    return model


def load_model(spec: str | Path, device: str | torch.device = "cpu", *, trust_unverified: bool = False) -> nn.Module:
    """A checkpoint folder or ``zoo:NAME`` -> ``nn.Module`` in eval mode (hash-verified)."""
    from annt.store.checkpoint import load_checkpoint

    if str(spec).startswith("zoo:"):
        return load_zoo_model(str(spec)[4:], device=device)
    return load_checkpoint(spec, device=device, trust_unverified=trust_unverified)


def seal_zoo(zoo_dir: str | Path) -> list[dict[str, Any]]:
    """Re-seal every manifest entry under ``zoo_dir`` and record weights hash and seal in the manifest.

    One call after adding or retraining zoo entries (``python scripts/seal_zoo.py``).
    """
    from annt.store.atomic import atomic_write_json
    from annt.store.checkpoint import read_meta, seal

    zoo_dir = Path(zoo_dir)
    manifest = json.loads((zoo_dir / MANIFEST).read_text())
    for entry in manifest["models"]:
        folder = zoo_dir / entry["path"]
        entry["checkpoint_sha256"] = seal(folder)
        entry["sha256"] = read_meta(folder)["weights_sha256"]
    atomic_write_json(zoo_dir / MANIFEST, manifest)
    return manifest["models"]
