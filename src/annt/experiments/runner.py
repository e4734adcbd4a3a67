"""``run_study``: validate everything, lock the output folder, then walk the plan's cell graph.

The driver takes the cells in the plan's order, starts each one whose dependencies have
finished (as many at once as the executor runs), skips those the database already holds,
and records each finished cell in one transaction. Re-running after any interruption,
``kill -9`` included, continues where the study stopped. Before reusing a finished cell the
driver checks its files against the hashes the database recorded
(each kind's ``intact`` check, ``annt.experiments.kinds``); a damaged or missing artifact is recomputed.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from annt.data import ImageSet, load_dataset
from annt.errors import AnntError
from annt.experiments.builder import build_plan
from annt.experiments.cells import CellBook
from annt.experiments.executors import Executor, make_executor
from annt.experiments.kinds import SET_SHA256, kind_of
from annt.experiments.plan import Cell, StudyPlan
from annt.experiments.schema import TABLES
from annt.experiments.spec import SpecError, StudySpec, load_spec
from annt.experiments.steps import cell_key, intact_cell
from annt.experiments.tasks import WORKSPACE, Done, Finished, Task, model_of
from annt.inputs.results_db import check_ours
from annt.progress import Progress
from annt.store.lock import OutputLock
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
    executor: str | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
) -> StudyPlan:
    """Parse and check a spec (files, names, parameters, device) without writing anything.

    ``executor`` / ``workers`` / ``ray_address`` override the spec's ``executor`` section;
    ``workers`` alone means local processes.
    """
    parsed, source = load_spec(spec)
    if threads is not None:
        if not 1 <= threads <= 1024:  # the spec's own bound (model_copy does not validate)
            raise AnntError(f"threads must be in 1..1024, got {threads}")
        parsed = parsed.model_copy(update={"threads": threads})
    parsed = _override_executor(parsed, executor, workers, ray_address)
    spec_dir = Path(spec).expanduser().resolve().parent if isinstance(spec, (str, Path)) else None
    return build_plan(parsed, source, out=out, device=device, spec_dir=spec_dir)


def _override_executor(spec: StudySpec, kind: str | None, workers: int | None,
                       address: str | None) -> StudySpec:
    if kind is None and workers is None and address is None:
        return spec
    if workers is not None and not 1 <= workers <= 4096:  # the spec's own bound (model_copy does not validate)
        raise AnntError(f"workers must be in 1..4096, got {workers}")
    current = spec.executor
    if kind is None:
        kind = "ray" if address is not None else ("processes" if current.kind == "serial" else current.kind)
    if kind not in ("serial", "processes", "ray"):
        raise AnntError(f"unknown executor {kind!r}: choose serial, processes or ray")
    if address is not None and kind != "ray":
        raise AnntError("--ray-address needs --executor ray")
    update = {"kind": kind, "workers": workers if workers is not None else current.workers,
              "address": address or current.address}
    return spec.model_copy(update={"executor": current.model_copy(update=update)})


def _test_sets(plan: StudyPlan, download: bool = True) -> dict[str, ImageSet]:
    """Load each dataset's test split now, so missing data fails before any work (``--check`` too)."""
    sets = {}
    for i, name in enumerate(dict.fromkeys(s.dataset for s in plan.slots)):
        try:
            sets[name] = load_dataset(name, "test", plan.spec.data_dir, download=download)
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


def execute(plan: StudyPlan, test_sets: dict[str, ImageSet] | None = None, *, progress: bool = True,
            executor: Executor | None = None) -> tuple[int, int]:
    """Run (or skip, when finished) every stored cell of ``plan``; returns (computed, reused)."""
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    for name, images in (test_sets or {}).items():  # already loaded by the checks: reuse in this process
        WORKSPACE.test_sets.setdefault((name, plan.spec.data_dir), images)
    owned = executor is None
    executor = executor or make_executor(plan, progress)
    try:
        if executor.name == "serial":
            with cpu_threads(plan.spec.threads):
                return _walk(plan, executor, progress)
        return _walk(plan, executor, progress)
    finally:
        if owned:
            executor.close()


