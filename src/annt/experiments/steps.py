"""What each kind of study cell computes: its key (identity) and its files, row and outputs.

The key, the row and an adversarial set's metadata are derived from the cell's table schema
(``annt.experiments.schema``) and the cell's facts: ``given`` (known before it runs) plus what
its step measured (the schema maps both to key fields, columns and metadata; the steps do not
build rows). ``cell_key`` runs in the driver (it needs only the plan and the dependencies'
results); ``compute`` runs wherever the executor puts the cell (this process, a local worker process
or a Ray worker): it reads models and sets from the output folder, writes its own files
atomically and returns the outputs and database row, which the driver alone records.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from annt.data import ImageSet, load_dataset
from annt.data.sampling import sample_correct
from annt.device import exact_float32
from annt.experiments.attack_api import craft
from annt.experiments.cells import derive_seed
from annt.experiments.graph import Cell, model_id
from annt.experiments.plan import AttackConfig, ModelSlot, StudyPlan
from annt.experiments.schema import Facts, table_of
from annt.experiments.trust import load_slot_model
from annt.inputs.fit import check_fits
from annt.inputs.hashing import file_digest
from annt.metrics import evaluate_set, match_clean
from annt.models.inference import accuracy
from annt.store.adversarial_set import AdversarialSet, load_recorded_set, save_adversarial_set
from annt.store.atomic import atomic_save_npz
from annt.store.checkpoint import WEIGHTS, read_meta
from annt.store.naming import slug


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
        """The slot's model: zoo entries checked against the manifest, given folders against their seal."""
        key = (str(folder), f"{sha}@{device}", slot.zoo_name, slot.trust_unverified)
        if key not in self.models:
            self.models[key] = load_slot_model(slot, folder, device)  # verifies hashes and seal
        return self.models[key]


WORKSPACE = Workspace()


@dataclass(frozen=True)
class _Model:
    """A finished model cell: slot, folder, weights sha256 and cell hash."""

    slot: ModelSlot
    folder: Path
    sha256: str
    cell: str


def _model(plan: StudyPlan, slot: ModelSlot, deps: dict[str, Done]) -> _Model:
    done = deps[model_id(slot)]
    return _Model(slot, plan.out_dir / done.outputs["checkpoint"], done.outputs["sha256"], done.hash)


def model_of(plan: StudyPlan, slot: ModelSlot, done: dict[str, Done]) -> _Model:
    """The finished model cell of ``slot`` (for the work that follows the cell graph: diagnose)."""
    return _model(plan, slot, done)


def sample_seed(plan: StudyPlan, run: int) -> int:
    return derive_seed(plan.spec.seed, "sample", run)


def attack_seed(plan: StudyPlan, run: int, slot: ModelSlot, attack: AttackConfig) -> int:
    return derive_seed(plan.spec.seed, "attack", run, slot.key, attack.label)


# ---------------------------------------------------------------------------- facts and keys


def given(plan: StudyPlan, cell: Cell, deps: dict[str, Done]) -> Facts:
    """What is known about a cell before it runs: the facts its key (and most of its row) come from.

    Derived the same way in the driver (for the key) and in the worker (for the row), from the
    plan, the cell and its finished dependencies.
    """
    slot, attack = cell.slot, cell.attack
    assert slot is not None
    facts = Facts(plan=plan, cell=cell, slot=slot, attack=attack, run=cell.run)
    if cell.kind == "load":
        assert slot.checkpoint is not None
        folder = slot.checkpoint.resolve()
        sha = read_meta(folder).get("weights_sha256") or file_digest(folder / WEIGHTS)
        return facts.but(folder=folder, sha256=sha)
    if cell.kind == "train":
        return facts
    assert attack is not None
    facts = facts.but(source=_model(plan, slot, deps), sample_seed=sample_seed(plan, cell.run),
                      attack_seed=attack_seed(plan, cell.run, slot, attack))
    if cell.kind in ("evaluate", "transfer"):
        assert cell.target is not None
        facts = facts.but(target=_model(plan, cell.target, deps), crafted=deps[cell.deps[0]])
    return facts


def cell_key(plan: StudyPlan, cell: Cell, deps: dict[str, Done]) -> dict[str, Any]:
    """The key a cell's hash covers (without the ANNT version, which ``CellBook`` adds).

    Its fields are the ``key`` fields of the cell's table schema (``annt.experiments.schema``).
    """
    if not cell.stored:
        raise ValueError(f"cell {cell.id} is not stored")
    return table_of(cell.kind).key(given(plan, cell, deps), cell.kind)


# ---------------------------------------------------------------------------- compute

Measured = dict[str, Any]
"""What a step measured (facts the schema's row fields read: ``path``, ``sha256``, ``summary`` ...)."""


def compute(task: Task, device: torch.device | None = None, ws: Workspace = WORKSPACE) -> Finished:
    """Compute one cell's files and row (``device`` overrides the plan's, for pinned workers)."""
    dev = device or task.plan.device
    tic = time.perf_counter()
    kind = task.cell.kind
    if kind != "train":
        exact_float32(dev)  # attacks end on the decision boundary: no TF32 (see annt.device)
    facts = given(task.plan, task.cell, task.deps).but(hash=task.hash)
    fn = {"train": _train, "load": _load, "craft": _craft, "evaluate": _evaluate, "transfer": _evaluate,
          "progression": _progression}[kind]
    outputs, measured = fn(task, facts, dev, ws)
    table = table_of(kind)
    row = table.row(facts.but(**measured), kind)
    return Finished(task.hash, table.kind, task.key, outputs, table.name, row, time.perf_counter() - tic)


def _rel(plan: StudyPlan, path: Path) -> str:
    return path.relative_to(plan.out_dir).as_posix()


def _load(task: Task, facts: Facts, dev: torch.device, ws: Workspace) -> tuple[dict[str, Any], Measured]:
    slot, folder, sha = facts.slot, facts.folder, facts.sha256
    model = ws.model(slot, folder, sha, dev)
    test = ws.test_set(task.plan, slot.dataset)
    check_fits(model.annt_meta, test.x, test.y, f"dataset {slot.dataset}", f"checkpoint {folder}")
    meta = read_meta(folder)
    measured = {"checkpoint": slot.zoo_name or str(folder), "test_accuracy": accuracy(model, test.x, test.y),
                "validation_accuracy": meta.get("validation_accuracy"), "epochs": meta.get("epochs")}
    return {"checkpoint": str(folder), "sha256": sha}, measured


def _train(task: Task, facts: Facts, dev: torch.device, ws: Workspace) -> tuple[dict[str, Any], Measured]:
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
    measured = {"checkpoint": _rel(plan, result.best), "sha256": sha, "test_accuracy": result.test_accuracy,
                "validation_accuracy": result.validation_accuracy, "epochs": result.epochs}
    return {"checkpoint": _rel(plan, result.best), "sha256": sha}, measured


def _samples(task: Task, source: _Model, model: nn.Module, n: int, seed: int, ws: Workspace) -> ImageSet:
    """Correctly classified test images of ``source`` (seeded); shared by all attacks of a run."""
    key = (source.cell, n, seed)
    if key not in ws.samples:
        ws.samples[key] = sample_correct(model, ws.test_set(task.plan, source.slot.dataset), n, seed)
    return ws.samples[key]


def _craft(task: Task, facts: Facts, dev: torch.device, ws: Workspace) -> tuple[dict[str, Any], Measured]:
    """Sample correctly classified test images (seeded per run) and attack them on the source."""
    plan, cell, h = task.plan, task.cell, task.hash
    attack, run, source = facts.attack, facts.run, facts.source
    model = ws.model(source.slot, source.folder, source.sha256, dev)
    chosen = _samples(task, source, model, plan.spec.samples, facts.sample_seed, ws)
    bar = tqdm(total=len(chosen), desc=f"  {attack.label} on {source.slot.model}-{source.slot.bits.tag}"
               f" run {run}", unit="img", leave=False, disable=not task.progress)
    tic = time.perf_counter()
    result = craft(
        attack.name, model, chosen.x.to(dev), chosen.y.to(dev), attack.params,
        seed=facts.attack_seed, backend=attack.backend, chunk=attack.chunk, on_chunk=bar.update,
    )
    seconds = time.perf_counter() - tic
    bar.close()
    costs = {k: getattr(result, k).detach().cpu() for k in ("iterations", "forward_passes", "backward_passes")}
    path = plan.out_dir / "sets" / source.slot.dataset / f"{slug(source.slot.model)}-{source.slot.bits.tag}" \
        / slug(attack.label) / f"run{run}-{h[:8]}.npz"
    adv = AdversarialSet(
        result.adversarial.detach().cpu().float(), chosen.y, chosen.index, result.success.detach().cpu(),
        costs, {k: v.detach().cpu() for k, v in result.extras.items()},
        table_of(cell.kind).meta(facts.but(seconds=seconds), cell.kind),
    )
    save_adversarial_set(path, adv)
    measured = {
        "path": _rel(plan, path), "sha256": file_digest(path), "n": len(chosen),
        "source_success_rate": float(adv.success.float().mean()),
        "mean_iterations": float(costs["iterations"].double().mean()),
        "mean_forward_passes": float(costs["forward_passes"].double().mean()),
        "mean_backward_passes": float(costs["backward_passes"].double().mean()),
        "seconds": seconds,
    }
    return {"path": _rel(plan, path)}, measured


def _evaluate(task: Task, facts: Facts, dev: torch.device, ws: Workspace) -> tuple[dict[str, Any], Measured]:
    """Apply a set to its source (direct) or to another model (transfer protocol)."""
    plan, cell = task.plan, task.cell
    source, target, crafted = facts.source, facts.target, facts.crafted
    adv_set = load_recorded_set(plan.out_dir / crafted.outputs["path"], crafted.sha256)  # the DB's sha256
    clean = match_clean(adv_set, ws.test_set(plan, target.slot.dataset))
    ev = evaluate_set(ws.model(target.slot, target.folder, target.sha256, dev), adv_set, clean,
                      mode=task.key["mode"], max_samples=plan.spec.samples, criterion=plan.spec.flag)
    src, tgt = source.slot, target.slot
    path = plan.out_dir / "records" / src.dataset / f"{slug(src.model)}-{src.bits.tag}" \
        / slug(facts.attack.label) / f"run{cell.run}-{slug(tgt.model)}-{tgt.bits.tag}-{task.hash[:8]}.npz"
    atomic_save_npz(path, **ev.records.to_arrays())
    return {"records": _rel(plan, path)}, {"records_path": _rel(plan, path), "summary": ev.summary}


def _progression(task: Task, facts: Facts, dev: torch.device, ws: Workspace) -> tuple[dict[str, Any], Measured]:
    """Boundary Attack on a few images at growing iteration counts, same seed (paper Figure 3)."""
    plan, attack, source = task.plan, facts.attack, facts.source
    model = ws.model(source.slot, source.folder, source.sha256, dev)
    pool = _samples(task, source, model, plan.spec.samples, facts.sample_seed, ws)  # run 0's images: first k
    chosen = pool.subset(torch.arange(min(task.key["images"], len(pool))))
    x, y = chosen.x.to(dev), chosen.y.to(dev)
    frames, success = [], []
    for it in tqdm(attack.progression, desc=f"  progression {attack.label}", leave=False,
                   disable=not task.progress):
        result = craft(attack.name, model, x, y, {**attack.params, "max_iter": it},
                       seed=facts.attack_seed, backend=attack.backend, chunk=len(x))
        frames.append(result.adversarial.detach().cpu().float().numpy())
        success.append(result.success.detach().cpu().numpy())
    path = plan.out_dir / "progressions" / source.slot.dataset / \
        f"{slug(source.slot.model)}-{source.slot.bits.tag}-{slug(attack.label)}-{task.hash[:8]}.npz"
    atomic_save_npz(
        path, iterations=np.asarray(attack.progression, dtype=np.int64), images=np.stack(frames),
        success=np.stack(success), clean=chosen.x.numpy(), labels=chosen.y.numpy(),
        image_index=chosen.index.numpy(),
    )
    return {"path": _rel(plan, path)}, {"path": _rel(plan, path)}
