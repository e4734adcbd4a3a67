"""The cells of a study plan as a dependency graph: what the runner walks and executors run.

A cell names its inputs (slot, attack, run, target) and the cells it depends on. Its hash
(its identity in the results database) is known once its dependencies have finished, since
it covers what they produced (a trained model's weights sha256, a crafted set's hash):
``annt.experiments.steps.cell_key`` derives it. The plan's cell count, ``annt run --check``
and the resume logic all read this one list.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from annt.experiments.plan import AttackConfig, ModelSlot, StudyPlan

Kind = Literal["train", "load", "craft", "evaluate", "transfer", "progression", "report"]

@dataclass(frozen=True)
class Cell:
    """One unit of work: its kind, inputs and the ids of the cells whose results it uses."""

    id: str
    kind: Kind
    deps: tuple[str, ...] = ()
    slot: ModelSlot | None = None  # the model (train/load) or the source model
    attack: AttackConfig | None = None
    run: int = 0
    target: ModelSlot | None = None  # evaluate: the source itself; transfer: another model

    @property
    def stored(self) -> bool:
        """Recorded in the results database (the report is rewritten on every run)."""
        return self.kind != "report"

    @property
    def label(self) -> str:
        return self.id.split(":", 1)[1] if ":" in self.id else self.id


def model_id(slot: ModelSlot) -> str:
    return f"model:{slot.key}"


def study_cells(plan: StudyPlan, *, report: bool | None = None) -> Iterator[Cell]:
    """Every cell of ``plan`` in the serial order (each after its dependencies).

    Order: every model; then per dataset, run, source model and attack: craft, evaluate
    directly, transfer to each target, and (run 0) the Boundary Attack progression; last
    the report when enabled (``report`` overrides ``report.enabled``).
    """
    ids: list[str] = []
    for slot in plan.slots:
        ids.append(model_id(slot))
        yield Cell(model_id(slot), "load" if slot.checkpoint is not None else "train", (), slot)
    for dataset, attacks in plan.attacks.items():
        for run in range(plan.spec.runs):
            for slot in plan.sources(dataset):
                for attack in attacks:
                    what = f"{slot.key}/{attack.label}/run{run}"
                    craft = Cell(f"craft:{what}", "craft", (model_id(slot),), slot, attack, run)
                    direct = Cell(f"evaluate:{what}", "evaluate", (craft.id, model_id(slot)), slot, attack, run,
                                  slot)
                    yield craft
                    yield direct
                    ids += [craft.id, direct.id]
                    for target in plan.targets(slot):
                        cell = Cell(f"transfer:{what}->{target.key}", "transfer",
                                    (craft.id, model_id(slot), model_id(target)), slot, attack, run, target)
                        ids.append(cell.id)
                        yield cell
                    if run == 0 and attack.progression:
                        cell = Cell(f"progression:{slot.key}/{attack.label}", "progression", (model_id(slot),),
                                    slot, attack, 0)
                        ids.append(cell.id)
                        yield cell
    if plan.spec.report.enabled if report is None else report:
        yield Cell("report", "report", tuple(ids))


def count_kinds(cells: list[Cell]) -> dict[str, int]:
    """How many cells of each kind (for ``annt run --check``)."""
    return dict(Counter(c.kind for c in cells))
