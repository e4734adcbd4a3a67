"""Where cells run: in this process (``serial``), a local process pool, or a Ray cluster.

Every executor takes ``Task``s and returns futures of ``Finished`` cells; the driver alone
writes the results database. Workers read models and sets from the output folder (the
store), so a Ray cluster needs that folder on a shared file system. Where a cell runs and
with how many threads is never part of its identity.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

import torch

from annt.device import worker_device
from annt.errors import AnntError
from annt.experiments.plan import StudyPlan
from annt.experiments.steps import compute
from annt.experiments.tasks import Finished, Task


class Executor(Protocol):
    name: str
    capacity: int  # cells in flight at once
    progress: bool  # whether cells may draw their own progress bars

    def submit(self, task: Task) -> Future[Finished]: ...

    def lost(self, exc: BaseException) -> bool:
        """Whether ``exc`` means a worker died (the cell is resubmitted) rather than the cell failed."""
        ...

    def close(self, *, cancel: bool = False) -> None: ...


def default_threads(plan: StudyPlan, workers: int) -> int:
    """Threads per worker: the spec's ``threads``, else this machine's cores shared out."""
    return plan.spec.threads or max(1, (os.cpu_count() or 1) // workers)


class SerialExecutor:
    """Today's behaviour: each cell computed in this process, one after the other."""

    name = "serial"
    capacity = 1

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def submit(self, task: Task) -> Future[Finished]:
        future: Future[Finished] = Future()
        try:
            future.set_result(compute(task))
        except Exception as exc:  # KeyboardInterrupt goes straight up
            future.set_exception(exc)
        return future

    def lost(self, exc: BaseException) -> bool:
        return False

    def close(self, *, cancel: bool = False) -> None:
        pass


# ---------------------------------------------------------------------------- local processes

_DEVICE: torch.device | None = None


def _watch_parent(parent: int) -> None:
    """Exit when the driver is gone (``kill -9``): an orphan must not keep writing files."""
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(0.5)


def _init_worker(threads: int, device: str, parent: int) -> None:
    global _DEVICE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    torch.set_num_threads(threads)
    identity = mp.current_process()._identity  # (k,) for the k-th process this driver started
    _DEVICE = worker_device(torch.device(device), identity[0] - 1 if identity else 0)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _run_in_worker(task: Task) -> Finished:
    return compute(task, device=_DEVICE)


def _local_pool(workers: int, threads: int, device: str) -> ProcessPoolExecutor:
    """Spawned workers that pin their threads and device and exit with their driver."""
    return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(threads, device, os.getpid()))


def _diagnose_in_worker(plan: StudyPlan, handle: Any, folder: Any, settings: dict[str, Any]) -> Any:
    from annt.experiments.tasks import WORKSPACE
    from annt.robustness.study import diagnose_one

    return diagnose_one(plan, handle, folder, settings, WORKSPACE.model, _DEVICE or plan.device)


def diagnose_in_workers(plan: StudyPlan, jobs: list[tuple[Any, Any, dict[str, Any]]]) -> None:
    """A study's ``diagnose:`` block, one model per local worker (same pinning as the cells).

    Each checklist saves its own folder, so a failure leaves the others' results in place.
    """
    workers = min(len(jobs), plan.spec.executor.workers or os.cpu_count() or 1)
    with _local_pool(workers, default_threads(plan, workers), str(plan.device)) as pool:
        futures = [pool.submit(_diagnose_in_worker, plan, *job) for job in jobs]
        for future in futures:
            future.result()


