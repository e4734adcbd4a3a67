"""Running a cell of any kind: its inputs, key, step and integrity check, through its ``CellKind``.

The key, the row and an adversarial set's metadata are derived from the cell's table
(``annt.experiments.schema``) and the cell's facts: ``given`` (known before it runs) plus what
its step measured. ``cell_key`` and ``intact_cell`` run in the driver (they need only the plan,
the dependencies' results and the output folder); ``compute`` runs wherever the executor puts
the cell (this process, a local worker process or a Ray worker): it reads models and sets from
the output folder, writes its own files atomically and returns the outputs and database row,
which the driver alone records. What each kind does is in ``annt.experiments.kinds``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from annt.device import exact_float32
from annt.experiments.kinds import kind_of
from annt.experiments.plan import Cell, StudyPlan
from annt.experiments.schema import table_of
from annt.experiments.table import Facts
from annt.experiments.tasks import WORKSPACE, Done, Finished, Task, Workspace, model_of
from annt.store.results import ResultsDB

__all__ = ["WORKSPACE", "Done", "Finished", "Task", "Workspace", "cell_key", "compute", "given", "intact_cell",
           "model_of"]


def given(plan: StudyPlan, cell: Cell, deps: dict[str, Done]) -> Facts:
    """What is known about a cell before it runs: the facts its key (and most of its row) come from.

    Derived the same way in the driver (for the key) and in the worker (for the row), from the
    plan, the cell and its finished dependencies (each kind adds its own: ``CellKind.given``).
    """
    assert cell.slot is not None
    facts = Facts(plan=plan, cell=cell, slot=cell.slot, attack=cell.attack, run=cell.run)
    return kind_of(cell.kind).given(plan, cell, deps, facts)


def cell_key(plan: StudyPlan, cell: Cell, deps: dict[str, Done]) -> dict[str, Any]:
    """The key a cell's hash covers (without the results version, which ``CellBook`` adds).

    Its fields are the ``key`` fields of the cell's table.
    """
    if not cell.stored:
        raise ValueError(f"cell {cell.id} is not stored")
    return table_of(cell.kind).key(given(plan, cell, deps), cell.kind)


def intact_cell(out: Path, db: ResultsDB, cell: Cell, h: str, outputs: dict[str, Any]) -> bool:
    """Whether finished cell ``h`` may be reused as it is (its kind's check; an unknown kind raises).

    The database records each artifact's sha256; a file that was deleted, truncated or edited
    since makes its cell count as not done, so the study recomputes it instead of crashing (or
    silently using altered data) later.
    """
    return kind_of(cell.kind).intact(out, db, h, outputs)


def compute(task: Task, device: torch.device | None = None, ws: Workspace = WORKSPACE) -> Finished:
    """Compute one cell's files and row (``device`` overrides the plan's, for pinned workers)."""
    kind = kind_of(task.cell.kind)
    dev = device or task.plan.device
    tic = time.perf_counter()
    if kind.exact_float32:
        exact_float32(dev)  # attacks end on the decision boundary: no TF32 (see annt.device)
    facts = given(task.plan, task.cell, task.deps).but(hash=task.hash)
    table = table_of(kind)
    outputs, measured = kind.step(task, facts, dev, ws, table)
    row = table.row(facts.but(**measured), kind.name)
    return Finished(task.hash, table.kind, task.key, outputs, table.name, row, time.perf_counter() - tic)
