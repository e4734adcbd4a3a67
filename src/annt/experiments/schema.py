"""The study's result tables: one schema per table, the only place a column is declared.

``ResultsDB`` (the store) creates and checks tables from this mapping, so the store knows
nothing about metrics; the cells build their rows with these names. Adding a column is one
edit here plus the value in the cell that computes it (a missing value is stored as NULL).
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

from annt.metrics.records import SUMMARY_KEYS
from annt.store.results import DB_NAME

INT, REAL, TEXT = "INTEGER", "REAL", "TEXT"


def _typed(**columns: str) -> dict[str, str]:
    return dict(columns)


_SUMMARY_INT = {"n_kept", "n_correct", "n_success", "n_flagged"}

# table -> {column: SQLite type}; every table also has the primary key ``cell`` (the cell hash)
TABLES: dict[str, dict[str, str]] = {
    "models": _typed(
        dataset=TEXT, model=TEXT, bits=TEXT, bits_tag=TEXT, origin=TEXT, checkpoint=TEXT, sha256=TEXT,
        test_accuracy=REAL, validation_accuracy=REAL, epochs=INT,
    ),
    "attack_sets": _typed(
        dataset=TEXT, model=TEXT, bits=TEXT, bits_tag=TEXT, source_sha=TEXT, attack=TEXT, label=TEXT,
        params=TEXT, run=INT, seed=INT, samples=INT, path=TEXT, sha256=TEXT, n=INT,
        source_success_rate=REAL, mean_iterations=REAL, mean_forward_passes=REAL,
        mean_backward_passes=REAL, seconds=REAL,
    ),
    "results": {
        **_typed(
            dataset=TEXT, attack=TEXT, label=TEXT, params=TEXT, run=INT, mode=TEXT, source_model=TEXT,
            source_bits=TEXT, target_model=TEXT, target_bits=TEXT, source_sha=TEXT, target_sha=TEXT,
            set_cell=TEXT, set_path=TEXT, records_path=TEXT, n_total=INT,
        ),
        **{k: INT if k in _SUMMARY_INT else REAL for k in SUMMARY_KEYS},
    },
    "progressions": _typed(dataset=TEXT, model=TEXT, bits=TEXT, bits_tag=TEXT, label=TEXT, path=TEXT,
                           iterations=TEXT),
}

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