class ProcessExecutor:
    """A local pool of ``workers`` processes (spawned); each pins its thread count and device."""

    name = "processes"
    progress = False

    def __init__(self, plan: StudyPlan, workers: int) -> None:
        self.capacity = workers
        self._threads = default_threads(plan, workers)
        self._device = str(plan.device)
        # Ctrl-C terminates the workers; multiprocessing's tracker then frees the pool's
        # semaphores itself and would print a warning about them on every interrupted run
        os.environ.setdefault("PYTHONWARNINGS", "ignore:resource_tracker:UserWarning")
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return _local_pool(self.capacity, self._threads, self._device)

    def submit(self, task: Task) -> Future[Finished]:
        try:
            return self._pool.submit(_run_in_worker, task)
        except BrokenProcessPool:
            self.restart()
            return self._pool.submit(_run_in_worker, task)

    def lost(self, exc: BaseException) -> bool:
        if isinstance(exc, BrokenProcessPool):
            self.restart()
            return True
        return False

    def restart(self) -> None:
        """A worker died (killed, out of memory): a fresh pool; its cells are resubmitted."""
        if getattr(self._pool, "_broken", False):
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start()

    def close(self, *, cancel: bool = False) -> None:
        if cancel:
            for proc in list(getattr(self._pool, "_processes", {}).values()):
                proc.terminate()
        self._pool.shutdown(wait=True, cancel_futures=cancel)


# ---------------------------------------------------------------------------- Ray


def _ray_compute(task: Task, threads: int) -> Finished:
    torch.set_num_threads(threads)
    device = torch.device("cuda") if task.plan.device.type == "cuda" else None  # Ray picks the GPU
    return compute(task, device=device)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise AnntError('executor ray needs Ray: pip install "annt[ray]" (or pip install ray)') from None
    return ray


class RayExecutor:
    """Cells as Ray tasks with their resource needs; ``address`` = a running cluster or ``local``.

    ``local`` starts a Ray instance for this run (``workers`` CPUs, default all) and stops it at
    the end; when Ray is already initialised in this process it is used as it is.
    """

    name = "ray"
    progress = False

    def __init__(self, plan: StudyPlan, address: str, workers: int | None) -> None:
        ray = self._ray = import_ray()
        self._owned = False
        if not ray.is_initialized():
            try:
                if address == "local":
                    # "local" (not None): a new instance even when RAY_ADDRESS or a ``ray start``
                    # cluster on this machine would otherwise be joined
                    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
                             object_store_memory=200 * 2**20)
                else:
                    ray.init(address=address, log_to_driver=False)
            except Exception as exc:
                raise AnntError(f"cannot start or reach Ray at {address!r}: {str(exc).splitlines()[0]}") from None
            self._owned = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self._threads = plan.spec.threads or 1
        self._gpus = plan.spec.executor.gpus_per_cell if plan.device.type == "cuda" else 0
        gpu_slots = int(ray.cluster_resources().get("GPU", 0) / self._gpus) if self._gpus else None
        self.capacity = max(1, min(cpus // self._threads, gpu_slots if gpu_slots is not None else cpus))
        if workers is not None:
            self.capacity = min(self.capacity, workers)
        self._fn = ray.remote(max_retries=2)(_ray_compute)
        self._refs: list[Any] = []

    def submit(self, task: Task) -> Future[Finished]:
        ref = self._fn.options(num_cpus=self._threads, num_gpus=self._gpus).remote(task, self._threads)
        self._refs.append(ref)
        return ref.future()

    def lost(self, exc: BaseException) -> bool:
        return False  # Ray itself retries a task whose worker died (max_retries)

    def close(self, *, cancel: bool = False) -> None:
        if cancel:
            for ref in self._refs:
                with contextlib.suppress(Exception):  # already finished
                    self._ray.cancel(ref, force=True)
        if self._owned:
            self._ray.shutdown()


def make_executor(plan: StudyPlan, progress: bool) -> Executor:
    """The executor the (possibly overridden) spec asks for."""
    spec = plan.spec.executor
    if spec.kind == "serial":
        return SerialExecutor(progress)
    if spec.kind == "processes":
        return ProcessExecutor(plan, spec.workers or max(1, os.cpu_count() or 1))
    return RayExecutor(plan, spec.address, spec.workers)