@dataclass
class _Running:
    cell: Cell
    task: Task
    attempts: int = 1


class LongestFirst:
    """The order in which ready cells start: plan order, or with several workers the slowest first.

    Starting the long cells first keeps the workers busy to the end (a 16-s CW-L2 cell started
    last leaves the other worker idle). Each kind of cell (kind and attack label) is timed as
    its cells finish; a kind not timed yet goes first, so that its cost is learnt early.
    Results do not depend on the order.
    """

    def __init__(self, plan_order: dict[str, int], workers: int) -> None:
        self._order = plan_order
        self._parallel = workers > 1
        self._seconds: dict[tuple[str, str], list[float]] = {}

    @staticmethod
    def _kind(cell: Cell) -> tuple[str, str]:
        return cell.kind, cell.attack.label if cell.attack is not None else ""

    def finished(self, cell: Cell, seconds: float) -> None:
        self._seconds.setdefault(self._kind(cell), []).append(seconds)

    def key(self, cell: Cell) -> tuple[float, int]:
        if not self._parallel:
            return 0.0, self._order[cell.id]
        seen = self._seconds.get(self._kind(cell))
        return (-sum(seen) / len(seen) if seen else -float("inf")), self._order[cell.id]


MAX_ATTEMPTS = 3  # a cell whose worker dies this often stops the run (it would die again)


class _Walk:
    """One pass over a plan's stored cells: reuse what finished and still checks out, run the rest.

    ``waiting``: dependencies not all done; ``ready``: to start (not finished before);
    ``running``: in the executor; ``done``: finished, as their dependents see them.
    """

    def __init__(self, plan: StudyPlan, executor: Executor, db: ResultsDB, progress: bool) -> None:
        self.plan, self.executor, self.db = plan, executor, db
        self.book = CellBook(db, plan.study_id, TABLES)
        self.waiting = plan.cells(report=False)
        self.ready: list[tuple[Cell, dict[str, Any], str]] = []
        self.running: dict[Future[Finished], _Running] = {}
        self.done: dict[str, Done] = {}
        self.failure: BaseException | None = None
        self.ordering = LongestFirst({cell.id: i for i, cell in enumerate(self.waiting)}, executor.capacity)
        self.bar = Progress(len(self.waiting), plan.spec.name, "cells", enabled=progress)

    def run(self) -> None:
        """Until every cell is done (or one failed and the running ones have finished)."""
        try:
            while ((self.waiting or self.ready) and self.failure is None) or self.running:
                if self.failure is None:
                    self.promote()
                    self.start()
                if not self.running:
                    if (self.waiting or self.ready) and self.failure is None:  # pragma: no cover - a graph cycle
                        raise AnntError(f"cells {', '.join(c.id for c in self.waiting[:3])} can never start")
                    break
                finished, _ = wait(list(self.running), return_when=FIRST_COMPLETED)
                for future in finished:
                    self.finish(future, self.running.pop(future))
        except BaseException:  # Ctrl-C: keep what finished, stop the workers
            for future in [f for f in self.running if f.done()]:
                self.finish(future, self.running.pop(future))
            self.executor.close(cancel=True)
            raise
        finally:
            self.bar.close()
        if self.failure is not None:
            raise self.failure

    def promote(self) -> None:
        """Move cells whose dependencies finished to ``ready`` (or to ``done`` when stored and intact)."""
        changed = True
        while changed:
            changed = False
            for cell in [c for c in self.waiting if all(d in self.done for d in c.deps)]:
                self.waiting.remove(cell)
                key, h = self.book.identify(cell_key(self.plan, cell, self.done))
                # reuse only what still checks out against the database (else: recompute)
                outputs = self.book.finished(h, lambda h, out, cell=cell: intact_cell(self.plan.out_dir, self.db,
                                                                                     cell, h, out))
                if outputs is None:
                    self.ready.append((cell, key, h))
                else:
                    self.done[cell.id] = Done(h, outputs, kind_of(cell.kind).recorded_set_sha(self.db, h))
                    self.bar.update(1)
                    changed = True
        self.ready.sort(key=lambda item: self.ordering.key(item[0]))

    def start(self) -> None:
        """Submit ready cells while the executor has room."""
        while self.ready and len(self.running) < self.executor.capacity:
            cell, key, h = self.ready.pop(0)
            self.bar.set_postfix(f"{cell.kind} {cell.label}")
            task = Task(self.plan, cell, key, h, {d: self.done[d] for d in cell.deps}, self.executor.progress)
            self.running[self.executor.submit(task)] = _Running(cell, task)

    def finish(self, future: Future[Finished], job: _Running) -> None:
        """Record a computed cell; resubmit one whose worker died (``MAX_ATTEMPTS``); keep the first failure."""
        try:
            fin = future.result()
        except BaseException as exc:
            if self.executor.lost(exc) and job.attempts < MAX_ATTEMPTS and self.failure is None:
                self.running[self.executor.submit(job.task)] = _Running(job.cell, job.task, job.attempts + 1)
                return
            self.failure = self.failure or exc
            return
        self.book.record(fin.hash, fin.kind, fin.key, fin.outputs, fin.table, fin.row, fin.seconds)
        self.ordering.finished(job.cell, fin.seconds)
        sha = fin.row.get(SET_SHA256) if kind_of(job.cell.kind).yields_set else None
        self.done[job.cell.id] = Done(fin.hash, fin.outputs, sha)
        self.bar.set_postfix(job.cell.label)
        self.bar.update(1)


