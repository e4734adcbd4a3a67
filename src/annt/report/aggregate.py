"""Group result rows over runs: mean and sample standard deviation per configuration."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
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
    """Rows grouped by ``keys`` (insertion order kept: pass ``canonical`` rows for a stable order)."""
    out: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(tuple(row[k] for k in keys), []).append(row)
    return out


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def label_rank(labels: Sequence[str] | None) -> Callable[[str], tuple[int, str]]:
    """Sort key of attack labels: those of ``labels`` (the study spec's order) first, in that
    order, then any other label alphabetically."""
    where = {lab: i for i, lab in enumerate(dict.fromkeys(labels or ()))}
    return lambda label: (where.get(label, len(where)), _text(label))


def ordered_labels(rows: Sequence[dict[str, Any]], labels: Sequence[str] | None = None) -> list[str]:
    """The attack labels of ``rows`` in a fixed order: ``labels`` (the spec's order) first, then
    the rest alphabetically. Never the order rows were stored in: with parallel workers that is
    the order cells happened to finish (issue: table6.csv differed with ``--workers 2``)."""
    return sorted({r["label"] for r in rows}, key=label_rank(labels))


def result_key(labels: Sequence[str] | None = None) -> Callable[[dict[str, Any]], tuple]:
    """Total order of result rows: dataset, source model, attack label, source bits (bitwidth
    order), target model, target bits, mode, run, then the cell ids (ties are then impossible)."""
    rank = label_rank(labels)

    def key(r: dict[str, Any]) -> tuple:
        return (
            _text(r.get("dataset")), _text(r.get("source_model")), rank(r.get("label")),
            bits_order(_text(r.get("source_bits"))), _text(r.get("target_model")),
            bits_order(_text(r.get("target_bits"))), _text(r.get("mode")), int(r.get("run") or 0),
            _text(r.get("cell")), _text(r.get("set_cell")),
        )

    return key


def canonical(rows: Sequence[dict[str, Any]], labels: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """``rows`` sorted by ``result_key``: what every table, figure and CSV is built from, so a
    report does not depend on the executor, the worker count or the order cells finished in
    (and means over runs are summed in one order: the same float bits every time)."""
    return sorted(rows, key=result_key(labels))


def ordered_bits(rows: Sequence[dict[str, Any]], column: str) -> list[str]:
    return sorted({r[column] for r in rows}, key=bits_order)
