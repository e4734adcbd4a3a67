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

from torch import nn

from annt.robustness.runner import diagnose
from annt.robustness.store import JSON_NAME
from annt.store.naming import slug

FOLDER = "diagnose"


def _done(folder: Path, settings: dict[str, Any]) -> bool:
    try:
        return json.loads((folder / JSON_NAME).read_text())["meta"].get("settings") == settings
    except (OSError, ValueError, KeyError, TypeError):
        return False


def diagnose_models(plan: Any, handles: dict[str, Any], load: Callable[..., nn.Module]) -> list[Path]:
    """Run (or reuse) the checklist for each finished model of the study; returns the folders.

    Runs in the driver after the cell graph (the checklist is one unit per model, not a cell).
    ``load(slot, folder, sha256, device)`` gives a handle's model: the study passes its
    workspace's verifying loader (this layer does not import the experiments layer above it).
    """
    block = plan.spec.diagnose
    settings = block.model_dump(mode="json") | {"seed": plan.spec.seed}
    folders = []
    surrogate = None
    if block.surrogate:
        from annt.zoo import load_model

        surrogate = load_model(block.surrogate, device=plan.device)
    for handle in handles.values():
        slot = handle.slot
        folder = plan.out_dir / FOLDER / f"{slug(slot.dataset)}-{slug(slot.model)}-{slot.bits.tag}"
        folders.append(folder)
        if _done(folder, settings):
            continue
        result = diagnose(
            load(slot, handle.folder, handle.sha256, plan.device), slot.dataset, samples=block.samples, eps=block.eps,
            norm=block.norm, attacks=block.attacks, params=block.params, surrogate=surrogate,
            seed=plan.spec.seed, data_dir=plan.spec.data_dir, tolerance=block.tolerance,
            grow=block.grow,
        )
        result.checkpoint = slot.zoo_name or str(handle.folder)
        result.meta |= {"settings": settings, "model": slot.model, "bits_tag": slot.bits.tag,
                        "surrogate": block.surrogate}
        from annt.robustness.store import save_diagnose

        save_diagnose(folder, result)
    return folders
