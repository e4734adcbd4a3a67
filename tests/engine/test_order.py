"""The order in which ready cells start (annt.experiments.runner.LongestFirst)."""

from __future__ import annotations

from annt.experiments.plan import AttackConfig, Cell
from annt.experiments.runner import LongestFirst


def _craft(label: str, run: int) -> Cell:
    return Cell(f"craft:m/{label}/run{run}", "craft", attack=AttackConfig(label, label, {}, "annt", 100), run=run)


CELLS = [_craft(label, run) for run in (0, 1) for label in ("fgsm", "cw_l2", "boundary")]


def _started(order: LongestFirst) -> list[str]:
    return [c.id for c in sorted(CELLS, key=order.key)]


def test_one_worker_keeps_the_plan_order():
    order = LongestFirst({c.id: i for i, c in enumerate(CELLS)}, workers=1)
    order.finished(CELLS[1], 15.0)
    assert _started(order) == [c.id for c in CELLS]


def test_several_workers_start_untimed_kinds_then_the_slowest():
    order = LongestFirst({c.id: i for i, c in enumerate(CELLS)}, workers=2)
    assert _started(order) == [c.id for c in CELLS]  # nothing timed yet: plan order
    order.finished(CELLS[0], 0.1)  # fgsm
    order.finished(CELLS[2], 7.0)  # boundary
    assert _started(order)[:2] == ["craft:m/cw_l2/run0", "craft:m/cw_l2/run1"]  # not timed yet
    order.finished(CELLS[1], 15.0)  # cw_l2
    assert _started(order) == [
        "craft:m/cw_l2/run0", "craft:m/cw_l2/run1", "craft:m/boundary/run0", "craft:m/boundary/run1",
        "craft:m/fgsm/run0", "craft:m/fgsm/run1",
    ]
