"""Local process pool: same rows as serial; kill -9 of the driver or of a worker loses nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from annt.experiments import run_study
from annt.store.results import DB_NAME

from .helpers import CELLS, SPEC, alive, count_cells, dump, start, wait_for, workers, write_spec


def test_processes_give_the_serial_rows(tmp_path, reference):
    result = run_study(SPEC, out=tmp_path / "out", progress=False, workers=2)
    assert result.computed == CELLS
    assert dump(tmp_path / "out") == reference
    again = run_study(SPEC, out=tmp_path / "out", progress=False, workers=2)
    assert again.computed == 0 and again.reused == CELLS


@pytest.mark.slow
def test_kill_worker_then_driver_and_resume(tmp_path, reference):
    """kill -9 of a worker (its cell is redone), of the driver (workers exit, lock taken over)."""
    spec, out = write_spec(tmp_path), tmp_path / "out"
    proc = start(spec, out, "--workers", "2")
    wait_for(lambda: len(workers(proc.pid)) == 2, proc, what="two workers")
    time.sleep(2)  # both are training now (the first cells)
    os.kill(workers(proc.pid)[0], signal.SIGKILL)
    wait_for(lambda: count_cells(out) >= 3, proc, what="cells after the lost worker")
    pool = workers(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = count_cells(out)
    assert 3 <= first < CELLS
    deadline = time.monotonic() + 20
    while any(alive(w) for w in pool) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(w) for w in pool), "orphaned workers kept running"
    again = start(spec, out, "--workers", "2")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err.decode()[-2000:]
    assert f"taking over the stale lock of {out} (pid {proc.pid} " in err.decode()
    assert dump(out) == reference


@pytest.mark.slow
def test_two_runs_at_once_one_is_refused_nothing_lost(tmp_path, reference):
    spec, out = write_spec(tmp_path), tmp_path / "out"
    runs = [start(spec, out, "--workers", "2"), start(spec, out)]
    codes, errors = [], []
    for proc in runs:
        _, err = proc.communicate(timeout=300)
        codes.append(proc.returncode)
        errors.append(err.decode().strip())
    assert sorted(codes) == [0, 1], errors
    loser, winner = (1, 0) if codes[1] == 1 else (0, 1)
    line = errors[loser]
    assert line.startswith("annt: error:") and "\n" not in line, line
    assert f"in use by another annt run (pid {runs[winner].pid} on " in line
    assert dump(out) == reference


@pytest.mark.parametrize("workers_", [None, 2], ids=["serial", "processes"])
def test_damaged_artifacts_are_recomputed_by_the_driver_check(tmp_path, reference_dir, reference, workers_):
    """A finished study whose trained model, set and records file were damaged or lost afterwards.

    The driver checks reused cells against the database's hashes before scheduling, so serial
    and local processes recompute the same three cells and end with the reference rows; the
    re-evaluated set's sidecar lacks its hashes (an older study's), so the worker reading it
    relies on the database's sha256, which the driver hands over with the task.
    """
    out = tmp_path / "out"
    shutil.copytree(reference_dir, out)
    con = sqlite3.connect(out / DB_NAME)
    set_path, records_path = con.execute(
        "SELECT set_path, records_path FROM results ORDER BY cell LIMIT 1").fetchone()
    other_set = con.execute("SELECT path FROM attack_sets WHERE path != ? ORDER BY cell LIMIT 1",
                            (set_path,)).fetchone()[0]
    model = con.execute("SELECT checkpoint FROM models ORDER BY cell LIMIT 1").fetchone()[0]
    con.close()
    side = out / Path(set_path).with_suffix(".json")
    meta = json.loads(side.read_text())
    del meta["sha256"], meta["npz_sha256"]
    side.write_text(json.dumps(meta))
    (out / records_path).unlink()
    damaged = out / other_set
    original = damaged.read_bytes()
    damaged.write_bytes(original[: len(original) // 2])
    weights = out / model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64] + bytes(64))
    result = run_study(SPEC, out=out, progress=False, workers=workers_)
    assert result.computed == 3 and result.reused == CELLS - 3  # model, set, evaluation
    assert damaged.read_bytes() == original and (out / records_path).is_file()
    assert dump(out) == reference


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_keeps_finished_cells(tmp_path):
    spec, out = write_spec(tmp_path), tmp_path / "out"
    proc = start(spec, out, "--workers", "2")
    wait_for(lambda: count_cells(out) >= 1 and len(workers(proc.pid)) == 2, proc, what="a first cell")
    pool = workers(proc.pid)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.decode() == "annt: interrupted; re-run the same command to resume\n"
    time.sleep(1)
    assert not any(alive(w) for w in pool)
    assert count_cells(out) >= 1