def _walk(plan: StudyPlan, executor: Executor, progress: bool) -> tuple[int, int]:
    with ResultsDB.in_dir(plan.out_dir) as db:
        db.start_study(plan.study_id, plan.spec.name, plan.spec.model_dump(mode="json"))
        walk = _Walk(plan, executor, db, progress)
        walk.run()
        if plan.spec.diagnose is not None:
            _diagnose(plan, walk.done)
        db.finish_study(plan.study_id)
        return walk.book.computed, walk.book.reused


def _diagnose(plan: StudyPlan, done: dict[str, Done]) -> None:
    """The spec's ``diagnose:`` block on every model of the study (after its cells)."""
    from annt.experiments.executors import diagnose_in_workers
    from annt.robustness.study import diagnose_models

    local = plan.spec.executor.kind == "processes"
    diagnose_models(plan, {slot.key: model_of(plan, slot, done) for slot in plan.slots if slot.deploy is None},
                    WORKSPACE.model,
                    functools.partial(diagnose_in_workers, plan) if local else None)


def run_study(
    spec: str | Path | dict[str, Any] | StudySpec,
    *,
    out: str | Path | None = None,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    report: bool | None = None,
    executor: str | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    wait: bool = False,
) -> StudyResult:
    """Run a study from a YAML path, a dict or a ``StudySpec``; resumes an interrupted one.

    ``out`` / ``device`` / ``threads`` override the spec's ``output`` / ``device`` /
    ``threads``; ``report`` overrides ``report.enabled``; ``executor`` / ``workers`` /
    ``ray_address`` choose where cells run. Every check happens before the output directory
    is touched. The folder is locked for the run: a second run on it stops with an error
    naming the holder, or with ``wait`` waits for it.
    """
    tic = time.perf_counter()
    plan = prepare(spec, out=out, device=device, threads=threads, executor=executor, workers=workers,
                   ray_address=ray_address)
    test_sets = _test_sets(plan)
    check_ours(plan.out_dir / DB_NAME)  # a foreign results.sqlite: refused before the lock file is made
    report_path = None
    with OutputLock(plan.out_dir, wait=wait):
        computed, reused = execute(plan, test_sets, progress=progress)
        if any(c.kind == "report" for c in plan.cells(report=report)):
            from annt.report import write_report

            report_path = write_report(plan.out_dir, study=plan.study_id, data_dir=plan.spec.data_dir,
                                       grid_images=plan.spec.report.grid_images)
    return StudyResult(plan.out_dir, plan.study_id, plan.out_dir / DB_NAME, report_path, computed, reused,
                       time.perf_counter() - tic)
