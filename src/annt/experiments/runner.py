"""``run_study``: validate everything, then execute the study's cells in a fixed order.

Order: every model (train or load), then per dataset, run, source model and attack: craft,
evaluate directly, evaluate on each transfer target, and (once per source) the Boundary
Attack progression. Finished cells are skipped, so re-running after any interruption,
``kill -9`` included, continues where the study stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from annt.data import ImageSet, load_dataset
from annt.errors import AnntError
from annt.experiments.cells import CellBook
from annt.experiments.plan import StudyPlan, build_plan
from annt.experiments.spec import SpecError, StudySpec, load_spec
from annt.experiments.steps import (
    ModelHandle,
    StudyContext,
    craft_cell,
    evaluate_cell,
    model_cell,
    progression_cell,
)
from annt.store.results import DB_NAME, ResultsDB


@dataclass
class StudyResult:
    """Where a study wrote its results and how much of it was (re)computed."""

    out_dir: Path
    study_id: str
    database: Path
    report: Path | None
    computed: int
    reused: int
    seconds: float


def prepare(
    spec: str | Path | dict[str, Any] | StudySpec,
    *,
    out: str | Path | None = None,
    device: str | None = None,
    threads: int | None = None,
) -> StudyPlan:
    """Parse and check a spec (files, names, parameters, device) without writing anything."""
    parsed, source = load_spec(spec)
    if threads is not None:
        if threads < 1:
            raise AnntError(f"threads must be at least 1, got {threads}")
        parsed = parsed.model_copy(update={"threads": threads})
    spec_dir = Path(spec).expanduser().resolve().parent if isinstance(spec, (str, Path)) else None
    return build_plan(parsed, source, out=out, device=device, spec_dir=spec_dir)


def _test_sets(plan: StudyPlan) -> dict[str, ImageSet]:
    """Load each dataset's test split now, so missing data fails before any work."""
    sets = {}
    for i, name in enumerate(dict.fromkeys(s.dataset for s in plan.slots)):
        try:
            sets[name] = load_dataset(name, "test", plan.spec.data_dir)
        except AnntError as exc:
            raise SpecError(plan.source, f"datasets[{i}]", str(exc)) from None
    return sets


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Use ``threads`` CPU threads for torch inside the block (``None``: leave torch's choice).

    Small CPU batches on a busy machine can run many times faster on one thread than on
    oversubscribed cores. Like the device, the thread count is not part of a cell's identity
    (floating-point sums may differ in their last bits).
    """
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def execute(plan: StudyPlan, test_sets: dict[str, ImageSet], *, progress: bool = True) -> tuple[int, int]:
    """Run (or skip, when finished) every cell of ``plan``; returns (computed, reused)."""
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    with cpu_threads(plan.spec.threads):
        return _execute(plan, test_sets, progress)


def _execute(plan: StudyPlan, test_sets: dict[str, ImageSet], progress: bool) -> tuple[int, int]:
    with ResultsDB.in_dir(plan.out_dir) as db:
        db.start_study(plan.study_id, plan.spec.name, plan.spec.model_dump(mode="json"))
        book = CellBook(db, plan.study_id)
        ctx = StudyContext(plan, book, test_sets, progress)
        bar = tqdm(total=plan.cell_count(), desc=plan.spec.name, unit="cell", disable=not progress)

        def step(label: str) -> None:
            bar.set_postfix_str(label, refresh=False)
            bar.update(1)

        handles: dict[str, ModelHandle] = {}
        for slot in plan.slots:
            bar.set_postfix_str(f"model {slot.key}")
            handles[slot.key] = model_cell(ctx, slot)
            step(f"model {slot.key}")
        for dataset, attacks in plan.attacks.items():
            for run in range(plan.spec.runs):
                for slot in plan.sources(dataset):
                    source = handles[slot.key]
                    for attack in attacks:
                        what = f"{attack.label} {slot.model}-{slot.bits.tag} run {run}"
                        bar.set_postfix_str(f"craft {what}")
                        adv = craft_cell(ctx, source, attack, run)
                        step(f"craft {what}")
                        evaluate_cell(ctx, adv, source)
                        step(f"direct {what}")
                        for target in plan.targets(slot):
                            evaluate_cell(ctx, adv, handles[target.key])
                            step(f"transfer {what} -> {target.bits.tag}")
                        if run == 0 and attack.progression:
                            bar.set_postfix_str(f"progression {what}")
                            progression_cell(ctx, source, attack)
                            step(f"progression {what}")
        if plan.spec.diagnose is not None:
            from annt.robustness.study import diagnose_models

            diagnose_models(ctx, handles)
        bar.close()
        db.finish_study(plan.study_id)
        return book.computed, book.reused


def run_study(
    spec: str | Path | dict[str, Any] | StudySpec,
    *,
    out: str | Path | None = None,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    report: bool | None = None,
) -> StudyResult:
    """Run a study from a YAML path, a dict or a ``StudySpec``; resumes an interrupted one.

    ``out`` / ``device`` / ``threads`` override the spec's ``output`` / ``device`` /
    ``threads``; ``report`` overrides ``report.enabled``. Every check happens before the output directory is touched.
    """
    tic = time.perf_counter()
    plan = prepare(spec, out=out, device=device, threads=threads)
    test_sets = _test_sets(plan)
    computed, reused = execute(plan, test_sets, progress=progress)
    report_path = None
    if plan.spec.report.enabled if report is None else report:
        from annt.report import write_report

        report_path = write_report(plan.out_dir, study=plan.study_id, data_dir=plan.spec.data_dir,
                                   grid_images=plan.spec.report.grid_images)
    return StudyResult(plan.out_dir, plan.study_id, plan.out_dir / DB_NAME, report_path, computed, reused,
                       time.perf_counter() - tic)
