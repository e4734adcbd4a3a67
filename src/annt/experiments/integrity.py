"""Checks the driver runs on a finished cell's files before reusing them.

The database records each artifact's sha256; a file that was deleted, truncated or edited
since makes its cell count as not done, so the study recomputes it instead of crashing (or
silently using altered data) later. The checks run in the driver, when a cell's
dependencies have finished and before anything is scheduled, so every executor (serial,
local processes, Ray) reuses and recomputes exactly the same cells.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from annt.errors import AnntError
from annt.experiments.graph import Cell
from annt.experiments.schema import recorded_set_sha
from annt.store.results import ResultsDB


def intact_cell(out: Path, db: ResultsDB, cell: Cell, h: str, outputs: dict[str, Any]) -> bool:
    """Whether finished cell ``h`` (of ``cell``'s kind) may be reused as it is."""
    if cell.kind == "train":
        return intact_model(out, outputs)
    if cell.kind == "craft":
        return intact_set(out, outputs, recorded_set_sha(db, h))
    if cell.kind in ("evaluate", "transfer"):
        return (out / outputs["records"]).is_file()
    if cell.kind == "progression":
        return (out / outputs["path"]).is_file()
    return True  # ``load``: a given checkpoint, verified when the plan is built and when loaded


def intact_set(out: Path, outputs: dict[str, Any], sha256: str | None) -> bool:
    """The crafted set exists, hashes to the sha256 the database recorded and passes its own checks."""
    from annt.store.adversarial_set import load_recorded_set

    try:
        load_recorded_set(out / outputs["path"], sha256)
    except AnntError:
        return False
    return True


def intact_model(out: Path, outputs: dict[str, Any]) -> bool:
    """A trained checkpoint still verifies and has the recorded weights; else its run folder is removed.

    Removing it (only ever inside ``OUTDIR/models``) makes the retraining start afresh
    instead of resuming from a damaged ``last/``.
    """
    from annt.inputs.hashing import file_digest
    from annt.store.checkpoint import WEIGHTS, verify_checkpoint

    best = out / outputs["checkpoint"]
    try:  # the database's weights hash is the proof; a seal, when present, is checked too
        meta = verify_checkpoint(best, trust_unverified=True)
        if file_digest(best / WEIGHTS) == outputs["sha256"] and meta.get("weights_sha256") in (None, outputs["sha256"]):
            return True
    except AnntError:
        pass
    run_dir = best.parent.resolve()
    models = (out / "models").resolve()
    if models in run_dir.parents and run_dir.is_dir():
        shutil.rmtree(run_dir)
    return False
