"""A small real study (two trained LeNet-5, FGSM and UAP, transfer) and a DB dump to compare runs."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

from annt.experiments.schema import comparable_rows
from annt.store.results import DB_NAME

SPEC = {
    "name": "engine",
    "datasets": ["mnist-embedded"],
    "models": [{"name": "lenet5", "bits": ["fp", 1],
                "train": {"epochs": 1, "train_limit": 256, "validation_size": 100, "batch_size": 64}}],
    "attacks": [{"name": "fgsm", "params": {"eps": 0.1}, "batch_size": 10},
                {"name": "uap", "params": {"xi": 0.1, "attacker_eps": 0.02, "max_iter": 2}}],
    "samples": 20,
    "runs": 1,
    "transfer": "bitwidths",
    "device": "cpu",
    "threads": 1,
    "report": {"enabled": False},
}
CELLS = 2 + 2 * 2 * 3  # models + sources x attacks x (craft, direct, transfer)


def write_spec(folder: Path, **over) -> Path:
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **over}))
    return path


dump = comparable_rows  # one definition, in the experiments layer


def count_cells(out: Path) -> int:
    try:
        con = sqlite3.connect(out / DB_NAME, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM cells").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # no database or no schema yet
        return 0


def _default_sigint() -> None:
    # a test suite started in the background (``cmd &`` in a script) inherits SIGINT ignored,
    # and Python then never raises KeyboardInterrupt: give the run a terminal's Ctrl-C back
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(spec: Path, out: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "annt.cli.main", "run", str(spec), "--out", str(out), "--quiet", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, preexec_fn=_default_sigint,
    )


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 180, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {what}: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def workers(pid: int) -> list[int]:
    """The spawned pool workers among the children of ``pid`` (not multiprocessing's tracker)."""
    found = []
    for child in children(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
