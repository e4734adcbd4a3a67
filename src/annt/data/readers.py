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
from annt.inputs.arrays import dataset_labels, float_images, image_shape
from annt.inputs.files import read_npz, regular_file

MAX_IMAGE_PIXELS = 4096 * 4096  # per image in a folder: larger is a decompression bomb, not data

_IDX_DTYPES = {0x08: np.uint8}


def read_idx_gz(path: Path) -> np.ndarray:
    """Read a gzip'd IDX file (magic: 0, 0, dtype, ndim; big-endian dims)."""
    regular_file(path, "IDX file")
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
    regular_file(path, "CIFAR batch")
    try:
        with open(path, "rb") as f:
            batch = _ArrayOnlyUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as exc:
        raise AnntError(f"corrupt CIFAR batch {path}: {exc}") from None
    return data.transpose(0, 2, 3, 1), labels


def read_npz_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``x`` (NHWC or NHW, uint8 or float in [0,1]) and ``y`` from an npz, never unpickling.

    Sizes are checked before reading and labels before anything is sized by them.
    """
    arrays = read_npz(path, "npz dataset")
    if "x" not in arrays or "y" not in arrays:
        raise AnntError(f"npz dataset {path} must hold arrays 'x' and 'y', found {sorted(arrays)}")
    x, y = arrays["x"], arrays["y"]
    where = f"npz dataset {path}"
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise AnntError(f"{where}: x must be [N,H,W] or [N,H,W,C] with C 1 or 3, got shape {x.shape}")
    if x.dtype != np.uint8:
        float_images(x, f"{where}: x")
    else:
        image_shape(x, f"{where}: x")
    return x, dataset_labels(y, len(x), where)


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


def _read_image(file: Path) -> np.ndarray:
    """Pixels of one image; the size is checked from the header before anything is decoded."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise AnntError(f"image {file} is {w}x{h} pixels, more than the limit of"
                                    f" {MAX_IMAGE_PIXELS} (a decompression bomb?)")
                return np.asarray(im.convert("L" if im.mode in ("L", "1", "P") else "RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise AnntError(f"image {file} refused as a decompression bomb: {exc}") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise AnntError(f"unreadable image {file}: {exc}") from None


def read_image_folder(root: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One sub-folder per class (sorted names = class indices), PNG/JPEG images of one size."""
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
            arr = _read_image(regular_file(file, "image"))
            images.append(arr if arr.ndim == 3 else arr[..., None])
            labels.append(label)
    if not images:
        raise AnntError(f"image folder {root} holds no PNG/JPEG images")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise AnntError(f"image folder {root} mixes image sizes {sorted(shapes)}; resize them first")
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes
