"""Model cells: ``train`` a slot's model, or ``load`` the checkpoint the spec gives; table ``models``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from annt.errors import AnntError
from annt.experiments.kinds.base import CellKind, Measured
from annt.experiments.plan import Cell, ModelSlot, StudyPlan
from annt.experiments.table import INT, REAL, TEXT, Facts, Field, Table, fact, kinds
from annt.experiments.tasks import Done, Task, Workspace, relative
from annt.inputs.fit import check_fits
from annt.inputs.hashing import file_digest
from annt.models.inference import accuracy
from annt.store.checkpoint import WEIGHTS, read_meta, verify_checkpoint
from annt.store.naming import slug
from annt.store.results import ResultsDB

MODELS = Table("models", "model", (
    Field("dataset", lambda f: f.slot.dataset, TEXT, key=True),
    Field("model", lambda f: f.slot.model, TEXT, key=True),
    Field("bits", lambda f: str(f.slot.bits), TEXT, key=True),
    Field("bits_tag", lambda f: f.slot.bits.tag, TEXT),
    Field("origin", lambda f: _origin(f.slot) if f.cell.kind != "train" else "train", TEXT, key=True),
    Field("checkpoint", fact("checkpoint"), TEXT),  # the zoo name or given folder; a trained model's best/
    # a user's model: files' sha256, args...; a deployed twin: export settings and source model's sha256
    Field("source", lambda f: f.source, TEXT, kinds=kinds("load", "export")),
    Field("deployment", lambda f: f.deployment, key=True, kinds=kinds("export")),
    Field("sha256", fact("sha256"), TEXT),  # weights; a given checkpoint's is known before loading:
    Field("given_sha256", fact("sha256"), key="sha256", kinds=kinds("load")),
    Field("recipe", lambda f: f.slot.recipe, key=True, kinds=kinds("train")),
    Field("train_limit", lambda f: f.slot.train.train_limit, key=True, kinds=kinds("train")),
    Field("train_seed", lambda f: f.slot.train.seed, key="seed", kinds=kinds("train")),
    Field("test_accuracy", fact("test_accuracy"), REAL),
    Field("validation_accuracy", fact("validation_accuracy"), REAL),
    Field("epochs", fact("epochs"), INT),
))


def _origin(slot: ModelSlot) -> str:
    """``checkpoint``, how a user's model is given (``factory``, ``torchscript``, ``onnx``), or
    ``deploy:FORMAT`` for a deployed twin."""
    if slot.deploy is not None:
        return f"deploy:{slot.deploy.format}"
    return "checkpoint" if slot.user is None else slot.user.source


# ---------------------------------------------------------------------------- train


def _train_inputs(plan: StudyPlan, cell: Cell, deps: dict[str, Done], facts: Facts) -> Facts:
    return facts


def _train(task: Task, facts: Facts, dev: torch.device, ws: Workspace, table: Table) -> tuple[dict[str, Any], Measured]:
    """Train the slot's model (resuming an interrupted training from its ``last/`` checkpoint)."""
    from annt.train import train_model

    plan, slot = task.plan, facts.slot
    folder = plan.out_dir / "models" / slot.dataset / f"{slug(slot.model)}-{slot.bits.tag}-{task.hash[:8]}"
    result = train_model(
        slot.model, slot.dataset, slot.bits, folder, epochs=slot.train.epochs,
        seed=slot.train.seed, data_dir=plan.spec.data_dir, device=dev,
        progress=task.progress, train_limit=slot.train.train_limit, **slot.train.recipe_overrides,
    )
    sha = file_digest(result.best / WEIGHTS)
    measured = {"checkpoint": relative(plan, result.best), "sha256": sha, "test_accuracy": result.test_accuracy,
                "validation_accuracy": result.validation_accuracy, "epochs": result.epochs}
    return {"checkpoint": relative(plan, result.best), "sha256": sha}, measured


def intact_model(out: Path, db: ResultsDB, h: str, outputs: dict[str, Any]) -> bool:
    """A trained checkpoint still verifies and has the recorded weights; else its run folder is removed.

    Removing it (only ever inside ``OUTDIR/models``) makes the retraining start afresh
    instead of resuming from a damaged ``last/``.
    """
    best = out / outputs["checkpoint"]
    try:  # the database's weights hash is the proof; a seal, when present, is checked too
        meta = verify_checkpoint(best, trust_unverified=True)
        if file_digest(best / WEIGHTS) == outputs["sha256"] and meta.get("weights_sha256") in (None, outputs["sha256"]):
            return True
    except AnntError:
        pass
    run_dir = best.parent.resolve()
    models = (out / "models").resolve()
    if models in run_dir.parents and run_dir.is_dir():
        shutil.rmtree(run_dir)
    return False


TRAIN = CellKind("train", MODELS, _train_inputs, _train, intact_model, exact_float32=False)

# ---------------------------------------------------------------------------- load


def _load_inputs(plan: StudyPlan, cell: Cell, deps: dict[str, Done], facts: Facts) -> Facts:
    """The given checkpoint's folder and weights sha256 (part of the key: known before loading);
    for a user's model its main file and the sha256 of its identity (files, args, normalisation)."""
    user = facts.slot.user
    if user is not None:
        source = json.dumps(user.identity(), sort_keys=True, default=str)
        return facts.but(folder=Path(user.location), sha256=user.digest(), source=source)
    assert facts.slot.checkpoint is not None
    folder = facts.slot.checkpoint.resolve()
    sha = read_meta(folder).get("weights_sha256") or file_digest(folder / WEIGHTS)
    return facts.but(folder=folder, sha256=sha, source=None)


def _load(task: Task, facts: Facts, dev: torch.device, ws: Workspace, table: Table) -> tuple[dict[str, Any], Measured]:
    slot, folder, sha = facts.slot, facts.folder, facts.sha256
    model = ws.model(slot, folder, sha, dev)
    test = ws.test_set(task.plan, slot.dataset)
    user = slot.user
    check_fits(model.annt_meta, test.x, test.y, f"dataset {slot.dataset}",
               f"model {user.shown}" if user is not None else f"checkpoint {folder}")
    meta = read_meta(folder) if user is None else {}
    measured = {"checkpoint": slot.zoo_name or (user.shown if user is not None else str(folder)),
                "test_accuracy": accuracy(model, test.x, test.y),
                "validation_accuracy": meta.get("validation_accuracy"), "epochs": meta.get("epochs")}
    return {"checkpoint": str(folder), "sha256": sha}, measured


def _given_checkpoint_intact(out: Path, db: ResultsDB, h: str, outputs: dict[str, Any]) -> bool:
    """A given checkpoint is verified when the plan is built and again when it is loaded."""
    return True


LOAD = CellKind("load", MODELS, _load_inputs, _load, _given_checkpoint_intact)
