import gzip
import hashlib
import os
import pickle
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from annt.data import load_dataset
from annt.data.readers import read_cifar_batch
from annt.errors import AnntError

DATA = Path(os.environ.get("ANNT_DATA_DIR", "."))


def has_dataset(sub: str) -> bool:
    return (DATA / sub).is_dir()


# sha256 of the first 1000 test (6000 train) images' pixel bytes followed by their label bytes, in
# the canonical decompressed t10k (train) IDX files (gz md5 9fb629c4... / ec29112d..., f68b3c2d... /
# d53e105e...): what mnist-embedded must hold, checkable without the files
CANONICAL_HEAD_SHA256 = {
    "test": "433b45373ea5854af220ecaa5779542557e32a893fbaf90aa26d1e31123335de",
    "train": "89c38a22419fc04b8174afb12774870a5ed829a79f00ea3a6ff847b7b8195737",
}


def embedded_arrays() -> dict[str, np.ndarray]:
    """mnist-embedded as bundled: x_train [6000, 28, 28], y_train, x_test [1000, 28, 28], y_test (uint8)."""
    ref = resources.files("annt.data") / "embedded" / "mnist_embedded.npz"
    with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_mnist_splits(mnist_files):
    """The IDX files' splits: the full 60k/10k files, or in a fresh clone their first 6,000/1,000
    images written as IDX files (the same reader, checksums, hold-out and order)."""
    data_dir = mnist_files
    train = load_dataset("mnist", "train", data_dir)
    val = load_dataset("mnist", "validation", data_dir)
    test = load_dataset("mnist", "test", data_dir)
    sizes = (55000, 5000, 10000) if has_dataset("mnist") else (1000, 5000, 1000)
    assert (len(train), len(val), len(test)) == sizes
    assert train.x.shape[1:] == (1, 28, 28) and train.x.dtype == torch.float32
    assert train.y.dtype == torch.int64 and train.x.min() >= 0 and train.x.max() <= 1
    assert not set(train.index.tolist()) & set(val.index.tolist())  # validation held out of train
    assert test.y[:5].tolist() == [7, 2, 1, 0, 4]  # canonical order
    assert sorted(train.index.tolist() + val.index.tolist()) == list(range(len(train) + len(val)))
    other = load_dataset("mnist", "validation", data_dir, seed=1)
    assert not torch.equal(other.index, val.index)  # seeded hold-out


@pytest.mark.skipif(not has_dataset("fashion-mnist"), reason="needs Fashion-MNIST in $ANNT_DATA_DIR (not bundled)")
def test_fashion_mnist(data_dir):
    test = load_dataset("fashion-mnist", "test", data_dir)
    assert len(test) == 10000 and test.y[:3].tolist() == [9, 2, 1]


@pytest.mark.skipif(not has_dataset("cifar10-lossless"), reason="needs CIFAR-10 in $ANNT_DATA_DIR (not bundled)")
def test_cifar10_from_lossless_npz(data_dir):
    test = load_dataset("cifar10", "test", data_dir)
    assert test.x.shape == (10000, 3, 32, 32)
    assert test.y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # canonical test_batch order
    assert abs(test.x.mean().item() - 0.4734) < 0.01


@pytest.mark.skipif(not has_dataset("cifar10-lossless"), reason="needs CIFAR-10 in $ANNT_DATA_DIR (not bundled)")
def test_cifar10_test_split_needs_only_the_test_file(tmp_path, data_dir):
    """Evaluating or attacking reads the 30 MB test file; the 150 MB training file may be absent."""
    (tmp_path / "cifar10-lossless").mkdir()
    (tmp_path / "cifar10-lossless" / "cifar10_test.npz").symlink_to(data_dir / "cifar10-lossless" / "cifar10_test.npz")
    test = load_dataset("cifar10", "test", tmp_path, download=False)
    assert torch.equal(test.x, load_dataset("cifar10", "test", data_dir).x)
    with pytest.raises(AnntError, match="CIFAR-10 not found under"):
        load_dataset("cifar10", "train", tmp_path, download=False)


def _pixel_and_label_sha256(images: torch.Tensor, labels: torch.Tensor) -> str:
    pixels = (images * 255).round().to(torch.uint8).numpy().tobytes()
    return hashlib.sha256(pixels + labels.to(torch.uint8).numpy().tobytes()).hexdigest()


def test_embedded_default_is_real_mnist_offline(tmp_path):
    """The bundled set is the first 1,000 test and 6,000 train images of the canonical MNIST files,
    byte for byte (checked against their digests offline, and against the files where present)."""
    emb = load_dataset("embedded", "test", tmp_path / "nothing-here")
    assert len(emb) == 1000
    assert emb.y[:5].tolist() == [7, 2, 1, 0, 4]
    assert _pixel_and_label_sha256(emb.x, emb.y) == CANONICAL_HEAD_SHA256["test"]
    train = embedded_arrays()
    assert hashlib.sha256(train["x_train"].tobytes() + train["y_train"].tobytes()).hexdigest() \
        == CANONICAL_HEAD_SHA256["train"]
    assert len(load_dataset("mnist-embedded", "train", tmp_path)) == 5500
    if has_dataset("mnist"):
        real = load_dataset("mnist", "test", DATA)
        assert torch.equal(emb.x, real.x[:1000]) and torch.equal(emb.y, real.y[:1000])


def _copy_mnist(src: Path, dst: Path) -> Path:
    shutil.copytree(src / "mnist", dst / "mnist")
    return dst


def test_checksum_mismatch_is_one_line_error(tmp_path, mnist_files):
    root = _copy_mnist(mnist_files, tmp_path)
    f = root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.chmod(0o644)
    f.write_bytes(bytes(data))
    with pytest.raises(AnntError, match="checksum mismatch") as err:
        load_dataset("mnist", "test", root)
    assert "\n" not in str(err.value)


def test_missing_data_offline_is_one_line_error(tmp_path):
    with pytest.raises(AnntError, match="ANNT_OFFLINE") as err:
        load_dataset("mnist", "test", tmp_path)
    assert "\n" not in str(err.value)


def test_unknown_dataset_and_split():
    with pytest.raises(AnntError, match="unknown dataset"):
        load_dataset("imagenet", "test")
    with pytest.raises(AnntError, match="unknown split"):
        load_dataset("embedded", "dev")


def test_npz_dataset(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 10)):
        np.savez(tmp_path / f"toy_{split}.npz", x=rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
                 y=rng.integers(0, 3, n))
    train = load_dataset(f"npz:{tmp_path}", "train", validation_size=5)
    test = load_dataset(f"npz:{tmp_path}", "test")
    assert train.x.shape == (35, 3, 8, 8) and test.x.shape == (10, 3, 8, 8)
    raw = np.load(tmp_path / "toy_test.npz")["x"]
    assert torch.allclose(test.x, torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255)


def test_image_folder_dataset(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    test = load_dataset(f"image-folder:{tmp_path}", "test")
    assert test.x.shape == (12, 1, 12, 12) and test.classes == ["cat", "dog"]
    assert test.y.tolist() == [0] * 6 + [1] * 6
    (tmp_path / "test" / "dog" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(AnntError, match="unreadable image"):
        load_dataset(f"image-folder:{tmp_path}", "test")


def test_cifar_pickle_reader_refuses_code(tmp_path):
    good = {b"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072), b"labels": [1, 2]}
    (tmp_path / "batch").write_bytes(pickle.dumps(good, protocol=2))
    x, y = read_cifar_batch(tmp_path / "batch")
    assert x.shape == (2, 32, 32, 3) and y.tolist() == [1, 2]
    assert x[0, 0, 0].tolist() == [0, 1024 % 256, 2048 % 256]

    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, ("/nonexistent",))

    (tmp_path / "evil").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(AnntError, match="refusing to load global"):
        read_cifar_batch(tmp_path / "evil")


def test_corrupt_idx_is_one_line_error(tmp_path):
    from annt.data.readers import read_idx_gz

    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05ab"))
    with pytest.raises(AnntError, match="corrupt IDX"):
        read_idx_gz(p)
