"""Checks a study runs on a finished cell's files before reusing them.

The database records each artifact's sha256; a file that was deleted, truncated or edited
since makes its cell count as not done, so the study recomputes it instead of crashing (or
silently using altered data) later.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

from annt.errors import AnntError

if TYPE_CHECKING:
    from annt.experiments.steps import StudyContext


def intact_set(ctx: StudyContext, cell: str, outputs: dict[str, Any]) -> bool:
    """The crafted set exists, hashes to the sha256 the database recorded and passes its own checks."""
    from annt.store.adversarial_set import load_recorded_set

    try:
        load_recorded_set(ctx.out / outputs["path"], ctx.book.db.value("attack_sets", cell, "sha256"))
    except AnntError:
        return False
    return True


def intact_model(ctx: StudyContext, outputs: dict[str, Any]) -> bool:
    """A trained checkpoint still verifies and has the recorded weights; else its run folder is removed.

    Removing it (only ever inside ``OUTDIR/models``) makes the retraining start afresh
    instead of resuming from a damaged ``last/``.
    """
    from annt.store.checkpoint import WEIGHTS, verify_checkpoint
    from annt.store.hashing import file_digest

    best = ctx.out / outputs["checkpoint"]
    try:  # the database's weights hash is the proof; a seal, when present, is checked too
        meta = verify_checkpoint(best, trust_unverified=True)
        if file_digest(best / WEIGHTS) == outputs["sha256"] and meta.get("weights_sha256") in (None, outputs["sha256"]):
            return True
    except AnntError:
        pass
    run_dir = best.parent.resolve()
    models = (ctx.out / "models").resolve()
    if models in run_dir.parents and run_dir.is_dir():
        shutil.rmtree(run_dir)
    return False
