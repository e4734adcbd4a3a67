"""Checkpoints: ``model.safetensors`` + ``model.json`` sidecar; loading never unpickles.

The sidecar records how to rebuild the model (name, bitwidth, dataset geometry, classes),
what wrote it (``provenance``: versions, device, numeric settings, source revision), the
sha256 of the weights file and a seal: the sha256 of the whole sidecar (weights hash
included), so editing ``bits`` or ``geometry`` is caught like a damaged weights file. A
checkpoint without the seal (older ANNT, other tools) loads only when the caller says it
trusts it (``trust_unverified``, ``--trust-unverified`` on the command line).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from annt.errors import AnntError
from annt.inputs.files import GiB, read_json_object, regular_file
from annt.inputs.hashing import file_digest
from annt.provenance import FIELD as PROVENANCE
from annt.provenance import provenance
from annt.store.atomic import atomic_write_bytes, atomic_write_json
from annt.version import __version__

WEIGHTS = "model.safetensors"
SIDECAR = "model.json"
SEAL = "checkpoint_sha256"
MAX_WEIGHTS_BYTES = 4 * GiB
_HEX = set("0123456789abcdef")


def _resolve(path: str | Path) -> Path:
    """Accept the checkpoint folder, its weights file or its sidecar."""
    path = Path(path).expanduser()
    if path.name in (WEIGHTS, SIDECAR):
        path = path.parent
    if not path.is_dir():
        raise AnntError(f"checkpoint {path} does not exist")
    for name in (WEIGHTS, SIDECAR):
        if not (path / name).exists():
            raise AnntError(f"checkpoint {path} is incomplete: {name} is missing")
    return path


def seal_of(meta: dict[str, Any]) -> str:
    """sha256 of the sidecar without its seal (canonical JSON), covering the weights hash."""
    body = {k: v for k, v in meta.items() if k != SEAL}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def save_checkpoint(folder: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write weights then the sealed sidecar (sidecar last: a present sidecar means complete weights)."""
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(folder / WEIGHTS, save(state))
    sidecar = {k: v for k, v in meta.items() if k != SEAL}
    if "factory_sha256" not in sidecar and isinstance(sidecar.get("model"), str):
        from annt.models.sources import factory_fingerprint, is_factory_ref

        if is_factory_ref(sidecar["model"]):  # a file-path factory: record the file it was built from
            sidecar.update(factory_fingerprint(sidecar["model"]))
    sidecar["annt_version"] = __version__
    sidecar[PROVENANCE] = provenance(next((p.device for p in model.parameters()), None))
    sidecar["weights_sha256"] = file_digest(folder / WEIGHTS)
    sidecar[SEAL] = seal_of(sidecar)
    atomic_write_json(folder / SIDECAR, sidecar)
    return folder


def seal(path: str | Path) -> str:
    """(Re)seal an existing checkpoint in place: record its weights hash and the sidecar seal.

    For checkpoints written before seals existed (the zoo is re-sealed with
    ``python scripts/seal_zoo.py``). Returns the new seal.
    """
    folder = _resolve(path)
    meta = _parse(folder)
    meta["weights_sha256"] = file_digest(regular_file(folder / WEIGHTS, "checkpoint weights", MAX_WEIGHTS_BYTES))
    meta[SEAL] = seal_of(meta)
    _validate(meta, folder / SIDECAR)
    atomic_write_json(folder / SIDECAR, meta)
    return meta[SEAL]


def _parse(folder: Path) -> dict[str, Any]:
    return read_json_object(folder / SIDECAR, "checkpoint sidecar")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate(meta: dict[str, Any], side: Path) -> None:
    """Types and ranges of the fields that rebuild the model; one line naming the key."""
    from annt.quant.bits import parse_bits

    def bad(key: str, rule: str) -> AnntError:
        return AnntError(f"checkpoint sidecar {side}: {key} {rule} (got {meta.get(key, '<missing>')!r})"
                         if "." not in key else f"checkpoint sidecar {side}: {key} {rule}")

    if not isinstance(meta.get("model"), str) or not meta["model"]:
        raise bad("model", "must be a model name")
    bits = meta.get("bits")
    if isinstance(bits, bool) or not isinstance(bits, (str, int)):
        raise bad("bits", "must be a bitwidth such as '1,1,32'")
    try:
        parse_bits(bits)
    except AnntError as exc:
        raise AnntError(f"checkpoint sidecar {side}: bits: {exc}") from None
    geometry = meta.get("geometry")
    if not isinstance(geometry, dict):
        raise bad("geometry", "must be an object with channels, image_size, num_classes")
    for key, lo, hi in (("channels", 1, 16), ("image_size", 1, 4096), ("num_classes", 2, 10_000)):
        value = geometry.get(key)
        if not _is_int(value) or not lo <= value <= hi:
            raise bad(f"geometry.{key}", f"must be an integer in {lo}..{hi}, got {value!r}")
    if "dataset" in meta and not isinstance(meta["dataset"], str):
        raise bad("dataset", "must be a dataset name")
    if "classes" in meta and (not isinstance(meta["classes"], list)
                              or not all(isinstance(c, str) for c in meta["classes"])):
        raise bad("classes", "must be a list of class names")
    for key in ("epochs", "seed"):
        if key in meta and meta[key] is not None and (not _is_int(meta[key]) or meta[key] < 0):
            raise bad(key, "must be an integer >= 0")
    for key in ("validation_accuracy", "test_accuracy"):
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 <= value <= 1):
            raise bad(key, "must be a number in [0,1]")
    _validate_factory_fields(meta, side, bad)
    for key in ("weights_sha256", SEAL, "factory_sha256"):
        value = meta.get(key)
        if value is not None and (not isinstance(value, str) or len(value) != 64 or set(value) - _HEX):
            raise bad(key, "must be 64 lowercase hex digits")


def _validate_factory_fields(meta: dict[str, Any], side: Path, bad) -> None:
    """``model_args``, ``preprocess`` and ``keep_fp`` of a user model (all optional)."""
    import math

    if "model_args" in meta and not isinstance(meta["model_args"], dict):
        raise bad("model_args", "must be an object of keyword arguments")
    if "keep_fp" in meta and (not isinstance(meta["keep_fp"], list)
                              or not all(isinstance(k, str) for k in meta["keep_fp"])):
        raise bad("keep_fp", "must be a list of layer names")
    if "preprocess" not in meta:
        return
    pre = meta["preprocess"]
    if not isinstance(pre, dict) or set(pre) != {"mean", "std"}:
        raise bad("preprocess", "must be an object with mean and std lists")
    for key in ("mean", "std"):
        values = pre[key]
        if (not isinstance(values, list) or not values or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)):
            raise bad(f"preprocess.{key}", f"must be a list of finite numbers, got {values!r}")
    if any(v <= 0 for v in pre["std"]):
        raise bad("preprocess.std", f"must be > 0, got {pre['std']!r}")
    channels = meta["geometry"]["channels"]
    if len(pre["mean"]) != len(pre["std"]) or len(pre["mean"]) not in (1, channels):
        raise bad("preprocess", f"mean and std must have one value per channel ({channels}) or a single"
                                f" value, got {len(pre['mean'])} and {len(pre['std'])}")


def read_meta(path: str | Path) -> dict[str, Any]:
    """The sidecar, type-checked (its hashes are checked by ``verify_checkpoint``)."""
    folder = _resolve(path)
    meta = _parse(folder)
    _validate(meta, folder / SIDECAR)
    return meta


