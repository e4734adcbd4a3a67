"""What passes between the driver and the workers, and what a worker keeps between cells.

``Task``: one cell to compute (picklable); ``Done``: a finished cell as the cells depending on
it see it; ``Finished``: a computed cell's outputs and row, which the driver alone records.
``Workspace``: per-process caches (test splits, loaded models, sampled images). Also the
helpers every kind's inputs use: a finished model (``ModelRef``) and the seeds of a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from annt.data import ImageSet, load_dataset
from annt.experiments.cells import derive_seed
from annt.experiments.checkpoints import load_deployed_twin, load_slot_model
from annt.experiments.plan import AttackConfig, Cell, ModelSlot, StudyPlan, model_id


@dataclass(frozen=True)
class Done:
    """A finished cell as the cells depending on it see it: its hash and outputs.

    ``sha256`` is the recorded hash of a crafted set (its ``attack_sets`` row): the cells
    reading the set check it, wherever they run (workers have no database).
    """

    hash: str
    outputs: dict[str, Any]
    sha256: str | None = None


@dataclass(frozen=True)
class Task:
    """Everything needed to compute one cell (picklable: models and sets come from the store)."""

    plan: StudyPlan
    cell: Cell
    key: dict[str, Any]
    hash: str
    deps: dict[str, Done]
    progress: bool = False


@dataclass(frozen=True)
class Finished:
    """What a computed cell hands back to the driver, which records it in one transaction."""

    hash: str
    kind: str
    key: dict[str, Any]
    outputs: dict[str, Any]
    table: str
    row: dict[str, Any]
    seconds: float


@dataclass
class Workspace:
    """Per-process caches (test splits, loaded models, sampled images): never part of a result."""

    test_sets: dict[tuple[str, str | None], ImageSet] = field(default_factory=dict)
    models: dict[tuple[Any, ...], nn.Module] = field(default_factory=dict)
    samples: dict[tuple[str, int, int], ImageSet] = field(default_factory=dict)

    def test_set(self, plan: StudyPlan, dataset: str) -> ImageSet:
        key = (dataset, plan.spec.data_dir)
        if key not in self.test_sets:
            self.test_sets[key] = load_dataset(dataset, "test", plan.spec.data_dir)
        return self.test_sets[key]

    def model(self, slot: ModelSlot, folder: Path, sha: str, device: torch.device) -> nn.Module:
        """The slot's model: zoo entries checked against the manifest, given folders against their seal,
        a user's model against the sha256 of its files, a deployed twin against its sidecar and sha256."""
        key = (str(folder), f"{sha}@{device}", slot.zoo_name, slot.trust_unverified)
        if key not in self.models:
            user = getattr(slot, "user", None)  # (the diagnose hook's stand-in slots have none)
            if getattr(slot, "deploy", None) is not None:  # an ONNX file the study exported and sealed
                self.models[key] = load_deployed_twin(folder, sha)
            else:
                self.models[key] = (user.load(device, expected=sha) if user is not None
                                    else load_slot_model(slot, folder, device))  # verifies hashes and seal
        return self.models[key]


WORKSPACE = Workspace()


@dataclass(frozen=True)
class ModelRef:
    """A finished model cell: slot, folder, weights sha256 and cell hash."""

    slot: ModelSlot
    folder: Path
    sha256: str
    cell: str


def model_of(plan: StudyPlan, slot: ModelSlot, done: dict[str, Done]) -> ModelRef:
    """The finished model cell of ``slot`` (a cell's input; also the diagnosis after the graph)."""
    finished = done[model_id(slot)]
    return ModelRef(slot, plan.out_dir / finished.outputs["checkpoint"], finished.outputs["sha256"], finished.hash)


def sample_seed(plan: StudyPlan, run: int) -> int:
    return derive_seed(plan.spec.seed, "sample", run)


def attack_seed(plan: StudyPlan, run: int, slot: ModelSlot, attack: AttackConfig) -> int:
    return derive_seed(plan.spec.seed, "attack", run, slot.key, attack.label)


def relative(plan: StudyPlan, path: Path) -> str:
    """``path`` inside the output folder, as the database records it."""
    return path.relative_to(plan.out_dir).as_posix()
