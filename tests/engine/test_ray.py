"""Ray executor (optional extra): the serial rows, and a killed Ray worker's cell is retried."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from annt.experiments import run_study

from .helpers import CELLS, SPEC, count_cells, dump

pytest.importorskip("ray")


def _ray_workers_computing() -> list[int]:
    """Ray worker processes currently running a cell (Ray titles them after the task)."""
    found = []
    for cmd in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmd.read_bytes().startswith(b"ray::_ray_compute"):
                found.append(int(cmd.parent.name))
        except OSError:
            continue
    return found


def test_ray_gives_the_serial_rows(tmp_path, reference, ray_local):
    result = run_study(SPEC, out=tmp_path / "out", progress=False, executor="ray")
    assert result.computed == CELLS
    assert dump(tmp_path / "out") == reference


@pytest.mark.slow
def test_killed_ray_worker_loses_nothing(tmp_path, reference, ray_local):
    out = tmp_path / "out"
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = run_study(SPEC, out=out, progress=False, executor="ray")
        except BaseException as exc:  # reported below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while not _ray_workers_computing() and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    victims = _ray_workers_computing()
    assert victims and count_cells(out) < CELLS, "no cell was running"
    os.kill(victims[0], signal.SIGKILL)
    thread.join(300)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].computed == CELLS
    assert dump(out) == reference
