"""The ``diagnose:`` block of a study: the checklist on every model, one folder per model.

Results go to ``<out>/diagnose/<dataset>-<model>-<bits>/`` (``diagnose.json`` / ``.npz``,
atomic). A folder whose JSON was written with the same settings is reused, so a re-run
study resumes here too; ``annt report`` reads the folders back. With the ``processes``
executor the models are diagnosed in parallel, one per worker (same pinning of threads and
device as the cells); otherwise one after the other in the driver.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from annt.robustness.runner import diagnose
from annt.robustness.store import JSON_NAME
from annt.store.naming import slug

FOLDER = "diagnose"


def _done(folder: Path, settings: dict[str, Any]) -> bool:
    try:
        return json.loads((folder / JSON_NAME).read_text())["meta"].get("settings") == settings
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _diagnose_one(plan: Any, handle: Any, folder: Path, settings: dict[str, Any],
                  device: torch.device | None = None, surrogate: Any = None) -> Path:
    """The checklist on one finished model of the study, saved to ``folder``."""
    from annt.experiments.steps import WORKSPACE
    from annt.robustness.store import save_diagnose

    block, slot = plan.spec.diagnose, handle.slot
    if device is None:  # in a pool worker: the device its initializer pinned
        from annt.experiments import executors

        device = executors._DEVICE or plan.device
    if surrogate is None and block.surrogate:
        from annt.zoo import load_model

        surrogate = load_model(block.surrogate, device=device)
    result = diagnose(
        WORKSPACE.model(slot, handle.folder, handle.sha256, device), slot.dataset, samples=block.samples,
        eps=block.eps, norm=block.norm, attacks=block.attacks, params=block.params, surrogate=surrogate,
        seed=plan.spec.seed, data_dir=plan.spec.data_dir, tolerance=block.tolerance, grow=block.grow,
    )
    result.checkpoint = slot.zoo_name or str(handle.folder)
    result.meta |= {"settings": settings, "model": slot.model, "bits_tag": slot.bits.tag,
                    "surrogate": block.surrogate}
    save_diagnose(folder, result)
    return folder


def diagnose_models(plan: Any, handles: dict[str, Any]) -> list[Path]:
    """Run (or reuse) the checklist for each finished model of the study; returns the folders.

    Runs after the cell graph (the checklist is one unit per model, not a cell): in worker
    processes when the study's executor is ``processes``, else in the driver.
    """
    block = plan.spec.diagnose
    settings = block.model_dump(mode="json") | {"seed": plan.spec.seed}
    folders, pending = [], []
    for handle in handles.values():
        slot = handle.slot
        folder = plan.out_dir / FOLDER / f"{slug(slot.dataset)}-{slug(slot.model)}-{slot.bits.tag}"
        folders.append(folder)
        if not _done(folder, settings):
            pending.append((handle, folder))
    executor = getattr(plan.spec, "executor", None)
    local = executor is not None and executor.kind == "processes"
    workers = min(len(pending), executor.workers or os.cpu_count() or 1) if local else 1
    if workers > 1:
        from annt.experiments.executors import _init_worker, default_threads

        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(default_threads(plan, workers), str(plan.device), os.getpid())) as pool:
            futures = [pool.submit(_diagnose_one, plan, handle, folder, settings) for handle, folder in pending]
            for future in futures:
                future.result()  # the first failure is raised; finished folders stay saved
        return folders
    surrogate = None
    if block.surrogate and pending:
        from annt.zoo import load_model

        surrogate = load_model(block.surrogate, device=plan.device)
    for handle, folder in pending:
        _diagnose_one(plan, handle, folder, settings, plan.device, surrogate)
    return folders
