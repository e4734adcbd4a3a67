"""One writer per output folder: a second run stops (or waits) and a stale lock is taken over."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys

import pytest

from annt.errors import AnntError
from annt.store.lock import LOCK_NAME, OutputLock

from .helpers import CELLS, count_cells, dump, start, wait_for, write_spec


def test_second_holder_is_refused_with_the_holder_named(tmp_path):
    with OutputLock(tmp_path), pytest.raises(AnntError, match=f"in use by another annt run \\(pid {os.getpid()} on "):
        OutputLock(tmp_path).acquire()
    with OutputLock(tmp_path):  # released: free again
        pass


def test_stale_lock_of_a_killed_run_is_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "elsewhere", "started": 0}))
    said = io.StringIO()
    with OutputLock(tmp_path, say=said):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "taking over the stale lock" in said.getvalue() and "pid 999999" in said.getvalue()


@pytest.mark.slow
def test_two_runs_at_once_lose_nothing(tmp_path, reference):
    spec, out = write_spec(tmp_path), tmp_path / "out"
    first = start(spec, out)
    wait_for(lambda: count_cells(out) >= 1, first, what="the first run")
    second = start(spec, out)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 1
    line = err.decode().strip()
    assert line.startswith("annt: error:") and "\n" not in line and f"pid {first.pid}" in line
    _, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1.decode()[-2000:]
    assert dump(out) == reference


def test_wait_waits_for_the_holder(tmp_path, reference):
    spec, out = write_spec(tmp_path), tmp_path / "out"
    log = tmp_path / "stderr.txt"
    with OutputLock(out), log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "annt.cli.main", "run", str(spec), "--out", str(out),
                                 "--quiet", "--wait"], stdout=subprocess.PIPE, stderr=err,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        wait_for(lambda: b"waiting for" in log.read_bytes(), proc, what="the waiting message")
        assert count_cells(out) == 0  # nothing done while the lock is held
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert f"pid {os.getpid()}" in log.read_text()
    assert json.loads(stdout)["cells_computed"] == CELLS
    assert dump(out) == reference


@pytest.mark.slow
def test_killed_run_leaves_a_lock_the_next_run_takes_over(tmp_path, reference):
    spec, out = write_spec(tmp_path), tmp_path / "out"
    proc = start(spec, out)
    wait_for(lambda: count_cells(out) >= 1, proc, what="a first cell")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = start(spec, out)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err.decode()[-2000:]
    assert "taking over the stale lock" in err.decode() and f"pid {proc.pid}" in err.decode()
    assert dump(out) == reference
