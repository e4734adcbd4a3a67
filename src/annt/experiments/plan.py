"""The study plan, as data: model slots, attack configurations, cells and the cell graph.

A ``StudyPlan`` is what ``annt.experiments.builder.build_plan`` makes of a checked spec. Its
cells (``StudyPlan.cells``) name their kind, inputs (slot, attack, run, target) and the cells
they depend on. A cell's hash (its identity in the results database) is known once its
dependencies have finished, since it covers what they produced (a trained model's weights
sha256, a crafted set's hash): ``annt.experiments.steps.cell_key`` derives it. The plan's cell
count, ``annt run --check`` and the resume logic all read this one list. What each kind of
cell computes is in ``annt.experiments.kinds``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from annt.experiments.spec import StudySpec, TrainSettings
from annt.experiments.user_models import UserModel
from annt.quant.bits import BitSpec


@dataclass(frozen=True)
class DeployTwin:
    """How a deployed twin is made: ``origin`` (the PyTorch model's slot) exported as ``format``."""

    origin: ModelSlot
    format: str  # fp32 | int8 | dorefa
    int8_format: str
    calibration_images: int
    attacks: tuple[str, ...] = ()  # attack labels also run directly on the twin

    def settings(self) -> dict[str, Any]:
        """The export settings (part of the twin's cell key)."""
        out: dict[str, Any] = {"format": self.format, "calibration_images": self.calibration_images}
        if self.format == "int8":
            out["int8_format"] = self.int8_format
        return out


@dataclass(frozen=True)
class ModelSlot:
    """One (dataset, model, bitwidth): trained by the study, or loaded from ``checkpoint`` or ``user``."""

    dataset: str
    model: str
    bits: BitSpec
    checkpoint: Path | None
    train: TrainSettings
    recipe: dict[str, Any]
    spec_index: int
    zoo_name: str | None = None  # ``zoo:NAME`` as the spec wrote it: reports show it, not the install path
    trust_unverified: bool = False  # the spec allows a checkpoint without a sha256 seal
    user: UserModel | None = None  # a factory, TorchScript or ONNX model; ``model`` is its label
    deploy: DeployTwin | None = None  # a deployed twin, exported by the study from ``deploy.origin``

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.model}/{self.bits.tag}"

    @property
    def given(self) -> bool:
        """Loaded (a checkpoint or a user's model), not trained by the study."""
        return self.checkpoint is not None or self.user is not None


@dataclass(frozen=True)
class AttackConfig:
    """One attack configuration with parameters resolved for one dataset."""

    label: str
    name: str
    params: dict[str, Any]
    backend: str
    chunk: int
    progression: tuple[int, ...] = ()  # Boundary Attack: iteration counts for the figure


@dataclass(frozen=True)
class Cell:
    """One unit of work: its kind (``annt.experiments.kinds``), inputs and the ids of the cells
    whose results it uses."""

    id: str
    kind: str
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


@dataclass
class StudyPlan:
    spec: StudySpec
    source: str
    out_dir: Path
    device: torch.device
    slots: list[ModelSlot]
    attacks: dict[str, list[AttackConfig]]  # per dataset
    study_id: str = ""
    spec_dir: Path | None = None

    def sources(self, dataset: str) -> list[ModelSlot]:
        """The attacked models of ``dataset``: every PyTorch model, and deployed twins that run attacks."""
        return [s for s in self.slots if s.dataset == dataset and (s.deploy is None or s.deploy.attacks)]

    def attacks_of(self, source: ModelSlot) -> list[AttackConfig]:
        """The attacks run on ``source``: all the dataset's, or a twin's ``deploy.attacks`` only."""
        every = self.attacks[source.dataset]
        return every if source.deploy is None else [a for a in every if a.label in source.deploy.attacks]

    def targets(self, source: ModelSlot) -> list[ModelSlot]:
        """Transfer targets of ``source`` (itself excluded; it is evaluated directly).

        A PyTorch model's deployed twins are always its targets; a twin's only target is its
        PyTorch model. Twins are no target of any other model.
        """
        if source.deploy is not None:
            return [source.deploy.origin]
        twins = [t for t in self.slots if t.deploy is not None and t.deploy.origin is source]
        mode = self.spec.transfer
        if mode == "none":
            return twins
        return [
            t for t in self.slots
            if t.dataset == source.dataset and t is not source and t.deploy is None
            and (mode == "all" or t.model == source.model)
        ] + twins

    def cells(self, *, report: bool | None = None) -> list[Cell]:
        """The study's cells in serial order, each after its dependencies (see ``study_cells``)."""
        return list(study_cells(self, report=report))

    def cell_count(self) -> int:
        """Cells recorded in the database (the overall progress bar; the report is not one)."""
        return sum(1 for c in study_cells(self, report=False))


# ---------------------------------------------------------------------------- the cell graph


def model_id(slot: ModelSlot) -> str:
    return f"model:{slot.key}"


def study_cells(plan: StudyPlan, *, report: bool | None = None) -> Iterator[Cell]:
    """Every cell of ``plan`` in the serial order (each after its dependencies).

    Order: every model (a deployed twin, ``export``, after the model it is exported from); then
    per dataset, run, source model and attack: craft, evaluate
    directly, transfer to each target, and (run 0) the Boundary Attack progression; last
    the report when enabled (``report`` overrides ``report.enabled``).
    """
    ids: list[str] = []
    for slot in plan.slots:
        ids.append(model_id(slot))
        if slot.deploy is not None:
            yield Cell(model_id(slot), "export", (model_id(slot.deploy.origin),), slot)
        else:
            yield Cell(model_id(slot), "load" if slot.given else "train", (), slot)
    for dataset in plan.attacks:
        for run in range(plan.spec.runs):
            for slot in plan.sources(dataset):
                for attack in plan.attacks_of(slot):
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
