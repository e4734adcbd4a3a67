"""Arrays from users (adversarial sets, npz datasets): dtypes, shapes, ranges, finiteness."""

from __future__ import annotations

import numpy as np

from annt.errors import AnntError

MAX_CLASSES = 10_000
MAX_SIDE = 4096  # pixels per image side


def float_images(x: np.ndarray, where: str) -> np.ndarray:
    """Float images, finite and in [0,1], shaped ``[N,C,H,W]``/``[N,H,W,C]``/``[N,H,W]``, N >= 1."""
    if x.dtype == np.uint8:
        raise AnntError(f"{where}: images are uint8 0-255; store float32 in [0,1] (divide by 255)")
    if not np.issubdtype(x.dtype, np.floating):
        raise AnntError(f"{where}: images must be float32 in [0,1], got dtype {x.dtype}")
    image_shape(x, where)
    if not np.isfinite(x).all():
        raise AnntError(f"{where}: images contain NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise AnntError(f"{where}: image values must lie in [0,1], found {lo:g}..{hi:g}")
    return x


def image_shape(x: np.ndarray, where: str) -> None:
    """Non-empty 3-d or 4-d image stack of sane size."""
    if x.ndim not in (3, 4):
        raise AnntError(f"{where}: images must be [N,H,W] or [N,C,H,W] / [N,H,W,C], got shape {x.shape}")
    if x.shape[0] == 0 or 0 in x.shape:
        raise AnntError(f"{where}: holds no images (shape {x.shape})")
    if max(x.shape[1:]) > MAX_SIDE:
        raise AnntError(f"{where}: image shape {x.shape[1:]} exceeds {MAX_SIDE} pixels per side")


def int_labels(y: np.ndarray, n: int, where: str, name: str = "labels",
               max_value: int = MAX_CLASSES - 1) -> np.ndarray:
    """Integer vector of length ``n`` with values in ``0..max_value`` (as int64)."""
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise AnntError(f"{where}: {name} must be integers, got dtype {y.dtype}")
    if y.ndim != 1 or len(y) != n:
        raise AnntError(f"{where}: {name} must be a vector of {n} values, got shape {y.shape}")
    if n and (int(y.min()) < 0 or int(y.max()) > max_value):
        raise AnntError(f"{where}: {name} must lie in 0..{max_value}, found {int(y.min())}..{int(y.max())}")
    return y.astype(np.int64)


def bool_mask(v: np.ndarray, n: int, where: str, name: str) -> np.ndarray:
    """A boolean (or 0/1 integer) vector of length ``n``."""
    if v.ndim != 1 or len(v) != n:
        raise AnntError(f"{where}: {name} must be a vector of {n} values, got shape {v.shape}")
    if v.dtype != np.bool_ and (not np.issubdtype(v.dtype, np.integer) or (n and not np.isin(v, (0, 1)).all())):
        raise AnntError(f"{where}: {name} must be booleans, got dtype {v.dtype}")
    return v.astype(bool)


def dataset_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """Class labels of a user dataset: integers in 0..MAX_CLASSES-1 (bounded before any allocation)."""
    return int_labels(y, n, where, "y", MAX_CLASSES - 1)
