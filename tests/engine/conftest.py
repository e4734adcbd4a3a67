"""One serial reference run of the small study, shared by the executor tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from annt.experiments import run_study

from .helpers import CELLS, SPEC, dump


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory) -> Path:
    """The output folder of a serial run (copy it before writing to it)."""
    out: Path = tmp_path_factory.mktemp("serial") / "out"
    result = run_study(SPEC, out=out, progress=False)
    assert result.computed == CELLS and result.reused == 0
    return out


@pytest.fixture(scope="session")
def reference(reference_dir) -> dict:
    return dump(reference_dir)
