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
from annt.version import __version__

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
    """Runs a cell unless the database says it finished; counts computed and reused cells."""

    def __init__(self, db: ResultsDB, study: str) -> None:
        self.db, self.study = db, study
        self.computed = 0
        self.reused = 0

    def run(
        self,
        kind: str,
        key: Mapping[str, Any],
        compute: Callable[[str], tuple[dict[str, Any], str | None, dict[str, Any] | None]],
        intact: Callable[[str, dict[str, Any]], bool] | None = None,
    ) -> CellOutcome:
        """``compute(hash) -> (outputs, table, row)`` writes its files; then one transaction records it.

        ``intact(hash, outputs)`` checks a finished cell's files on reuse (recorded hashes);
        when it says no, the cell is recomputed. The ANNT version is part of every key: a new release recomputes rather than mixing
        results of different attack or training code in one table.
        """
        key = {**key, "annt_version": __version__}
        h = cell_hash(key)
        done = self.db.cell_outputs(h)
        if done is not None and intact is not None and not intact(h, done):
            self.db.forget(h)  # its artifact is damaged or gone: recompute it
            done = None
        if done is not None:
            self.db.link(self.study, h)
            self.reused += 1
            return CellOutcome(h, done, False)
        tic = time.perf_counter()
        outputs, table, row = compute(h)
        self.db.complete(
            h, kind, key, outputs, table=table, row=row, study=self.study,
            seconds=time.perf_counter() - tic,
        )
        self.computed += 1
        return CellOutcome(h, outputs, True)
