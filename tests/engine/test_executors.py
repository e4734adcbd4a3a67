"""Local process pool: same rows as serial; kill -9 of the driver or of a worker loses nothing."""

from __future__ import annotations

import os
import signal
import time

import pytest

from annt.experiments import run_study

from .helpers import CELLS, SPEC, alive, children, count_cells, dump, start, wait_for, write_spec


def test_processes_give_the_serial_rows(tmp_path, reference):
    result = run_study(SPEC, out=tmp_path / "out", progress=False, workers=2)
    assert result.computed == CELLS
    assert dump(tmp_path / "out") == reference
    again = run_study(SPEC, out=tmp_path / "out", progress=False, workers=2)
    assert again.computed == 0 and again.reused == CELLS


@pytest.mark.slow
def test_kill_driver_then_worker_and_resume(tmp_path, reference):
    spec, out = write_spec(tmp_path), tmp_path / "out"
    # 1. kill -9 the driver while its workers compute: the workers exit, nothing is half-recorded
    proc = start(spec, out, "--workers", "2")
    wait_for(lambda: count_cells(out) >= 1 and len(children(proc.pid)) >= 2, proc, what="a first cell")
    workers = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = count_cells(out)
    assert 1 <= first < CELLS
    deadline = time.monotonic() + 20
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(w) for w in workers), "orphaned workers kept running"
    # 2. resume, and kill -9 one worker in the middle: its cell is resubmitted to a new worker
    proc = start(spec, out, "--workers", "2")
    wait_for(lambda: count_cells(out) > first and len(children(proc.pid)) >= 2, proc, what="resumed cells")
    victim = max(children(proc.pid))
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert dump(out) == reference
