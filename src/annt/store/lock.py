"""One writer per output folder: ``annt run`` holds ``OUTDIR/.annt.lock`` while it runs.

The lock is an advisory ``flock`` on that file, which the kernel releases when the holder
exits in any way (``kill -9`` included), so a lock left by a killed run is stale by
construction: the next run sees the old holder's details, says it takes over, and runs.
The file records the holder (pid, host, start time) for the one-line error of a second run.

Where Python has no ``fcntl`` module (Windows) there is no advisory lock: the folder is not
guarded, and acquiring says so in one line (``NO_LOCK_WARNING``) on ``say`` (stderr by default)
instead of silently doing nothing; the run goes on. Two runs writing one folder there at once
is the user's to avoid.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from annt.errors import AnntError

LOCK_NAME = ".annt.lock"

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, runs are not guarded (see the module docstring)
    fcntl = None  # type: ignore[assignment]

NO_LOCK_WARNING = ("annt: warning: no file locking on this platform (Python has no fcntl module): {folder}"
                   " is not guarded against a second annt run writing it at the same time")


def _holder_text(info: dict[str, Any]) -> str:
    started = info.get("started")
    when = datetime.fromtimestamp(started, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if started else "?"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {when}"


class OutputLock:
    """``with OutputLock(out_dir, wait=False):`` -- the only writer of ``out_dir`` inside the block."""

    def __init__(self, out_dir: str | Path, *, wait: bool = False, poll: float = 1.0,
                 say: TextIO | None = None) -> None:
        self.path = Path(out_dir) / LOCK_NAME
        self.wait, self.poll = wait, poll
        self.say = say if say is not None else sys.stderr
        self._fd: int | None = None

    def holder(self, settle: float = 0.0) -> dict[str, Any]:
        """The holder's details; ``settle`` seconds to wait for a holder that has just taken the
        lock and not yet written them."""
        deadline = time.monotonic() + settle
        while True:
            try:
                info = json.loads(self.path.read_text() or "{}")
            except (OSError, ValueError):
                info = {}
            if info.get("pid") or time.monotonic() >= deadline:
                return info
            time.sleep(0.05)

    def _try(self) -> bool:
        assert self._fd is not None and fcntl is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def acquire(self) -> None:
        if fcntl is None:
            print(NO_LOCK_WARNING.format(folder=self.path.parent), file=self.say, flush=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        waited = False
        while not self._try():
            if not self.wait:
                os.close(self._fd)
                self._fd = None
                raise AnntError(f"{self.path.parent} is in use by another annt run ({_holder_text(self.holder(2.0))});"
                                " wait for it to finish or pass --wait")
            if not waited:
                print(f"annt: waiting for {self.path.parent}: in use by {_holder_text(self.holder(2.0))}",
                      file=self.say, flush=True)
                waited = True
            time.sleep(self.poll)
        old = self.holder()
        if old.get("pid") and not waited:  # the file outlived its holder: a killed or crashed run
            print(f"annt: taking over the stale lock of {self.path.parent} ({_holder_text(old)},"
                  " no longer running)", file=self.say, flush=True)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(info).encode(), 0)

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # an empty file: nobody holds it (a killed run leaves its details)
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
