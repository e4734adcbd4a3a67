"""Ray executor (optional extra): the serial rows; a killed Ray worker's cell is retried; a killed
Ray driver (``annt run --executor ray``) loses nothing and the re-run resumes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from annt.experiments import run_study

from .helpers import CELLS, SPEC, count_cells, dump, wait_for, write_spec

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


def _session(sid: int) -> dict[int, bytes]:
    """Live processes of session ``sid`` (the test's ``annt run`` and the Ray instance it started): pid -> cmdline."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
    return found


def _ray_run(spec: Path, out: Path) -> subprocess.Popen:
    """``annt run --executor ray --ray-address local`` in a session of its own (its Ray processes join it).

    One worker: Ray and torch start-up dominate this test on a 2-core machine, and a second
    worker process costs more start-up than it saves (the pool case is ``test_executors``).
    """
    return subprocess.Popen(
        [sys.executable, "-m", "annt.cli.main", "run", str(spec), "--out", str(out), "--quiet",
         "--executor", "ray", "--ray-address", "local", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"OMP_NUM_THREADS": "1"},
    )


def _end_session(sid: int) -> None:
    """SIGKILL what is left of a session this test started (Ray's agents outlive a killed driver)."""
    for pid in _session(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_killed_ray_driver_loses_nothing_and_the_rerun_resumes(tmp_path, reference):
    """kill -9 of ``annt run --executor ray`` while Ray workers compute cells, then the same command again.

    The Ray workers stop with the driver (none keeps writing into the folder), the re-run takes
    over the stale lock, reuses every recorded cell, computes only the others, and ends with the
    rows of an uninterrupted serial run: one row per cell, one set file per ``attack_sets`` row.
    """
    spec, out = write_spec(tmp_path), tmp_path / "out"
    first = _ray_run(spec, out)
    sids = [first.pid]

    def computing() -> list[int]:
        return [pid for pid, cmd in _session(first.pid).items() if cmd.startswith(b"ray::_ray_compute")]

    try:
        wait_for(lambda: count_cells(out) >= 2 and computing(), first, timeout=240,
                 what="recorded cells while Ray workers compute")
        first.send_signal(signal.SIGKILL)
        first.wait()
        done = count_cells(out)
        assert 2 <= done < CELLS, f"the run finished ({done} cells) before it could be killed"
        deadline = time.monotonic() + 30
        while computing() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not computing(), "Ray workers kept computing after their driver was killed"

        again = _ray_run(spec, out)
        sids.append(again.pid)
        stdout, err = again.communicate(timeout=300)
        assert again.returncode == 0, err.decode()[-2000:]
        assert f"taking over the stale lock of {out} (pid {first.pid} " in err.decode()
        summary = json.loads(stdout)
        assert (summary["cells_reused"], summary["cells_computed"]) == (done, CELLS - done)
        assert dump(out) == reference  # nothing lost, nothing duplicated, same values as serial
        assert len(list((out / "sets").rglob("*.npz"))) == len(reference["attack_sets"])
    finally:
        for sid in sids:
            _end_session(sid)
