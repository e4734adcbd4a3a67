"""The results database of a study output directory (``results.sqlite``).

One transaction records a finished cell: its row in ``cells`` (the "done" marker), its
typed row (``models``, ``attack_sets``, ``results`` or ``progressions``) and its link to
the study that ran it. Files a cell produced are written atomically *before* that
transaction, so a process killed at any moment leaves either no row (the cell is redone)
or a row whose files are complete. Paths are stored relative to the output directory.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from annt.errors import AnntError
from annt.inputs.results_db import check_ours

DB_NAME = "results.sqlite"
SCHEMA_VERSION = "1"

Schema = Mapping[str, Mapping[str, str]]
"""Typed tables: name -> {column: SQLite type}, besides the primary key ``cell`` (the cell hash).

The store does not know which tables a study writes: the experiments layer passes its
schema (``annt.experiments.schema.TABLES``) and the store creates the missing tables.
"""

_BASE = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS studies (id TEXT PRIMARY KEY, name TEXT NOT NULL,"
    " spec TEXT NOT NULL, created REAL NOT NULL, started REAL NOT NULL, finished REAL)",
    "CREATE TABLE IF NOT EXISTS cells (hash TEXT PRIMARY KEY, kind TEXT NOT NULL,"
    " key TEXT NOT NULL, outputs TEXT NOT NULL, seconds REAL, created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS study_cells (study TEXT NOT NULL, cell TEXT NOT NULL,"
    " PRIMARY KEY (study, cell))",
]


def _table_statements(tables: Schema) -> list[str]:
    stmts = []
    for table, columns in tables.items():
        cols = ", ".join(f"{c} {t}" for c, t in columns.items())
        stmts.append(f"CREATE TABLE IF NOT EXISTS {table} (cell TEXT PRIMARY KEY, {cols})")
    return stmts


class ResultsDB:
    """Connection to ``OUTDIR/results.sqlite``; every write is one transaction."""

    def __init__(self, path: str | Path, *, create: bool = True, tables: Schema | None = None) -> None:
        self.path = Path(path)
        self._columns: dict[str, tuple[str, ...]] = {}
        if not create and not self.path.is_file():
            raise AnntError(f"no results database at {self.path}; run a study there first")
        check_ours(self.path)  # a foreign file is refused before anything writes to it
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # autocommit mode: transactions are opened explicitly by ``transaction()``
            self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            with self.transaction() as c:
                for stmt in _BASE + _table_statements(tables or {}):
                    c.execute(stmt)
                c.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
                )
        except sqlite3.DatabaseError as exc:
            raise AnntError(f"{self.path} is not a usable results database: {exc}") from None
        version = self.conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise AnntError(f"{self.path} has results schema {version}, this ANNT reads {SCHEMA_VERSION}")

    @classmethod
    def in_dir(cls, out_dir: str | Path, *, create: bool = True, tables: Schema | None = None) -> ResultsDB:
        return cls(Path(out_dir) / DB_NAME, create=create, tables=tables)

    def ensure_tables(self, tables: Schema) -> None:
        """Create missing typed tables and add missing columns (NULL in older rows); nothing is dropped."""
        with self.transaction() as c:
            for stmt in _table_statements(tables):
                c.execute(stmt)
            for table, columns in tables.items():
                have = {r[1] for r in c.execute(f"PRAGMA table_info({_quoted(table)})")}
                for column, kind in columns.items():
                    if column not in have:
                        c.execute(f"ALTER TABLE {_quoted(table)} ADD COLUMN {_quoted(column)} {kind}")
        self._columns.clear()

    def columns(self, table: str) -> tuple[str, ...]:
        """Columns of a typed table besides ``cell``; ``ValueError`` when there is no such table."""
        if table not in self._columns:
            cols = tuple(r[1] for r in self.conn.execute(f"PRAGMA table_info({_quoted(table)})"))
            if not cols or table in _SYSTEM:
                raise ValueError(f"unknown table {table!r}")
            self._columns[table] = tuple(c for c in cols if c != "cell")
        return self._columns[table]

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT`` (rolled back on any exception)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ------------------------------------------------------------------ studies
    def start_study(self, study_id: str, name: str, spec: Mapping[str, Any]) -> None:
        """Register a study run; re-running the same spec marks it started (latest) again.

        A re-run starts with no cells linked to the study: it links again every cell it uses
        (reused or computed). The same spec can name other inputs than before (``zoo:NAME``
        retrained, a checkpoint folder overwritten), and the earlier run's cells must then drop
        out of this study's tables instead of being averaged with the new ones. They stay in
        the database (``annt report --study all`` still shows them).
        """
        now = time.time()
        with self.transaction() as c:
            c.execute(
                "INSERT INTO studies (id, name, spec, created, started) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET started = excluded.started, finished = NULL",
                (study_id, name, json.dumps(spec, sort_keys=True), now, now),
            )
            c.execute("DELETE FROM study_cells WHERE study = ?", (study_id,))

    def finish_study(self, study_id: str) -> None:
        with self.transaction() as c:
            c.execute("UPDATE studies SET finished = ? WHERE id = ?", (time.time(), study_id))

    def latest_study(self) -> str | None:
        row = self.conn.execute("SELECT id FROM studies ORDER BY started DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def studies(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM studies ORDER BY created")]

    # ------------------------------------------------------------------ cells
    def cell_outputs(self, cell: str) -> dict[str, Any] | None:
        """The outputs of a finished cell, or ``None`` when it has not finished."""
        row = self.conn.execute("SELECT outputs FROM cells WHERE hash = ?", (cell,)).fetchone()
        return json.loads(row[0]) if row else None

    def link(self, study: str, cell: str) -> None:
        """Record that ``study`` uses an already finished cell."""
        with self.transaction() as c:
            c.execute("INSERT OR IGNORE INTO study_cells (study, cell) VALUES (?, ?)", (study, cell))

    def complete(
        self,
        cell: str,
        kind: str,
        key: Mapping[str, Any],
        outputs: Mapping[str, Any],
        *,
        table: str | None = None,
        row: Mapping[str, Any] | None = None,
        study: str | None = None,
        seconds: float | None = None,
    ) -> None:
        """Mark ``cell`` done, with its typed row, in one transaction."""
        with self.transaction() as c:
            if table is not None:
                columns = self.columns(table)
                unknown = set(row or {}) - set(columns)
                if unknown:
                    raise ValueError(f"unknown {table} columns {sorted(unknown)}")
                values = [cell] + [_db_value((row or {}).get(col)) for col in columns]
                marks = ", ".join("?" * (len(columns) + 1))
                c.execute(
                    f"INSERT OR REPLACE INTO {table} (cell, {', '.join(columns)}) VALUES ({marks})",
                    values,
                )
            c.execute(
                "INSERT OR IGNORE INTO cells (hash, kind, key, outputs, seconds, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (cell, kind, json.dumps(key, sort_keys=True), json.dumps(outputs, sort_keys=True),
                 seconds, time.time()),
            )
            if study is not None:
                c.execute("INSERT OR IGNORE INTO study_cells (study, cell) VALUES (?, ?)", (study, cell))

    def forget(self, cell: str) -> None:
        """Drop a finished cell's done marker (its artifact was found damaged: it is recomputed)."""
        with self.transaction() as c:
            c.execute("DELETE FROM cells WHERE hash = ?", (cell,))

    def value(self, table: str, cell: str, column: str) -> Any:
        """One column of a cell's typed row (``None`` when absent)."""
        if column not in self.columns(table):
            raise ValueError(f"unknown column {table}.{column}")
        row = self.conn.execute(f"SELECT {_quoted(column)} FROM {_quoted(table)} WHERE cell = ?", (cell,)).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------------ queries
    def rows(self, table: str, study: str | None = None) -> list[dict[str, Any]]:
        """All rows of a typed table, or those of one study's cells, in insertion order."""
        self.columns(table)  # ValueError for an unknown table
        if study is None:
            cur = self.conn.execute(f"SELECT * FROM {table} ORDER BY rowid")
        else:
            cur = self.conn.execute(
                f"SELECT t.* FROM {table} t JOIN study_cells s ON s.cell = t.cell"
                " WHERE s.study = ? ORDER BY t.rowid",
                (study,),
            )
        return [dict(r) for r in cur]


def _db_value(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    return value


def read_results(out_dir: str | Path, table: str = "results", study: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``OUTDIR/results.sqlite`` without keeping a connection open."""
    with closing(ResultsDB.in_dir(out_dir, create=False)) as db:
        return db.rows(table, study)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_SYSTEM = frozenset({"meta", "studies", "cells", "study_cells"})
