"""Atomic file writes: write to a temporary sibling, fsync, then rename into place.

A crash at any moment leaves either the old file or the new one, never half of one. The
temporary name carries the writer's process id, so a later write to the same file removes
what a killed process left behind (``.NAME.PID.XXXX.tmp``) without touching live writers'
files. Files get the usual mode (0666 minus the umask), like the results database.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

_UMASK: int | None = None


def file_mode() -> int:
    """0666 minus the process umask (read once: ``os.umask`` can only be read by setting it)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return 0o666 & ~_UMASK


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def clean_stale_temps(path: str | Path) -> list[Path]:
    """Remove temporaries of ``path`` left by writers that no longer run; returns them."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.[^.]+\.tmp$")
    removed = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    for sib in siblings:
        m = pattern.match(sib.name)
        if m and not _alive(int(m.group(1))):
            sib.unlink(missing_ok=True)
            removed.append(sib)
    return removed


def atomic_write(path: str | Path, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path`` and atomically rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """Compressed npz of plain (non-object) arrays, so it loads with ``allow_pickle=False``."""
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise TypeError(f"npz member {key!r} has dtype object; refusing to pickle it")
    return atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
