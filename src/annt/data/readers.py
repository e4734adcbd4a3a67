"""Readers for on-disk formats: IDX gz (MNIST), CIFAR pickles, npz arrays, image folders.

Each returns ``(images uint8 or float NHWC, labels int64)``; conversion to [0,1] NCHW
tensors happens once in ``annt.data.datasets``.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from annt.errors import AnntError

_IDX_DTYPES = {0x08: np.uint8}


def read_idx_gz(path: Path) -> np.ndarray:
    """Read a gzip'd IDX file (magic: 0, 0, dtype, ndim; big-endian dims)."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise AnntError(f"corrupt IDX file {path}: {exc}; delete it and download again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise AnntError(f"corrupt IDX file {path}: bad magic number")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise AnntError(f"corrupt IDX file {path}: {len(data)} bytes, expected {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches while refusing every global except numpy's array rebuilders."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("copy_reg", "_reconstructor"),
        ("__builtin__", "object"),
        ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2; harmless
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one ``cifar-10-batches-py`` batch into NHWC uint8 images and labels."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayOnlyUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as exc:
        raise AnntError(f"corrupt CIFAR batch {path}: {exc}") from None
    return data.transpose(0, 2, 3, 1), labels


def read_npz_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``x`` (NHWC or NHW, uint8 or float in [0,1]) and ``y`` from an npz, never unpickling."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files or "y" not in z.files:
                raise AnntError(f"npz dataset {path} must hold arrays 'x' and 'y', found {z.files}")
            x, y = z["x"], z["y"]
    except AnntError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise AnntError(f"corrupt npz file {path}: {exc}") from None
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise AnntError(f"npz dataset {path}: need x [N,H,W(,C)] and y [N], got {x.shape}, {y.shape}")
    return x, y.astype(np.int64)


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


def read_image_folder(root: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One sub-folder per class (sorted names = class indices), PNG/JPEG images of one size."""
    from PIL import Image, UnidentifiedImageError

    if not root.is_dir():
        raise AnntError(f"image folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise AnntError(f"image folder {root} has no class sub-folders")
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as im:
                    arr = np.asarray(im.convert("L" if im.mode in ("L", "1", "P") else "RGB"))
            except (OSError, UnidentifiedImageError) as exc:
                raise AnntError(f"unreadable image {file}: {exc}") from None
            images.append(arr if arr.ndim == 3 else arr[..., None])
            labels.append(label)
    if not images:
        raise AnntError(f"image folder {root} holds no PNG/JPEG images")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise AnntError(f"image folder {root} mixes image sizes {sorted(shapes)}; resize them first")
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes
