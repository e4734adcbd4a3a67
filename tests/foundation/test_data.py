import gzip
import os
import pickle
import shutil
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


def test_mnist_splits(data_dir):
    train = load_dataset("mnist", "train", data_dir)
    val = load_dataset("mnist", "validation", data_dir)
    test = load_dataset("mnist", "test", data_dir)
    assert (len(train), len(val), len(test)) == (55000, 5000, 10000)
    assert train.x.shape[1:] == (1, 28, 28) and train.x.dtype == torch.float32
    assert train.y.dtype == torch.int64 and train.x.min() >= 0 and train.x.max() <= 1
    assert not set(train.index.tolist()) & set(val.index.tolist())  # validation held out of train
    assert test.y[:5].tolist() == [7, 2, 1, 0, 4]  # canonical order
    other = load_dataset("mnist", "validation", data_dir, seed=1)
    assert not torch.equal(other.index, val.index)  # seeded hold-out


@pytest.mark.skipif(not has_dataset("fashion-mnist"), reason="no Fashion-MNIST")
def test_fashion_mnist(data_dir):
    test = load_dataset("fashion-mnist", "test", data_dir)
    assert len(test) == 10000 and test.y[:3].tolist() == [9, 2, 1]


@pytest.mark.skipif(not has_dataset("cifar10-lossless"), reason="no CIFAR-10")
def test_cifar10_from_lossless_npz(data_dir):
    test = load_dataset("cifar10", "test", data_dir)
    assert test.x.shape == (10000, 3, 32, 32)
    assert test.y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # canonical test_batch order
    assert abs(test.x.mean().item() - 0.4734) < 0.01


@pytest.mark.skipif(not has_dataset("cifar10-lossless"), reason="no CIFAR-10")
def test_cifar10_test_split_needs_only_the_test_file(tmp_path, data_dir):
    """Evaluating or attacking reads the 30 MB test file; the 150 MB training file may be absent."""
    (tmp_path / "cifar10-lossless").mkdir()
    (tmp_path / "cifar10-lossless" / "cifar10_test.npz").symlink_to(data_dir / "cifar10-lossless" / "cifar10_test.npz")
    test = load_dataset("cifar10", "test", tmp_path, download=False)
    assert torch.equal(test.x, load_dataset("cifar10", "test", data_dir).x)
    with pytest.raises(AnntError, match="CIFAR-10 not found under"):
        load_dataset("cifar10", "train", tmp_path, download=False)


def test_embedded_default_is_real_mnist_offline(tmp_path, data_dir):
    emb = load_dataset("embedded", "test", tmp_path / "nothing-here")
    real = load_dataset("mnist", "test", data_dir)
    assert len(emb) == 1000
    assert torch.equal(emb.x, real.x[:1000])  # the real first 1000 test images, not synthetic
    assert len(load_dataset("mnist-embedded", "train", tmp_path)) == 5500


def _copy_mnist(src: Path, dst: Path) -> Path:
    shutil.copytree(src / "mnist", dst / "mnist")
    return dst


def test_checksum_mismatch_is_one_line_error(tmp_path, data_dir):
    root = _copy_mnist(data_dir, tmp_path)
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
