"""Group result rows over runs: mean and sample standard deviation per configuration."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


def bits_order(tag: str) -> tuple[int, int, str]:
    """Sort key putting ``fp`` first, then ``1bit, 2bit, ...``, then mixed ``wXaYgZ`` tags."""
    if tag == "fp":
        return (0, 0, tag)
    m = re.fullmatch(r"(\d+)bit", tag)
    if m:
        return (1, int(m.group(1)), tag)
    return (2, 0, tag)


def bits_label(tag: str) -> str:
    """Paper spelling: ``FP``, ``1``, ``2`` ... (mixed tags unchanged)."""
    if tag == "fp":
        return "FP"
    m = re.fullmatch(r"(\d+)bit", tag)
    return m.group(1) if m else tag


@dataclass(frozen=True)
class Stat:
    """Mean and sample std (ddof = 1; NaN with fewer than two finite values) over runs."""

    mean: float
    std: float
    n: int

    def text(self, digits: int = 3) -> str:
        if math.isnan(self.mean):
            return "-"
        if self.n < 2 or math.isnan(self.std):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def stat(values: Iterable[Any]) -> Stat:
    finite = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not finite:
        return Stat(math.nan, math.nan, 0)
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return Stat(mean, math.nan, len(finite))
    var = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)
    return Stat(mean, math.sqrt(var), len(finite))


def group(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[tuple, list[dict[str, Any]]]:
    """Rows grouped by ``keys`` (insertion order kept)."""
    out: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(tuple(row[k] for k in keys), []).append(row)
    return out


def ordered_labels(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Attack labels in the order the study first ran them."""
    return list(dict.fromkeys(r["label"] for r in rows))


def ordered_bits(rows: Sequence[dict[str, Any]], column: str) -> list[str]:
    return sorted({r[column] for r in rows}, key=bits_order)
