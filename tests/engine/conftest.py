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


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole test session (starting one takes seconds)."""
    ray = pytest.importorskip("ray", reason="pip install -e '.[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    yield ray
    ray.shutdown()
