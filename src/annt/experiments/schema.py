"""The study's result tables, collected from the cell kinds that write them.

``SCHEMA`` holds every table by name (each declared with its kinds in ``annt.experiments.kinds``;
the vocabulary, ``Field`` / ``Table`` / ``Facts``, is ``annt.experiments.table``). Cells look
their table up here at call time, so a test may add a table or grow one (``SCHEMA[name] = ...``):
the cell key, the set metadata, the row and the SQLite table all follow. ``TABLES`` is the same
as ``ResultsDB`` takes it; ``comparable_rows`` compares two study folders' results.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path

from annt.experiments.kinds import KINDS, SET_SHA256, CellKind, kind_of
from annt.experiments.table import INT, REAL, TEXT, Facts, Field, Table, fact
from annt.store.results import DB_NAME

__all__ = ["INT", "REAL", "SCHEMA", "SET_SHA256", "TABLES", "TEXT", "VOLATILE", "Facts", "Field", "Table",
           "comparable_rows", "fact", "table_of"]

SCHEMA: dict[str, Table] = {k.table.name: k.table for k in KINDS.values()}
"""Every result table by name (looked up at call time: a test may add one or grow one)."""


def table_of(kind: str | CellKind) -> Table:
    """The table (as ``SCHEMA`` holds it now) that a cell of ``kind`` writes; unknown kinds raise."""
    return SCHEMA[(kind if isinstance(kind, CellKind) else kind_of(kind)).table.name]


class _Columns(Mapping[str, Mapping[str, str]]):
    """``{table: {column: SQLite type}}``, read from ``SCHEMA`` whenever it is used."""

    def __getitem__(self, name: str) -> Mapping[str, str]:
        return SCHEMA[name].columns

    def __iter__(self) -> Iterator[str]:
        return iter(SCHEMA)

    def __len__(self) -> int:
        return len(SCHEMA)

    def __repr__(self) -> str:
        return repr(dict(self))


TABLES: Mapping[str, Mapping[str, str]] = _Columns()
"""The typed tables as ``ResultsDB`` takes them (``tables=`` / ``ensure_tables``): derived from ``SCHEMA``."""

VOLATILE = frozenset({"seconds"})
"""Wall-clock columns: the only values that differ between two runs of the same cells."""


def comparable_rows(out_dir: Path) -> dict[str, list[tuple]]:
    """A study folder's results as comparable values: every typed table's rows without the
    wall-clock columns (NaN spelt out, so equal rows compare equal) and the cells table, sorted
    by cell hash. Executors and resumes are checked by comparing two of these."""
    con = sqlite3.connect(Path(out_dir) / DB_NAME)
    con.row_factory = sqlite3.Row
    try:
        rows: dict[str, list[tuple]] = {}
        for table in TABLES:
            found = [dict(r) for r in con.execute(f"SELECT * FROM {table}")]
            rows[table] = sorted(
                (tuple((k, "nan" if isinstance(v, float) and math.isnan(v) else v)
                       for k, v in sorted(r.items()) if k not in VOLATILE) for r in found),
                key=lambda row: dict(row)["cell"],
            )
        rows["cells"] = sorted(tuple(r) for r in con.execute("SELECT hash, kind, key, outputs FROM cells"))
    finally:
        con.close()
    return rows
