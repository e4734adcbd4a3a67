"""Dataset registry and loading: names -> files on disk -> [0,1] NCHW tensors with splits.

Data is looked up under a root folder (``--data-dir``, else ``$ANNT_DATA_DIR``, else
``~/.cache/annt/data``) and downloaded when missing. The validation split is held out from
the training files with a seeded permutation, so checkpoint selection never sees test data.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from annt.data.download import download
from annt.data.readers import read_cifar_batch, read_idx_gz, read_image_folder, read_npz_arrays
from annt.errors import AnntError
from annt.inputs.hashing import verify_file

SPLITS = ("train", "validation", "test")
DATA_DIR_ENV = "ANNT_DATA_DIR"


@dataclass
class ImageSet:
    """Images (float32 NCHW in [0,1]) with int64 labels and their indices in the source split."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: torch.Tensor | np.ndarray | list[int]) -> ImageSet:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return ImageSet(self.x[idx], self.y[idx], self.index[idx], self.classes)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    channels: int
    image_size: int
    num_classes: int
    validation_size: int
    loader: Callable[[Path, bool], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    classes: tuple[str, ...] = ()
    #: reads the test split alone (x, y), where the full ``loader`` would also read (and
    #: verify) the training files: evaluating or attacking needs only the test file
    test_loader: Callable[[Path, bool], tuple[np.ndarray, np.ndarray]] | None = None
    #: the dataset this one is a sample of (its train and test images are subsets of that
    #: dataset's train and test splits): a model trained on that one may be evaluated on this one
    sample_of: str | None = None


def data_root(data_dir: str | Path | None = None) -> Path:
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "annt" / "data"


# ---------------------------------------------------------------- IDX datasets
_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
_FASHION_FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
_FASHION_MIRRORS = ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]


def _fetch_verified(folder: Path, files: dict[str, str], mirrors: list[str], allow_download: bool):
    for name, md5 in files.items():
        path = folder / name
        if not path.exists():
            if not allow_download:
                raise AnntError(f"missing data file {path}; run with downloads enabled or copy it there")
            download([m + name for m in mirrors], path, md5)
        verify_file(path, md5, "md5")


def _idx_loader(sub: str, files: dict[str, str], mirrors: list[str]):
    def load(root: Path, allow_download: bool):
        folder = root / sub
        _fetch_verified(folder, files, mirrors, allow_download)
        out = [read_idx_gz(folder / name) for name in files]
        x_train, y_train, x_test, y_test = out
        return x_train[..., None], y_train.astype(np.int64), x_test[..., None], y_test.astype(np.int64)

    return load


# ---------------------------------------------------------------- CIFAR-10
_CIFAR_LOSSLESS_MD5 = {
    "cifar10_train.npz": "ad0ed464f6fb68889fcd32fdb85a635f",
    "cifar10_test.npz": "5360422fb0f7e0aba5e937bd39cbfbae",
}
_CIFAR_TAR = ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
_CIFAR_URLS = ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
_CIFAR_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


def _load_cifar10(root: Path, allow_download: bool):
    lossless = root / "cifar10-lossless"
    if all((lossless / n).exists() for n in _CIFAR_LOSSLESS_MD5):
        for name, md5 in _CIFAR_LOSSLESS_MD5.items():
            verify_file(lossless / name, md5, "md5")
        x_train, y_train = read_npz_arrays(lossless / "cifar10_train.npz")
        x_test, y_test = read_npz_arrays(lossless / "cifar10_test.npz")
        return x_train, y_train, x_test, y_test
    batches = root / "cifar10" / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    if not all((batches / n).exists() for n in names):
        if not allow_download:
            raise AnntError(f"CIFAR-10 not found under {root} (need cifar10-lossless/ or {batches})")
        tar_path = root / "cifar10" / _CIFAR_TAR[0]
        if not tar_path.exists():
            download(_CIFAR_URLS, tar_path, _CIFAR_TAR[1])
        verify_file(tar_path, _CIFAR_TAR[1], "md5")
        with tarfile.open(tar_path) as tar:
            tar.extractall(root / "cifar10", filter="data")
    parts = [read_cifar_batch(batches / n) for n in names]
    x_train = np.concatenate([p[0] for p in parts[:5]])
    y_train = np.concatenate([p[1] for p in parts[:5]])
    return x_train, y_train, parts[5][0], parts[5][1]


def _load_cifar10_test(root: Path, allow_download: bool):
    """The test split from whichever copy holds it; the full loader (and its download) else."""
    test_npz = root / "cifar10-lossless" / "cifar10_test.npz"
    if test_npz.exists():
        verify_file(test_npz, _CIFAR_LOSSLESS_MD5[test_npz.name], "md5")
        return read_npz_arrays(test_npz)
    test_batch = root / "cifar10" / "cifar-10-batches-py" / "test_batch"
    if test_batch.exists():
        return read_cifar_batch(test_batch)
    return _load_cifar10(root, allow_download)[2:]


# ---------------------------------------------------------------- embedded sample
EMBEDDED = "mnist-embedded"