def verify_checkpoint(
    path: str | Path, *, trust_unverified: bool = False, expected_seal: str | None = None,
) -> dict[str, Any]:
    """The sidecar after checking the weights hash and the seal; raises one line otherwise.

    ``expected_seal`` (the zoo manifest's record) must also match. A checkpoint without a
    seal or weights hash is refused unless ``trust_unverified``.
    """
    folder = _resolve(path)
    meta = read_meta(folder)
    weights = regular_file(folder / WEIGHTS, "checkpoint weights", MAX_WEIGHTS_BYTES)
    recorded = meta.get("weights_sha256")
    if (recorded is None or SEAL not in meta) and not trust_unverified:
        missing = "weights_sha256" if recorded is None else SEAL
        raise AnntError(
            f"checkpoint {folder} is unverified: its sidecar has no {missing}; pass --trust-unverified"
            " (trust_unverified=True) if you trust its source, or re-seal it with annt.store.checkpoint.seal"
        )
    if recorded is not None:
        actual = file_digest(weights)
        if actual != recorded:
            raise AnntError(
                f"corrupt checkpoint {folder}: weights sha256 {actual[:12]}... does not match"
                f" the recorded {recorded[:12]}...; retrain or restore the file"
            )
    if SEAL in meta and seal_of(meta) != meta[SEAL]:
        raise AnntError(
            f"checkpoint {folder}: sidecar {SIDECAR} was changed after saving (its {SEAL} does not match"
            " its fields, e.g. model, bits, geometry or classes); restore the original file"
        )
    if expected_seal is not None and meta.get(SEAL) != expected_seal:
        raise AnntError(
            f"checkpoint {folder} does not match its manifest: seal {str(meta.get(SEAL))[:12]}... is not"
            f" the recorded {expected_seal[:12]}...; reinstall ANNT or restore the files"
        )
    return meta


def load_state(path: str | Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The weights tensors; ``expected_sha256`` (else the sidecar's) must match the file."""
    folder = _resolve(path)
    weights = regular_file(folder / WEIGHTS, "checkpoint weights", MAX_WEIGHTS_BYTES)
    expected = expected_sha256 or read_meta(folder).get("weights_sha256")
    actual = file_digest(weights)
    if expected and actual != expected:
        raise AnntError(
            f"corrupt checkpoint {folder}: weights sha256 {actual[:12]}... does not match"
            f" the recorded {expected[:12]}...; retrain or restore the file"
        )
    try:
        return load_file(weights)
    except (SafetensorError, OSError, ValueError) as exc:
        raise AnntError(f"corrupt checkpoint {folder}: {exc}") from None


def _check_factory(meta: dict[str, Any], trust_unverified: bool) -> None:
    """A file-path factory must be the file the checkpoint was written with (its sha256)."""
    from annt.models.sources import factory_fingerprint

    recorded = meta.get("factory_sha256")
    if recorded is None or trust_unverified:
        return
    current = factory_fingerprint(meta["model"]).get("factory_sha256")
    if current is not None and current != recorded:
        file = meta["model"].rpartition(":")[0]
        raise AnntError(f"factory file {file} changed since the checkpoint was written (sha256 {current[:12]}..."
                        f" is not the recorded {recorded[:12]}...); pass --trust-unverified to load anyway")


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", *,
    trust_unverified: bool = False, expected_seal: str | None = None,
) -> nn.Module:
    """One call from a verified checkpoint folder to a ready ``nn.Module`` in eval mode."""
    from annt.models import create_model

    meta = verify_checkpoint(path, trust_unverified=trust_unverified, expected_seal=expected_seal)
    geometry = meta["geometry"]
    _check_factory(meta, trust_unverified)
    try:
        model = create_model(
            meta["model"], meta["bits"], in_channels=geometry["channels"],
            num_classes=geometry["num_classes"], image_size=geometry["image_size"],
            model_args=meta.get("model_args"), keep_fp=meta.get("keep_fp"), preprocess=meta.get("preprocess"),
        )
    except (RuntimeError, ValueError) as exc:
        raise AnntError(f"checkpoint {path}: cannot build {meta['model']} with geometry {geometry}: {exc}") from None
    folder = _resolve(path)
    try:
        state = load_file(folder / WEIGHTS)
    except (SafetensorError, OSError, ValueError) as exc:
        raise AnntError(f"corrupt checkpoint {folder}: {exc}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "mismatch" in ln or "Missing" in ln]
        first = (lines or [ln for ln in str(exc).splitlines() if ln.strip()] or ["shape mismatch"])[0]
        raise AnntError(f"checkpoint {path} does not fit model {meta['model']}: {first}") from None
    model.annt_meta = meta  # type: ignore[attr-defined]
    return model.to(device).eval()
