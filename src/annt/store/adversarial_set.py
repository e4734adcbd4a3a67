"""Adversarial sets on disk: compressed npz (no pickle) + JSON sidecar.

Array names follow the original tool (``images``, ``labels``, ``image_index``) so its sets
and ours read the same way; costs and the success mask are extra members.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from annt.errors import AnntError
from annt.inputs.arrays import bool_mask, float_images, int_labels
from annt.inputs.files import MAX_NPZ_BYTES, read_json_object, read_npz, regular_file
from annt.inputs.hashing import file_digest
from annt.provenance import FIELD as PROVENANCE
from annt.provenance import provenance
from annt.store.atomic import atomic_save_npz, atomic_write_json
from annt.version import __version__

_REQUIRED = ("images", "labels", "image_index")
_OPTIONAL_INT = ("iterations", "forward_passes", "backward_passes", "targets")


@dataclass
class AdversarialSet:
    """Adversarial images with the test-split indices and true labels of their clean sources."""

    images: torch.Tensor  # float32 [N,C,H,W] in [0,1]
    labels: torch.Tensor  # int64 [N] true labels
    image_index: torch.Tensor  # int64 [N] index of the clean image in the test split
    success: torch.Tensor  # bool [N] success on the source model
    costs: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. universal noise
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def set_seal(meta: dict[str, Any]) -> str:
    """sha256 of the sidecar without its seal: covers the npz hash and every recorded field."""
    body = {k: v for k, v in meta.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def save_adversarial_set(path: str | Path, adv: AdversarialSet, *, device: str | torch.device | None = None) -> Path:
    """Write the npz, then the sealed sidecar (``provenance``: what crafted it on ``device``)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise AnntError(f"adversarial set path {path} must end in .npz")
    arrays: dict[str, np.ndarray] = {
        "images": adv.images.detach().cpu().float().numpy(),
        "labels": adv.labels.cpu().long().numpy(),
        "image_index": adv.image_index.cpu().long().numpy(),
        "success": adv.success.cpu().bool().numpy(),
    }
    for key, value in adv.costs.items():
        arrays[key] = value.cpu().numpy()
    for key, value in adv.extras.items():
        arrays[f"extra_{key}"] = value.detach().cpu().numpy()
    atomic_save_npz(path, **arrays)
    meta = {k: v for k, v in adv.meta.items() if k not in ("sha256", "npz_sha256")}
    meta.update(annt_version=__version__, count=len(adv), npz_sha256=file_digest(path))
    meta[PROVENANCE] = provenance(device)
    meta["sha256"] = set_seal(meta)
    atomic_write_json(sidecar_path(path), meta)
    return path


def _read_sidecar(path: Path, trust_unverified: bool) -> dict[str, Any]:
    """The set's verified sidecar; a set without one (the original tool's) needs ``trust_unverified``."""
    side = sidecar_path(path)
    if not side.exists():
        if trust_unverified:
            return {}
        raise AnntError(f"adversarial set {path} is unverified: no sidecar {side.name} with its sha256;"
                        " pass --trust-unverified if you trust its source")
    meta = read_json_object(side, "adversarial set sidecar")
    if "npz_sha256" not in meta or "sha256" not in meta:
        if trust_unverified:
            return meta
        raise AnntError(f"adversarial set {path} is unverified: its sidecar records no sha256;"
                        " pass --trust-unverified if you trust its source")
    if meta["sha256"] != set_seal(meta):
        raise AnntError(f"adversarial set sidecar {side} was changed after saving (its sha256 does not match"
                        " its fields); restore the original file")
    if file_digest(path) != meta["npz_sha256"]:
        raise AnntError(f"corrupt adversarial set {path}: its sha256 does not match the one in {side.name};"
                        " re-create the set or restore the file")
    return meta


def load_adversarial_set(path: str | Path, *, trust_unverified: bool = False) -> AdversarialSet:
    """Load and validate a set (ours or the original tool's); never unpickles.

    Ours carry a sidecar with the npz's sha256 and a seal over the sidecar, both checked;
    the contents are checked too (float images in [0,1], integer labels, matching lengths).
    """
    path = Path(path).expanduser()
    where = f"adversarial set {path}"
    regular_file(path, "adversarial set", MAX_NPZ_BYTES)
    meta = _read_sidecar(path, trust_unverified)
    arrays = read_npz(path, "adversarial set")
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        raise AnntError(f"{where} lacks arrays {missing}")
    raw = float_images(arrays["images"], where)
    n = len(raw)
    images = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
    if images.dim() == 3:
        images = images[:, None]
    if images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.permute(0, 3, 1, 2).contiguous()  # original tool stored NHWC
    labels_raw = arrays["labels"]
    if labels_raw.ndim == 2 and labels_raw.shape[0] == n and labels_raw.shape[1] >= 2:  # one-hot labels
        if not np.isin(labels_raw, (0, 1)).all() or not (labels_raw.sum(1) == 1).all():
            raise AnntError(f"{where}: 2-d labels must be one-hot rows")
        labels_raw = labels_raw.argmax(1)
    labels = torch.from_numpy(int_labels(labels_raw, n, where, "labels"))
    index = torch.from_numpy(int_labels(arrays["image_index"], n, where, "image_index", 2**62))
    if "success" in arrays:
        success = torch.from_numpy(bool_mask(arrays["success"], n, where, "success"))
    else:
        success = torch.zeros(n, dtype=torch.bool)
    costs = {}
    for k in _OPTIONAL_INT:
        if k in arrays:
            v = arrays[k]
            if v.shape != (n,) or not np.issubdtype(v.dtype, np.integer):
                raise AnntError(f"{where}: {k} must be {n} integers, got {v.dtype} {v.shape}")
            costs[k] = torch.from_numpy(v.astype(np.int64))
    extras = {k[6:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("extra_")}
    if meta.get("count") is not None and meta["count"] != n:
        raise AnntError(f"{where}: sidecar says {meta['count']!r} images, the file holds {n}")
    return AdversarialSet(images, labels, index, success, costs, extras, meta)


def load_recorded_set(path: str | Path, sha256: str | None) -> AdversarialSet:
    """A set a study wrote, checked against the sha256 its results database recorded.

    That record is the proof, so sets written before sidecars carried hashes still load; a
    sidecar seal, when present, is checked as well.
    """
    path = Path(path)
    regular_file(path, "adversarial set", MAX_NPZ_BYTES)
    if not sha256 or file_digest(path) != sha256:
        raise AnntError(f"corrupt adversarial set {path}: its sha256 does not match the one recorded in the"
                        " results database; re-run the study to recompute it")
    return load_adversarial_set(path, trust_unverified=True)
