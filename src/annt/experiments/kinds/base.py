"""What a cell kind is: one ``CellKind`` holds everything about it.

Its ``table`` (the key, the row and any artifact metadata, ``annt.experiments.table``), its
inputs (``given``: the facts known before it runs, from the plan, the cell and the finished
cells it depends on), its ``step`` (what it computes and writes, wherever the executor runs it),
its ``intact`` check (whether a finished cell's files may be reused) and whether it yields an
adversarial set that later cells read (``yields_set``: its row records the file's sha256 in
``SET_SHA256``, which those cells check).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from annt.experiments.plan import Cell, StudyPlan
from annt.experiments.table import Facts, Table
from annt.experiments.tasks import Done, Task, Workspace, attack_seed, model_of, sample_seed
from annt.store.results import ResultsDB

Measured = dict[str, Any]
"""What a step measured (facts the table's row fields read: ``path``, ``sha256``, ``summary`` ...)."""

Given = Callable[[StudyPlan, Cell, dict[str, Done], Facts], Facts]
Step = Callable[[Task, Facts, torch.device, Workspace, Table], tuple[dict[str, Any], Measured]]
Intact = Callable[[Path, ResultsDB, str, dict[str, Any]], bool]

SET_SHA256 = "sha256"
"""The column of a ``yields_set`` kind's table holding its set file's sha256 (checked by its readers)."""


@dataclass(frozen=True)
class CellKind:
    """One kind of study cell (``train``, ``craft`` ...): its table, inputs, step and checks.

    ``step(task, facts, device, workspace, table)`` returns the cell's outputs (what the cells
    depending on it read) and its measurements; ``table`` is the table as the schema holds it
    now (``annt.experiments.schema.SCHEMA``). ``intact(out_dir, db, hash, outputs)`` says
    whether a finished cell may be reused. ``exact_float32``: attacks end on the decision
    boundary, so TF32 is off for them (``annt.device.exact_float32``); training keeps it.
    """

    name: str
    table: Table
    given: Given
    step: Step
    intact: Intact
    yields_set: bool = False
    exact_float32: bool = True

    def recorded_set_sha(self, db: ResultsDB, h: str) -> str | None:
        """The sha256 the database recorded for the set cell ``h`` wrote (``None``: yields none)."""
        return db.value(self.table.name, h, SET_SHA256) if self.yields_set else None


def attack_inputs(plan: StudyPlan, cell: Cell, deps: dict[str, Done], facts: Facts) -> Facts:
    """The inputs of every cell that attacks a source model: the model and the run's seeds."""
    assert cell.slot is not None and cell.attack is not None
    return facts.but(source=model_of(plan, cell.slot, deps), sample_seed=sample_seed(plan, cell.run),
                     attack_seed=attack_seed(plan, cell.run, cell.slot, cell.attack))


def file_exists(name: str) -> Intact:
    """The check of a kind whose only artifact is the file its output ``name`` records."""
    return lambda out, db, h, outputs: (out / outputs[name]).is_file()