def _load_embedded(root: Path, allow_download: bool):
    """Real MNIST images bundled with ANNT (works offline, no data directory needed)."""
    ref = resources.files("annt.data") / "embedded" / "mnist_embedded.npz"
    with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as z:
        return z["x_train"][..., None], z["y_train"].astype(np.int64), z["x_test"][..., None], z[
            "y_test"
        ].astype(np.int64)


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", "MNIST digits, 60k/10k, 28x28 gray", 1, 28, 10, 5000,
        _idx_loader("mnist", _MNIST_FILES, _MNIST_MIRRORS), tuple(str(i) for i in range(10)),
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", "Fashion-MNIST, 60k/10k, 28x28 gray", 1, 28, 10, 5000,
        _idx_loader("fashion-mnist", _FASHION_FILES, _FASHION_MIRRORS),
        ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"),
    ),
    "cifar10": DatasetInfo(
        "cifar10", "CIFAR-10, 50k/10k, 32x32 RGB (lossless npz or python pickles)", 3, 32, 10, 5000,
        _load_cifar10, _CIFAR_CLASSES, _load_cifar10_test,
    ),
    EMBEDDED: DatasetInfo(
        EMBEDDED, "6,000 train + 1,000 test real MNIST images bundled with ANNT (offline)", 1, 28,
        10, 500, _load_embedded, tuple(str(i) for i in range(10)), sample_of="mnist",
    ),
}


def _folder_dataset(kind: str, path: Path) -> DatasetInfo:
    """``npz:DIR`` (train.npz/test.npz with x, y) or ``image-folder:DIR`` (train/, test/)."""

    def load(root: Path, allow_download: bool):
        if kind == "npz":
            train = sorted(path.glob("*train.npz"))
            test = sorted(path.glob("*test.npz"))
            if len(train) != 1 or len(test) != 1:
                raise AnntError(f"npz dataset folder {path} needs one *train.npz and one *test.npz")
            return (*read_npz_arrays(train[0]), *read_npz_arrays(test[0]))
        x_tr, y_tr, classes = read_image_folder(path / "train")
        x_te, y_te, classes_te = read_image_folder(path / "test")
        if classes != classes_te:
            raise AnntError(f"image folder {path}: train and test class folders differ")
        return x_tr, y_tr, x_te, y_te

    classes: tuple[str, ...] = ()
    if kind == "image-folder" and (path / "train").is_dir():
        classes = tuple(sorted(p.name for p in (path / "train").iterdir() if p.is_dir()))
    return DatasetInfo(f"{kind}:{path}", f"{kind} dataset at {path}", 0, 0, 0, 0, load, classes)


def dataset_info(name: str) -> DatasetInfo:
    key = name.strip()
    for kind in ("npz", "image-folder"):
        if key.startswith(kind + ":"):
            return _folder_dataset(kind, Path(key[len(kind) + 1 :]).expanduser())
    key = key.lower()
    if key in ("embedded", "default"):
        key = EMBEDDED
    if key not in DATASETS:
        raise AnntError(
            f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}, npz:DIR or image-folder:DIR"
        )
    return DATASETS[key]


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    if x.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float().div_(255.0)
    else:
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32))
        if t.numel() and (t.min() < 0 or t.max() > 1):
            raise AnntError("float images must lie in [0,1]; rescale them first")
    return t


_CACHE: dict[tuple, tuple] = {}


def _raw(info: DatasetInfo, root: Path, allow_download: bool, test_only: bool = False):
    """(x_train, y_train, x_test, y_test); the training arrays are ``None`` when only the test
    split was asked for and the dataset can read it alone."""
    if info.name not in DATASETS:  # user folders may change between calls: never cache them
        return info.loader(root, allow_download)
    full = (info.name, str(root), "all")
    if full in _CACHE:
        return _CACHE[full]
    if test_only and info.test_loader is not None:
        key, load = (info.name, str(root), "test"), lambda: (None, None, *info.test_loader(root, allow_download))
    else:
        key, load = full, lambda: info.loader(root, allow_download)
    if key not in _CACHE:
        _CACHE.clear()  # keep at most one dataset's raw arrays in memory
        _CACHE[key] = load()
    return _CACHE[key]


def load_dataset(
    name: str,
    split: str = "test",
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    validation_size: int | None = None,
    seed: int = 0,
) -> ImageSet:
    """Load one split as float32 NCHW tensors in [0,1] with int64 labels.

    ``validation`` is a seeded hold-out of ``validation_size`` training images and ``train``
    is the rest, so the two never overlap; ``index`` refers to positions in the source file.
    """
    if split not in SPLITS:
        raise AnntError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    info = dataset_info(name)
    x_train, y_train, x_test, y_test = _raw(info, data_root(data_dir), download, test_only=split == "test")
    classes = list(info.classes) or [str(i) for i in range(int(max(y_train.max(), y_test.max())) + 1)]
    if split == "test":
        return ImageSet(_to_tensor(x_test), torch.from_numpy(y_test), torch.arange(len(y_test)), classes)
    n_val = info.validation_size if validation_size is None else validation_size
    if not info.validation_size and validation_size is None:
        n_val = max(1, len(y_train) // 10)
    if not 0 < n_val < len(y_train):
        raise AnntError(f"validation_size {n_val} must be between 1 and {len(y_train) - 1}")
    perm = np.random.default_rng(seed).permutation(len(y_train))
    idx = np.sort(perm[:n_val] if split == "validation" else perm[n_val:])
    return ImageSet(
        _to_tensor(x_train[idx]), torch.from_numpy(y_train[idx]), torch.from_numpy(idx), classes
    )


def describe(name: str) -> DatasetInfo:
    """Static facts (channels, size, classes) without touching the disk where possible."""
    return dataset_info(name)
