"""Test-wide settings: real data from ../shared/data (or $ANNT_DATA_DIR), never downloads."""

from __future__ import annotations

import os
from pathlib import Path

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
    if not has_dataset("mnist"):
        pytest.skip("real MNIST not found; set ANNT_DATA_DIR")
    return DATA_DIR
