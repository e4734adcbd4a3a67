"""Provenance: what wrote an artefact (ANNT, torch, Python, device, numeric settings, source revision).

Checkpoints, adversarial sets, diagnoses and reports record it as an informational
``provenance`` field (or ``provenance.json`` beside a report). It never enters a study cell's
identity, so results stay reusable when it changes.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from annt.version import __version__

FIELD = "provenance"
_GIT_TIMEOUT_S = 5


def describe_device(device: str | torch.device | None = None) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H200)``; ``None``: the CPU."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type != "cuda":
        return dev.type
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    try:
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    except (RuntimeError, AssertionError):  # no CUDA here (a record read back elsewhere)
        return f"cuda:{index}"


def _git(root: Path, *args: str) -> str | None:
    """Output of a read-only git command in ``root``, or None (no git, not a checkout, error)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # never take the index lock of a live tree
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=_GIT_TIMEOUT_S, env=env, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def source_revision() -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` when ANNT runs from a git checkout, else None.

    ``dirty``: tracked files differ from the commit (None when that could not be read).
    Read once per process.
    """
    root = Path(__file__).resolve().parents[2]  # src/annt/provenance.py -> the checkout
    if not (root / ".git").exists() or not (root / "pyproject.toml").is_file():
        return None
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        return None
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def provenance(device: str | torch.device | None = None) -> dict[str, Any]:
    """The record for an artefact computed on ``device`` (default: the CPU), taken now."""
    dev_type = torch.device(device).type if device is not None else "cpu"
    return {
        "annt_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": describe_device(device),
        "default_dtype": str(torch.get_default_dtype()).removeprefix("torch."),
        "autocast": torch.is_autocast_enabled(dev_type),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "threads": torch.get_num_threads(),
        "source": source_revision(),
    }
