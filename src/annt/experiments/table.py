"""The vocabulary of result tables: ``Field``, ``Table`` and the ``Facts`` their values come from.

Each table is one ``Table``: a list of ``Field``s, each saying how its value is obtained from a
cell's *facts* and where it goes: a column of the table (``type``), the cell's key (``key``:
its identity, hashed) and the metadata sidecar of the artifact the cell writes (``meta``;
adversarial sets). The cell key (``Table.key``), the sidecar (``Table.meta``), the database row
(``Table.row``) and the SQLite table itself (``Table.columns``, created and grown by
``ResultsDB.ensure_tables``) are all derived from that list. The tables themselves are declared
with the cell kinds that write them (``annt.experiments.kinds``); ``annt.experiments.schema``
collects them.

Facts are attributes of a ``Facts`` object: known in the driver before a cell runs (``plan``,
``cell``, ``slot``, ``attack``, ``run``, ``source`` / ``target`` models, the ``crafted`` set,
seeds: the kind's ``given``) and, in the worker, what the cell measured (``path``, ``sha256``,
``summary``, ``seconds`` ...). The key is derived in the driver from the first kind only: a key
field reading a measured fact fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

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


def kinds(*names: str) -> frozenset[str]:
    """The cell kinds a field applies to (``Field.kinds``)."""
    return frozenset(names)


def fact(name: str) -> Callable[[Facts], Any]:
    """A field whose value is the fact ``name`` (usually a measured one)."""
    return lambda f: getattr(f, name)
