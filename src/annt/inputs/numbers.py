"""Numbers from users: seeds every generator accepts, finite floats, bounded counts."""

from __future__ import annotations

import argparse
import math
from typing import Any

from annt.errors import AnntError

SEED_MAX = 2**32 - 1  # numpy, torch and the trainer's per-epoch seed (seed * 100003 + epoch) all accept it
COUNT_MAX = 1_000_000  # iterations, steps, trials: more would run for days, so it is a typo


def check_seed(value: Any, where: str) -> int:
    """An integer seed in ``0..SEED_MAX`` (booleans and floats are not seeds)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise AnntError(f"{where}: a seed must be an integer, got {value!r}")
    if not 0 <= value <= SEED_MAX:
        raise AnntError(f"{where}: seed {value} is outside 0..{SEED_MAX}")
    return value


def seed_arg(text: str) -> int:
    """argparse type for ``--seed``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed in 0..{SEED_MAX}, got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"seed {value} is outside 0..{SEED_MAX}")
    return value


def finite_float_arg(text: str) -> float:
    """argparse type for real-valued options: decimal or scientific notation, finite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 0.1 or 1e-3, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def milestone_list(text: str) -> list[int]:
    """argparse type for ``--lr-milestones 32,48``: positive, strictly increasing epochs."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise argparse.ArgumentTypeError(f"expected epochs like 32,48, got {text!r}")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs like 32,48, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"milestones are epochs >= 1, got {text!r}")
    if values != sorted(set(values)):
        raise argparse.ArgumentTypeError(f"milestones must increase, got {text!r}")
    return values
