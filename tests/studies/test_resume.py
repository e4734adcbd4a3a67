"""A study killed with SIGKILL (twice) and resumed ends in the same database as an uninterrupted run."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from annt.experiments.schema import TABLES
from annt.store.results import DB_NAME

SPEC = {
    "name": "killme",
    "datasets": ["mnist-embedded"],
    "models": [{"name": "lenet5", "bits": ["fp", 1],
                "train": {"epochs": 1, "train_limit": 640, "validation_size": 200}}],
    "attacks": [{"name": "fgsm", "params": {"eps": 0.1}, "batch_size": 10}],
    "samples": 30,
    "runs": 2,
    "transfer": "bitwidths",
    "device": "cpu",
    "threads": 1,
    "report": {"enabled": False},
}
TOTAL_CELLS = 2 + 2 * 2 * 1 * 3  # models + runs x sources x attacks x (craft, direct, transfer)
VOLATILE = {"seconds"}  # wall-clock columns


def _start(spec_path: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.Popen(
        [sys.executable, "-m", "annt.cli.main", "run", str(spec_path), "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )


def _cells(out: Path) -> int:
    db = out / DB_NAME
    if not db.is_file():
        return 0
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM cells").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # schema not created yet
        return 0


def _kill_after(spec_path: Path, out: Path, cells: int, timeout: float = 120) -> int:
    """Run the study and SIGKILL it as soon as ``cells`` cells are recorded."""
    proc = _start(spec_path, out)
    deadline = time.monotonic() + timeout
    while _cells(out) < cells:
        if proc.poll() is not None:
            pytest.fail(f"study ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("study too slow")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return _cells(out)


def _finish(spec_path: Path, out: Path) -> None:
    proc = _start(spec_path, out)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]


def _dump(out: Path) -> dict[str, list[tuple]]:
    """Every typed table's rows (without wall-clock columns), sorted by cell hash."""
    con = sqlite3.connect(out / DB_NAME)
    con.row_factory = sqlite3.Row
    dump = {}
    for table in TABLES:
        rows = [dict(r) for r in con.execute(f"SELECT * FROM {table}")]
        dump[table] = sorted(
            tuple((k, "nan" if isinstance(v, float) and math.isnan(v) else v)
                  for k, v in sorted(r.items()) if k not in VOLATILE)
            for r in rows
        )
    dump["cells"] = sorted(tuple(r) for r in con.execute("SELECT hash, kind, key, outputs FROM cells"))
    con.close()
    return dump


@pytest.mark.slow
def test_sigkill_and_resume_gives_the_same_database(tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    interrupted, reference = tmp_path / "interrupted", tmp_path / "reference"

    first = _kill_after(spec_path, interrupted, 1)  # during the second model's training
    assert first < TOTAL_CELLS
    second = _kill_after(spec_path, interrupted, first + 5)  # in the middle of crafting / evaluating
    assert first < second < TOTAL_CELLS
    _finish(spec_path, interrupted)
    _finish(spec_path, reference)

    got, want = _dump(interrupted), _dump(reference)
    assert len(want["cells"]) == TOTAL_CELLS
    assert len(want["results"]) == 2 * 2 * 2  # runs x sources x (direct + transfer)
    assert got == want
    # every file the database references exists and is complete
    con = sqlite3.connect(interrupted / DB_NAME)
    for (path,) in con.execute("SELECT path FROM attack_sets UNION SELECT records_path FROM results"):
        assert (interrupted / path).is_file()
    con.close()
