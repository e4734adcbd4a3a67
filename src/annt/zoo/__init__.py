"""Bundled trained models, loadable by name (``mnist_a@1bit``) and verified on load.

``manifest.json`` records each entry's weights sha256 and checkpoint seal; loading checks
the folder against both, so neither the weights nor the sidecar can change unnoticed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from annt.errors import AnntError
from annt.inputs.hashing import file_digest
from annt.models.sources import (
    ACCEPTED_FORMS,
    FULL_BITS,
    build_factory,
    check_logits,
    check_model_args,
    factory_fingerprint,
    is_factory_ref,
    load_state_into,
    load_torchscript,
    load_weights_file,
    wrap,
)
from annt.quant.bits import BitSpec
from annt.store.checkpoint import SIDECAR, WEIGHTS, load_checkpoint

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
    """Any model spec -> ``nn.Module`` in eval mode: a checkpoint folder or ``zoo:NAME`` (hash-
    verified), a model factory (``package.module:function``, ``file.py:function``), an ``.onnx``
    or a TorchScript file (see :func:`load_model_ref`)."""
    return load_model_ref(spec, device=device, trust_unverified=trust_unverified)


def _check_classes(model: nn.Module, num_classes: int | None, spec: str) -> None:
    if num_classes is None:
        return
    meta = getattr(model, "annt_meta", None) or {}
    have = (meta.get("geometry") or {}).get("num_classes") if isinstance(meta, dict) else None
    if have is None:
        inner = getattr(model, "net", model)
        have = getattr(inner, "num_outputs", None)
    if have is not None and have != num_classes:
        raise AnntError(f"model {spec} outputs {have} logits but the dataset has {num_classes} classes")


def load_model_ref(
    spec: str | Path,
    *,
    args: dict[str, Any] | None = None,
    weights: str | Path | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    trust_unverified: bool = False,
    sample: torch.Tensor | None = None,
) -> nn.Module:
    """Any accepted model spec -> ``nn.Module`` in eval mode on ``device``.

    ``zoo:NAME`` or a checkpoint folder (verified), a factory ``package.module:function`` or
    ``path/to/file.py:function`` (``args`` as keyword arguments, ``weights`` loaded into it,
    ``mean``/``std`` the input normalisation), an ``.onnx`` file or a TorchScript file.
    ``num_classes`` is checked where the model's output width is known without data (checkpoints,
    ONNX with a static output) and, with ``sample`` images, on a forward pass.
    """
    text = str(spec)
    path = Path(text).expanduser()
    factory = is_factory_ref(text) and not path.exists()
    if not factory and (args or weights is not None):
        given = "model args" if args else "weights"
        raise AnntError(f"{given} apply only to a model factory (--model-factory package.module:function"
                        f" or file.py:function), not to {text}")
    checkpoint_file = path.name in (WEIGHTS, SIDECAR) and (path.parent / SIDECAR).exists()
    if text.startswith("zoo:") or path.is_dir() or checkpoint_file:
        if mean is not None or std is not None:
            raise AnntError(f"mean/std apply only to a model factory, TorchScript or ONNX file; {text} is an"
                            " ANNT checkpoint, which records its own input normalisation")
        if text.startswith("zoo:"):
            model = load_zoo_model(text[4:], device=device)
        else:
            model = load_checkpoint(path, device=device, trust_unverified=trust_unverified)
        _check_classes(model, num_classes, text)
    elif factory:
        model = build_factory(text, args)
        meta: dict[str, Any] = {"model": text, "model_args": check_model_args(args, text), "bits": FULL_BITS}
        meta.update(factory_fingerprint(text))
        if weights is not None:
            state = load_weights_file(weights)
            load_state_into(model, state, f"weights file {weights}")
            meta["weights"] = {"file": str(weights), "sha256": file_digest(weights)}
        model.annt_meta = meta  # type: ignore[assignment]
        model = wrap(model, mean, std)
        model.annt_name = text  # type: ignore[assignment]
        model.annt_bits = BitSpec()  # type: ignore[assignment]
    elif path.is_file() or path.suffix.lower() == ".onnx":
        if path.suffix.lower() == ".onnx":
            from annt.deploy.runtime import load_deployed  # checks an export sidecar when present

            model = load_deployed(path)
        elif path.suffix.lower() == ".py":
            raise AnntError(f"{text} is a Python file: name the function that builds the model,"
                            f" {text}:FUNCTION")
        else:
            model = load_torchscript(path)
        _check_classes(model, num_classes, text)
        model = wrap(model, mean, std)
    else:
        raise AnntError(f"model {text} does not exist: give {ACCEPTED_FORMS}")
    model = model.to(device).eval()
    if sample is not None:
        check_logits(model, sample[:2], num_classes, f"model {text}")
    return model


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
