"""Cell identity and bookkeeping: a cell is done exactly when its database row exists.

A cell's hash covers everything its result depends on: its parameters and the hashes of
what it consumes (a model's weights sha256, an adversarial set's cell hash). Re-running a
study therefore recomputes nothing that finished, under any output directory layout, and
a changed parameter produces a new cell instead of overwriting an old result.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from annt.store.results import ResultsDB
from annt.version import RESULTS_VERSION

HASH_CHARS = 20


def cell_hash(key: Mapping[str, Any]) -> str:
    """Stable hash of a JSON-able key (sorted keys, no whitespace)."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed from the study seed and a purpose (``"sample", run``...): independent streams."""
    text = "/".join(str(p) for p in parts)
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


@dataclass
class CellOutcome:
    hash: str
    outputs: dict[str, Any]
    computed: bool


class CellBook:
    """The driver's view of the database: which cells finished, and recording new ones.

    Only the driver holds a ``CellBook`` (the one writer of ``results.sqlite``); workers
    compute cells and hand back their rows.
    """

    def __init__(self, db: ResultsDB, study: str, tables: Mapping[str, Mapping[str, str]]) -> None:
        """``tables``: the typed result tables (``annt.experiments.schema.TABLES``), created when missing."""
        self.db, self.study = db, study
        db.ensure_tables(tables)
        self.computed = 0
        self.reused = 0

    @staticmethod
    def identify(key: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        """The full key and hash of a cell.

        The results version is part of every key: a release that changes what cells compute
        recomputes rather than mixing results of different attack or training code in one table
        (``annt.version.RESULTS_VERSION``; releases that only add features keep it).
        """
        full = {**key, "annt_version": RESULTS_VERSION}
        return full, cell_hash(full)

    def finished(self, h: str, intact: Callable[[str, dict[str, Any]], bool] | None = None) -> dict[str, Any] | None:
        """The outputs of cell ``h`` when it finished before (linked to this study, counted).

        ``intact(hash, outputs)`` checks the finished cell's files (against the hashes the
        database recorded); when it says no, the cell's done marker is dropped and ``None``
        returned, so the cell is computed again.
        """
        done = self.db.cell_outputs(h)
        if done is not None and intact is not None and not intact(h, done):
            self.db.forget(h)  # its artifact is damaged or gone: recompute it
            done = None
        if done is not None:
            self.db.link(self.study, h)
            self.reused += 1
        return done

    def record(self, h: str, kind: str, key: Mapping[str, Any], outputs: Mapping[str, Any], table: str | None,
               row: Mapping[str, Any] | None, seconds: float | None) -> None:
        """One transaction: the cell's typed row, its ``cells`` row and its link to the study."""
        self.db.complete(h, kind, key, outputs, table=table, row=row, study=self.study, seconds=seconds)
        self.computed += 1

    def run(
        self,
        kind: str,
        key: Mapping[str, Any],
        compute: Callable[[str], tuple[dict[str, Any], str | None, dict[str, Any] | None]],
        intact: Callable[[str, dict[str, Any]], bool] | None = None,
    ) -> CellOutcome:
        """``compute(hash) -> (outputs, table, row)`` writes its files unless the cell finished before.

        ``intact(hash, outputs)`` checks a finished cell's files on reuse (see ``finished``).
        """
        full, h = self.identify(key)
        done = self.finished(h, intact)
        if done is not None:
            return CellOutcome(h, done, False)
        tic = time.perf_counter()
        outputs, table, row = compute(h)
        self.record(h, kind, full, outputs, table, row, time.perf_counter() - tic)
        return CellOutcome(h, outputs, True)
