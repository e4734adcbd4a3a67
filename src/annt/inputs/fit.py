"""Model vs data: the image geometry and label range a checkpoint expects."""

from __future__ import annotations

from typing import Any

import torch

from annt.errors import AnntError


def check_fits(meta: dict[str, Any], x: torch.Tensor, y: torch.Tensor | None, what: str, model: str) -> None:
    """Raise one line when images ``x`` [N,C,H,W] (labels ``y``) do not fit the model of ``meta``."""
    geometry = meta.get("geometry") or {}
    channels, size, classes = geometry.get("channels"), geometry.get("image_size"), geometry.get("num_classes")
    if x.dim() != 4:
        raise AnntError(f"{what}: images have shape {tuple(x.shape)}, expected [N,C,H,W]")
    got = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
    if channels is not None and size is not None and got != (channels, size, size):
        raise AnntError(
            f"{what} has {got[0]}x{got[1]}x{got[2]} images but {model} expects"
            f" {channels}x{size}x{size} (trained on {meta.get('dataset', '?')}); use data of that shape"
        )
    if y is not None and classes is not None and len(y) and int(y.max()) >= classes:
        raise AnntError(f"{what} has label {int(y.max())} but {model} has {classes} classes")
