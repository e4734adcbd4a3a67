"""The ``diagnose:`` block of a study: the checklist on every model, one folder per model.

Results go to ``<out>/diagnose/<dataset>-<model>-<bits>/`` (``diagnose.json`` / ``.npz``,
atomic). A folder whose JSON was written with the same settings is reused, so a re-run
study resumes here too; ``annt report`` reads the folders back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from annt.robustness.runner import diagnose
from annt.robustness.store import JSON_NAME
from annt.store.naming import slug

FOLDER = "diagnose"

Job = tuple[Any, Path, dict[str, Any]]  # (model handle, its folder, the block's settings)


def _done(folder: Path, settings: dict[str, Any]) -> bool:
    try:
        return json.loads((folder / JSON_NAME).read_text())["meta"].get("settings") == settings
    except (OSError, ValueError, KeyError, TypeError):
        return False


def diagnose_one(plan: Any, handle: Any, folder: Path, settings: dict[str, Any], load: Callable[..., nn.Module],
                 device: torch.device, surrogate: nn.Module | None = None) -> Path:
    """The checklist on one finished model of the study, saved to ``folder``.

    ``load(slot, folder, sha256, device)`` gives the handle's model; the surrogate named in the
    block is loaded here unless the caller passes it (loaded once for many models).
    """
    from annt.robustness.store import save_diagnose

    block, slot = plan.spec.diagnose, handle.slot
    if surrogate is None and block.surrogate:
        from annt.zoo import load_model

        surrogate = load_model(block.surrogate, device=device)
    result = diagnose(
        load(slot, handle.folder, handle.sha256, device), slot.dataset, samples=block.samples, eps=block.eps,
        norm=block.norm, attacks=block.attacks, params=block.params, surrogate=surrogate,
        seed=plan.spec.seed, data_dir=plan.spec.data_dir, tolerance=block.tolerance, grow=block.grow,
        selftest=block.selftest, ensemble=block.ensemble,
    )
    user = getattr(slot, "user", None)  # a user's own model: as the spec names it
    result.checkpoint = slot.zoo_name or (user.shown if user is not None else str(handle.folder))
    result.meta |= {"settings": settings, "model": slot.model, "bits_tag": slot.bits.tag,
                    "surrogate": block.surrogate}
    save_diagnose(folder, result)
    return folder


def diagnose_models(plan: Any, handles: dict[str, Any], load: Callable[..., nn.Module],
                    run_parallel: Callable[[list[Job]], None] | None = None) -> list[Path]:
    """Run (or reuse) the checklist for each finished model of the study; returns the folders.

    Runs after the cell graph (the checklist is one unit per model, not a cell).
    ``load(slot, folder, sha256, device)`` gives a handle's model: the study passes its
    workspace's verifying loader (this layer does not import the experiments layer above it).
    ``run_parallel(jobs)``, when given, runs the unfinished models elsewhere (the study's
    local worker processes, each calling ``diagnose_one``); otherwise they run here in turn.
    """
    block = plan.spec.diagnose
    settings = block.model_dump(mode="json") | {"seed": plan.spec.seed}
    folders: list[Path] = []
    jobs: list[Job] = []
    for handle in handles.values():
        slot = handle.slot
        folder = plan.out_dir / FOLDER / f"{slug(slot.dataset)}-{slug(slot.model)}-{slot.bits.tag}"
        folders.append(folder)
        if not _done(folder, settings):
            jobs.append((handle, folder, settings))
    if run_parallel is not None and len(jobs) > 1:
        run_parallel(jobs)
        return folders
    surrogate = None
    if block.surrogate and jobs:
        from annt.zoo import load_model

        surrogate = load_model(block.surrogate, device=plan.device)
    for handle, folder, _ in jobs:
        diagnose_one(plan, handle, folder, settings, load, plan.device, surrogate)
    return folders
