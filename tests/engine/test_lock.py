"""One writer per output folder: a second run stops (or waits) and a stale lock is taken over."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from annt.errors import AnntError
from annt.store.lock import LOCK_NAME, OutputLock

from .helpers import CELLS, dump, wait_for, write_spec


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


def test_wait_waits_for_the_holder(tmp_path, reference_dir, reference):
    """``--wait``: nothing happens while another holds the folder, then the run goes on (here all reused)."""
    spec, out = write_spec(tmp_path), tmp_path / "out"
    shutil.copytree(reference_dir, out)
    log = tmp_path / "stderr.txt"
    with OutputLock(out), log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "annt.cli.main", "run", str(spec), "--out", str(out),
                                 "--quiet", "--wait"], stdout=subprocess.PIPE, stderr=err,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        wait_for(lambda: b"waiting for" in log.read_bytes(), proc, what="the waiting message")
        time.sleep(1)
        assert proc.poll() is None  # still waiting while the lock is held
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert f"pid {os.getpid()}" in log.read_text()
    assert json.loads(stdout)["cells_reused"] == CELLS
    assert dump(out) == reference


def test_without_fcntl_the_lock_says_in_one_line_that_it_does_not_guard(tmp_path, monkeypatch):
    """Where Python has no ``fcntl`` (Windows) the folder is not guarded, and the lock says so."""
    import importlib.util

    import annt.store.lock as real

    monkeypatch.setitem(sys.modules, "fcntl", None)  # ``import fcntl`` raises ImportError
    spec = importlib.util.spec_from_file_location("annt_lock_without_fcntl", real.__file__)
    bare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bare)  # a separate copy: the real module keeps its fcntl
    assert bare.fcntl is None and real.fcntl is not None
    said = io.StringIO()
    with bare.OutputLock(tmp_path, say=said), bare.OutputLock(tmp_path, say=said):  # two holders
        pass
    lines = said.getvalue().splitlines()
    assert lines == [bare.NO_LOCK_WARNING.format(folder=tmp_path)] * 2
    assert "no file locking" in lines[0] and str(tmp_path) in lines[0] and "not guarded" in lines[0]
    assert not (tmp_path / LOCK_NAME).exists()  # no lock file that would claim otherwise
