"""The study's result tables: one schema per table, the only place a field is named.

Each table (``models``, ``attack_sets``, ``results``, ``progressions``) is one ``Table``: a
list of ``Field``s, each saying how its value is obtained from a cell's *facts* and where it
goes: a column of the table (``type``), the cell's key (``key``: its identity, hashed) and
the metadata sidecar of the artifact the cell writes (``meta``; adversarial sets). The cell
key (``Table.key``), the sidecar (``Table.meta``), the database row (``Table.row``) and the
SQLite table itself (``Table.columns``, created and grown by ``ResultsDB.ensure_tables``) are
all derived from that list, so adding a column is one edit here: a ``Field`` whose value is
computed from facts the cell already has.

Facts (``annt.experiments.steps.given`` and the steps' measurements) are attributes of a
``Facts`` object: known in the driver before a cell runs (``plan``, ``cell``, ``slot``,
``attack``, ``run``, ``source`` / ``target`` models, the ``crafted`` set, seeds) and, in the
worker, what the cell measured (``path``, ``sha256``, ``summary``, ``seconds`` ...). The key
is derived in the driver from the first kind only: a key field reading a measured fact fails.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from annt.experiments.attack_api import UNIVERSAL
from annt.metrics.records import SUMMARY_KEYS
from annt.store.results import DB_NAME, ResultsDB

INT, REAL, TEXT = "INTEGER", "REAL", "TEXT"


class Facts(SimpleNamespace):
    """What is known about one cell (attributes); ``but(**more)`` adds measured values."""

    def but(self, **more: Any) -> Facts:
        return Facts(**{**vars(self), **more})


@dataclass(frozen=True)
class Field:
    """One named value of a table's cells.

    ``type``: its SQLite column type (``None``: not a column). ``key`` / ``meta``: its name in
    the cell key / the artifact's metadata (``True``: ``name``; ``None``: not there).
    ``kinds``: the cell kinds it applies to (``None``: all the table's kinds).
    """

    name: str
    value: Callable[[Facts], Any]
    type: str | None = None
    key: str | bool | None = None
    meta: str | bool | None = None
    kinds: frozenset[str] | None = None

    def applies(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds

    @property
    def key_name(self) -> str | None:
        return self.name if self.key is True else (self.key or None)

    @property
    def meta_name(self) -> str | None:
        return self.name if self.meta is True else (self.meta or None)


@dataclass(frozen=True)
class Table:
    """A result table: its name, the ``kind`` its cells have in the key and ``cells``, its fields."""

    name: str
    kind: str
    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        for role, names in (("column", [f.name for f in self.fields if f.type]),
                            ("key", [f.key_name for f in self.fields if f.key_name] + ["kind"]),
                            ("meta", [f.meta_name for f in self.fields if f.meta_name])):
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ValueError(f"table {self.name}: {role} names {sorted(dup)} appear twice")
        if "cell" in (f.name for f in self.fields if f.type):
            raise ValueError(f"table {self.name}: 'cell' is the primary key, not a field")

    @property
    def columns(self) -> dict[str, str]:
        """``{column: SQLite type}`` besides the primary key ``cell``, in table order."""
        return {f.name: f.type for f in self.fields if f.type}

    def key(self, facts: Facts, kind: str) -> dict[str, Any]:
        """The cell key (its identity; ``CellBook.identify`` adds the ANNT version and hashes it)."""
        found = {f.key_name: f.value(facts) for f in self.fields if f.key_name and f.applies(kind)}
        return {"kind": self.kind, **found}

    def meta(self, facts: Facts, kind: str) -> dict[str, Any]:
        """The artifact's metadata sidecar fields."""
        return {f.meta_name: f.value(facts) for f in self.fields if f.meta_name and f.applies(kind)}

    def row(self, facts: Facts, kind: str) -> dict[str, Any]:
        """The database row (columns that do not apply to ``kind`` stay NULL)."""
        return {f.name: f.value(facts) for f in self.fields if f.type and f.applies(kind)}


def _kinds(*names: str) -> frozenset[str]:
    return frozenset(names)


def fact(name: str) -> Callable[[Facts], Any]:
    """A field whose value is the fact ``name`` (usually a measured one)."""
    return lambda f: getattr(f, name)


_SUMMARY_INT = {"n_kept", "n_correct", "n_success", "n_flagged"}

MODELS = Table("models", "model", (
    Field("dataset", lambda f: f.slot.dataset, TEXT, key=True),
    Field("model", lambda f: f.slot.model, TEXT, key=True),
    Field("bits", lambda f: str(f.slot.bits), TEXT, key=True),
    Field("bits_tag", lambda f: f.slot.bits.tag, TEXT),
    Field("origin", lambda f: "checkpoint" if f.cell.kind == "load" else "train", TEXT, key=True),
    Field("checkpoint", fact("checkpoint"), TEXT),  # the zoo name or given folder; a trained model's best/
    Field("sha256", fact("sha256"), TEXT),  # weights; a given checkpoint's is known before loading:
    Field("given_sha256", fact("sha256"), key="sha256", kinds=_kinds("load")),
    Field("recipe", lambda f: f.slot.recipe, key=True, kinds=_kinds("train")),
    Field("train_limit", lambda f: f.slot.train.train_limit, key=True, kinds=_kinds("train")),
    Field("train_seed", lambda f: f.slot.train.seed, key="seed", kinds=_kinds("train")),
    Field("test_accuracy", fact("test_accuracy"), REAL),
    Field("validation_accuracy", fact("validation_accuracy"), REAL),
    Field("epochs", fact("epochs"), INT),
))

SET_SHA256 = "sha256"
"""The ``attack_sets`` column the cells reading a set check its file against (``recorded_set_sha``)."""

ATTACK_SETS = Table("attack_sets", "craft", (
    Field("dataset", lambda f: f.slot.dataset, TEXT, key=True, meta=True),
    Field("split", lambda f: "test", meta=True),
    Field("model", lambda f: f.slot.model, TEXT, meta=True),
    Field("bits", lambda f: str(f.slot.bits), TEXT, meta=True),
    Field("bits_tag", lambda f: f.slot.bits.tag, TEXT),
    Field("source_sha", lambda f: f.source.sha256, TEXT, key="source", meta="weights_sha256"),
    Field("source_checkpoint", lambda f: str(f.source.folder), meta="checkpoint"),
    Field("attack", lambda f: f.attack.name, TEXT, key=True, meta=True),
    Field("label", lambda f: f.attack.label, TEXT, key=True, meta=True),
    Field("params", lambda f: f.attack.params, TEXT, key=True, meta=True),
    Field("backend", lambda f: f.attack.backend, key=True, meta=True),
    Field("chunk", lambda f: None if f.attack.name in UNIVERSAL else f.attack.chunk, key=True),
    Field("run", lambda f: f.run, INT, key=True, meta=True),
    Field("seed", lambda f: f.attack_seed, INT, key="attack_seed", meta=True),
    Field("sample_seed", lambda f: f.sample_seed, key=True, meta=True),
    Field("requested_samples", lambda f: f.plan.spec.samples, key="samples"),
    Field("samples", fact("n"), INT),  # images sampled (fewer than requested when the test split lacks them)
    Field("cell", lambda f: f.hash, meta=True),
    Field("path", fact("path"), TEXT),
    Field(SET_SHA256, fact("sha256"), TEXT),  # the npz file's (the sidecar seals itself)
    Field("n", fact("n"), INT),
    Field("source_success_rate", fact("source_success_rate"), REAL),
    Field("mean_iterations", fact("mean_iterations"), REAL),
    Field("mean_forward_passes", fact("mean_forward_passes"), REAL),
    Field("mean_backward_passes", fact("mean_backward_passes"), REAL),
    Field("seconds", fact("seconds"), REAL, meta=True),
))

RESULTS = Table("results", "evaluate", (
    Field("dataset", lambda f: f.slot.dataset, TEXT),
    Field("attack", lambda f: f.attack.name, TEXT),
    Field("label", lambda f: f.attack.label, TEXT),
    Field("params", lambda f: f.attack.params, TEXT),
    Field("run", lambda f: f.run, INT),
    Field("mode", lambda f: "direct" if f.cell.kind == "evaluate" else "transfer", TEXT, key=True),
    Field("source_model", lambda f: f.slot.model, TEXT),
    Field("source_bits", lambda f: f.slot.bits.tag, TEXT),
    Field("target_model", lambda f: f.target.slot.model, TEXT),
    Field("target_bits", lambda f: f.target.slot.bits.tag, TEXT),
    Field("source_sha", lambda f: f.source.sha256, TEXT),
    Field("target_sha", lambda f: f.target.sha256, TEXT, key="target"),
    Field("set_cell", lambda f: f.crafted.hash, TEXT, key="set"),
    Field("set_path", lambda f: f.crafted.outputs["path"], TEXT),
    Field("max_samples", lambda f: f.plan.spec.samples, key=True),
    Field("flag", lambda f: f.plan.spec.flag.model_dump(), key=True),
    Field("records_path", fact("records_path"), TEXT),
    Field("n_total", lambda f: f.summary["n_total"], INT),
    *(Field(k, lambda f, k=k: f.summary[k], INT if k in _SUMMARY_INT else REAL) for k in SUMMARY_KEYS),
))

PROGRESSIONS = Table("progressions", "progression", (
    Field("dataset", lambda f: f.slot.dataset, TEXT, key=True),
    Field("model", lambda f: f.slot.model, TEXT),
    Field("bits", lambda f: str(f.slot.bits), TEXT),
    Field("bits_tag", lambda f: f.slot.bits.tag, TEXT),
    Field("source_sha", lambda f: f.source.sha256, key="source"),
    Field("attack", lambda f: f.attack.name, key=True),
    Field("label", lambda f: f.attack.label, TEXT, key=True),
    Field("params", lambda f: f.attack.params, key=True),
    Field("backend", lambda f: f.attack.backend, key=True),
    Field("path", fact("path"), TEXT),
    Field("iterations", lambda f: list(f.attack.progression), TEXT, key=True),
    Field("images", lambda f: f.plan.spec.report.progression.images, key=True),
    Field("sample_seed", lambda f: f.sample_seed, key=True),
    Field("seed", lambda f: f.attack_seed, key=True),
))

SCHEMA: dict[str, Table] = {t.name: t for t in (MODELS, ATTACK_SETS, RESULTS, PROGRESSIONS)}
"""Every result table by name (looked up at call time: a test may add one or grow one)."""

TABLE_OF_KIND: dict[str, str] = {"train": "models", "load": "models", "craft": "attack_sets",
                                 "evaluate": "results", "transfer": "results", "progression": "progressions"}
"""The table that holds each stored cell kind's row (the report cell has none)."""


def table_of(kind: str) -> Table:
    """The schema of the table a cell of ``kind`` (``train``, ``craft``, ``transfer`` ...) writes."""
    try:
        return SCHEMA[TABLE_OF_KIND[kind]]
    except KeyError:
        raise ValueError(f"cells of kind {kind!r} are not stored") from None


def recorded_set_sha(db: ResultsDB, cell: str) -> str | None:
    """The sha256 a crafted set's ``attack_sets`` row recorded."""
    return db.value(ATTACK_SETS.name, cell, SET_SHA256)


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
