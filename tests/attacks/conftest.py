"""Shared fixtures for the attack tests: real MNIST and small, quickly trained Mnist A models.

``annt.data.load_dataset`` is used when it exists; until then the canonical IDX files are read
directly. Models are trained once per session (about 20k images, one epoch) and cached.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from annt.errors import AnntError
from annt.models import create_model

_IDX = {"train": "train", "test": "t10k"}


def data_root() -> Path:
    """``ANNT_DATA_DIR`` or the project's shared data folder next to the checkout."""
    env = os.environ.get("ANNT_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def load_mnist(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST ``split`` as float32 NCHW in [0, 1] and int64 labels."""
    try:
        from annt.data import load_dataset

        ds = load_dataset("mnist", split, data_dir=data_root(), download=False)
        return ds.x.float(), ds.y.long()
    except (ImportError, AttributeError, TypeError):
        pass  # annt.data not there yet: read the IDX files below
    except AnntError as err:
        pytest.skip(f"MNIST not available: {err}")
    folder = data_root() / "mnist"
    if not folder.is_dir():
        pytest.skip(f"MNIST not found under {folder}")
    x = _read_idx(folder / f"{_IDX[split]}-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    y = _read_idx(folder / f"{_IDX[split]}-labels-idx1-ubyte.gz", 8)
    return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))


@contextmanager
def one_thread() -> Iterator[None]:
    """The attack tests are many small ops: one thread avoids oversubscribing shared CPUs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


def train_quick(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0, steps: int | None = None
) -> nn.Module:
    """Adam 1e-3, batch 128, one epoch (or ``steps`` batches): ~94% accuracy in seconds."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    for idx in perm.split(128)[:steps]:
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def mnist_train() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_mnist("train")
    return x[:20000], y[:20000]


@pytest.fixture(scope="session")
def mnist_test() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_mnist("test")
    return x[:2000], y[:2000]


def _trained(bits: str | None, train, cache: Path, start: nn.Module | None = None) -> nn.Module:
    """Mnist A trained for one epoch; quantized ones fine-tune the FP weights for 40 steps."""
    torch.manual_seed(0)  # initial weights must not depend on which tests ran before
    model = create_model("mnist_a", bits=bits)
    path = cache / f"mnist_a_{bits or 'fp'}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path))
        return model.eval()
    with one_thread():
        if start is None:
            train_quick(model, *train)
        else:
            model.load_state_dict(start.state_dict())
            train_quick(model, *train, steps=40)
    torch.save(model.state_dict(), path)
    return model.eval()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("attack_models")


@pytest.fixture(scope="session")
def mnist_fp(mnist_train, model_cache) -> nn.Module:
    return _trained(None, mnist_train, model_cache)


@pytest.fixture(scope="session")
def mnist_1bit(mnist_train, model_cache, mnist_fp) -> nn.Module:
    return _trained("1", mnist_train, model_cache, mnist_fp)


@pytest.fixture(scope="session")
def mnist_2bit(mnist_train, model_cache, mnist_fp) -> nn.Module:
    return _trained("2", mnist_train, model_cache, mnist_fp)


def correct_samples(model: nn.Module, test, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` test images that ``model`` classifies correctly (the paper's protocol)."""
    x, y = test
    with torch.no_grad():
        ok = model(x[: 4 * n]).argmax(1) == y[: 4 * n]
    return x[: 4 * n][ok][:n].clone(), y[: 4 * n][ok][:n].clone()


@pytest.fixture(scope="session")
def correct():
    """``correct(model, test, n)``: the first n test images the model gets right."""
    return correct_samples
