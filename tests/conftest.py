"""Test-wide settings: real data from ../shared/data (or $ANNT_DATA_DIR), never downloads.

Without that folder (a fresh clone) the tests use the bundled ``mnist-embedded`` set (the
first 6,000 train and 1,000 test images of MNIST, byte for byte) and the bundled zoo models;
tests of the MNIST file handling use those images written as IDX files (``mnist_files``); only
tests that need the full MNIST files, Fashion-MNIST, CIFAR-10 or a GPU skip, and say so.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
_default = REPO.parent / "shared" / "data"
if not os.environ.get("ANNT_DATA_DIR") and _default.is_dir():
    os.environ["ANNT_DATA_DIR"] = str(_default)
os.environ["ANNT_OFFLINE"] = "1"  # tests never download
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

DATA_DIR = Path(os.environ.get("ANNT_DATA_DIR", _default))


def has_dataset(sub: str) -> bool:
    return (DATA_DIR / sub).is_dir()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data folder; skips the test where it lacks MNIST (use only where the full files are needed)."""
    if not has_dataset("mnist"):
        pytest.skip("needs the full MNIST files (60k/10k); set ANNT_DATA_DIR")
    return DATA_DIR


@pytest.fixture(scope="session")
def mnist_dir() -> Path | None:
    """The data folder where it holds MNIST, else ``None`` (a fresh clone: use ``mnist-embedded``)."""
    return DATA_DIR if has_dataset("mnist") else None


def embedded_arrays() -> dict[str, np.ndarray]:
    """The bundled mnist-embedded arrays as stored: x_train [6000,28,28], y_train, x_test, y_test (uint8)."""
    ref = resources.files("annt.data") / "embedded" / "mnist_embedded.npz"
    with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _write_idx_gz(path: Path, array: np.ndarray) -> None:
    """``array`` (uint8) as a gzipped IDX file: magic 0x0000080N, N big-endian uint32 sizes, data."""
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


@pytest.fixture(scope="session")
def _embedded_as_idx(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A data folder whose mnist/ holds mnist-embedded as the four IDX files, and their md5s."""
    root = tmp_path_factory.mktemp("mnist-standin")
    (root / "mnist").mkdir()
    arrays = embedded_arrays()
    files = {"train-images-idx3-ubyte.gz": arrays["x_train"], "train-labels-idx1-ubyte.gz": arrays["y_train"],
             "t10k-images-idx3-ubyte.gz": arrays["x_test"], "t10k-labels-idx1-ubyte.gz": arrays["y_test"]}
    md5s = {}
    for name, array in files.items():
        _write_idx_gz(root / "mnist" / name, array)
        md5s[name] = hashlib.md5((root / "mnist" / name).read_bytes()).hexdigest()
        (root / "mnist" / name).chmod(0o444)
    return root, md5s


@pytest.fixture
def mnist_files(request, monkeypatch) -> Path:
    """A data folder whose ``mnist/`` holds the four MNIST IDX files, for tests of reading,
    verifying and splitting them: the data directory where it has MNIST; in a fresh clone,
    mnist-embedded's 6,000 train and 1,000 test images (the files' first ones) written as IDX
    files, with the checksums that ``load_dataset("mnist")`` expects replaced by theirs for the
    test's duration. Do not write into it (copy or link its files)."""
    if has_dataset("mnist"):
        return DATA_DIR
    from annt.data import datasets

    root, md5s = request.getfixturevalue("_embedded_as_idx")
    for name, md5 in md5s.items():
        monkeypatch.setitem(datasets._MNIST_FILES, name, md5)
    return root


@pytest.fixture
def kill_and_resume():
    """``run(cmd, out)``: start a training command, SIGKILL it once its first ``last/`` checkpoint is
    on disk (before it finished), then run the same command again to the end."""

    def run(cmd: list[str], out: Path) -> None:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "last" / "train_state.json").exists():
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        finished = json.loads((out / "last" / "train_state.json").read_text())["info"]["history"]
        assert len(finished) < 3, "the run finished before it could be killed"
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr

    return run
