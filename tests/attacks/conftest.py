"""Shared fixtures for the attack tests: real MNIST and small, quickly trained Mnist A models.

Test images come from the bundled ``mnist-embedded`` set, whose 1,000 test images are the first
1,000 of MNIST's test file byte for byte (tests/foundation/test_data.py checks it), so they are the
same with or without the data directory. The quick models train on the first 20,000 images of
MNIST's train split where the data directory holds MNIST; in a fresh clone, on mnist-embedded's
5,500 training images for the same number of steps. Models are trained once per session and cached.
Data is read through ``annt.data.load_dataset`` only: a broken loader fails these tests.
"""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

from annt.data import load_dataset
from annt.models import create_model

TRAIN_IMAGES = 20000  # of the full MNIST train split, where the data directory has it
BATCH = 128
STEPS = math.ceil(TRAIN_IMAGES / BATCH)  # one epoch of those: 157 steps


def load_mnist(split: str, data_dir: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST ``split`` as float32 NCHW in [0, 1] and int64 labels: the full files from
    ``data_dir``, or mnist-embedded where ``data_dir`` is ``None``."""
    if data_dir is None:
        ds = load_dataset("mnist-embedded", split)
    else:
        ds = load_dataset("mnist", split, data_dir=data_dir, download=False)
    return ds.x.float(), ds.y.long()


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


def _batches(n: int, steps: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """``steps`` batches of indices into ``n`` images: shuffled epochs, as many as it takes."""
    while steps > 0:
        for idx in torch.randperm(n, generator=gen).split(BATCH)[:steps]:
            yield idx
            steps -= 1


def train_quick(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0, steps: int | None = None
) -> nn.Module:
    """Adam 1e-3, batch 128, one epoch of 20,000 images (or ``steps`` batches): ~94% accuracy in seconds."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for idx in _batches(x.shape[0], STEPS if steps is None else steps, torch.Generator().manual_seed(seed)):
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def mnist_train(mnist_dir) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_mnist("train", mnist_dir)
    return x[:TRAIN_IMAGES], y[:TRAIN_IMAGES]


@pytest.fixture(scope="session")
def mnist_test() -> tuple[torch.Tensor, torch.Tensor]:
    """The first 1,000 MNIST test images (mnist-embedded's, identical to the full file's)."""
    return load_mnist("test")


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
    assert 4 * n <= x.shape[0], f"{n} samples need the first {4 * n} test images, there are {x.shape[0]}"
    with torch.no_grad():
        ok = model(x[: 4 * n]).argmax(1) == y[: 4 * n]
    assert int(ok.sum()) >= n, f"only {int(ok.sum())} of the first {4 * n} test images are classified correctly"
    return x[: 4 * n][ok][:n].clone(), y[: 4 * n][ok][:n].clone()


@pytest.fixture(scope="session")
def correct():
    """``correct(model, test, n)``: the first n test images the model gets right."""
    return correct_samples


class _Stub(types.ModuleType):
    """An empty module whose attributes are empty modules (adv-lib's unused imports)."""

    def __getattr__(self, name: str) -> types.ModuleType:
        if name.startswith("__"):
            raise AttributeError(name)
        sub = _Stub(f"{self.__name__}.{name}")
        setattr(self, name, sub)
        sys.modules[sub.__name__] = sub
        return sub


@pytest.fixture(scope="module")
def adv_lib_attacks():
    """``adv_lib.attacks`` (a test reference, installed with ``--no-deps``), or a skip.

    adv-lib imports torchvision and visdom, which do not load beside this torch; stand-in
    modules are put in ``sys.modules`` for the duration of the module's tests.
    """
    saved = {k: sys.modules.get(k) for k in ("torchvision", "visdom")}
    for name in saved:
        sys.modules.setdefault(name, _Stub(name))
    try:
        yield pytest.importorskip("adv_lib.attacks")
    finally:
        for name, module in saved.items():
            if module is None:
                for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
                    del sys.modules[key]
