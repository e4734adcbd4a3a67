"""Adversarial sets on disk: compressed npz (no pickle) + JSON sidecar.

Array names follow the original tool (``images``, ``labels``, ``image_index``) so its sets
and ours read the same way; costs and the success mask are extra members.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from annt.errors import AnntError
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


def save_adversarial_set(path: str | Path, adv: AdversarialSet) -> Path:
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
    meta = {**adv.meta, "annt_version": __version__, "count": len(adv)}
    atomic_save_npz(path, **arrays)
    atomic_write_json(sidecar_path(path), meta)
    return path


def load_adversarial_set(path: str | Path) -> AdversarialSet:
    """Load a set (ours or the original tool's); never unpickles."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise AnntError(f"adversarial set {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise AnntError(f"corrupt adversarial set {path}: {exc}") from None
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        raise AnntError(f"adversarial set {path} lacks arrays {missing}")
    images = torch.from_numpy(arrays["images"]).float()
    n = len(images)
    if images.dim() == 3:
        images = images[:, None]
    if images.dim() == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.permute(0, 3, 1, 2).contiguous()  # original tool stored NHWC
    labels = torch.from_numpy(arrays["labels"]).long()
    if labels.dim() == 2:  # one-hot labels
        labels = labels.argmax(1)
    index = torch.from_numpy(arrays["image_index"]).long()
    if len(labels) != n or len(index) != n:
        raise AnntError(f"adversarial set {path}: images, labels and image_index lengths differ")
    success = torch.from_numpy(arrays["success"]).bool() if "success" in arrays else torch.zeros(n, dtype=torch.bool)
    costs = {k: torch.from_numpy(arrays[k]) for k in _OPTIONAL_INT if k in arrays}
    extras = {k[6:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("extra_")}
    meta: dict[str, Any] = {}
    side = sidecar_path(path)
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError as exc:
            raise AnntError(f"corrupt sidecar {side}: {exc}") from None
    return AdversarialSet(images, labels, index, success, costs, extras, meta)
