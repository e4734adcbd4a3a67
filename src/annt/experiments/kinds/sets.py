"""Craft cells: sample a run's correctly classified test images and attack them on the source
model; the adversarial set is a file (table ``attack_sets``) that evaluation cells read."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from annt.data import ImageSet
from annt.data.sampling import sample_correct
from annt.errors import AnntError
from annt.experiments.attack_api import UNIVERSAL, craft
from annt.experiments.kinds.base import SET_SHA256, CellKind, Measured, attack_inputs
from annt.experiments.table import INT, REAL, TEXT, Facts, Field, Table, fact
from annt.experiments.tasks import ModelRef, Task, Workspace, relative
from annt.inputs.hashing import file_digest
from annt.progress import Progress
from annt.store.adversarial_set import AdversarialSet, load_recorded_set, save_adversarial_set
from annt.store.naming import slug
from annt.store.results import ResultsDB

ATTACK_SETS = Table("attack_sets", "craft", (
    Field("dataset", lambda f: f.slot.dataset, TEXT, key=True, meta=True),
    Field("split", lambda f: "test", meta=True),
    Field("model", lambda f: f.slot.model, TEXT, meta=True),
    Field("bits", lambda f: str(f.slot.bits), TEXT, meta=True),
    Field("bits_tag", lambda f: f.slot.bits.tag, TEXT),
    Field("source_sha", lambda f: f.source.sha256, TEXT, key="source", meta="weights_sha256"),
    Field("source_checkpoint", lambda f: str(f.source.folder), meta="checkpoint"),
    Field("attack", lambda f: f.attack.name, TEXT, key=True, meta=True),
    Field("label", lambda f: f.attack.label, TEXT, key=True, meta=True),
    Field("params", lambda f: f.attack.params, TEXT, key=True, meta=True),
    Field("backend", lambda f: f.attack.backend, key=True, meta=True),
    Field("chunk", lambda f: None if f.attack.name in UNIVERSAL else f.attack.chunk, key=True),
    Field("run", lambda f: f.run, INT, key=True, meta=True),
    Field("seed", lambda f: f.attack_seed, INT, key="attack_seed", meta=True),
    Field("sample_seed", lambda f: f.sample_seed, key=True, meta=True),
    Field("requested_samples", lambda f: f.plan.spec.samples, key="samples"),
    Field("samples", fact("n"), INT),  # images sampled (fewer than requested when the test split lacks them)
    Field("cell", lambda f: f.hash, meta=True),
    Field("path", fact("path"), TEXT),
    Field(SET_SHA256, fact("sha256"), TEXT),  # the npz file's (the sidecar seals itself)
    Field("n", fact("n"), INT),
    Field("source_success_rate", fact("source_success_rate"), REAL),
    Field("mean_iterations", fact("mean_iterations"), REAL),
    Field("mean_forward_passes", fact("mean_forward_passes"), REAL),
    Field("mean_backward_passes", fact("mean_backward_passes"), REAL),
    Field("seconds", fact("seconds"), REAL, meta=True),
))


def samples(task: Task, source: ModelRef, model: nn.Module, n: int, seed: int, ws: Workspace) -> ImageSet:
    """Correctly classified test images of ``source`` (seeded); shared by all attacks of a run."""
    key = (source.cell, n, seed)
    if key not in ws.samples:
        ws.samples[key] = sample_correct(model, ws.test_set(task.plan, source.slot.dataset), n, seed)
    return ws.samples[key]


def _craft(task: Task, facts: Facts, dev: torch.device, ws: Workspace, table: Table) -> tuple[dict[str, Any], Measured]:
    """Sample correctly classified test images (seeded per run) and attack them on the source."""
    plan, cell, h = task.plan, task.cell, task.hash
    attack, run, source = facts.attack, facts.run, facts.source
    model = ws.model(source.slot, source.folder, source.sha256, dev)
    chosen = samples(task, source, model, plan.spec.samples, facts.sample_seed, ws)
    bar = Progress(len(chosen), f"  {attack.label} on {source.slot.model}-{source.slot.bits.tag} run {run}",
                   "images", transient=True, enabled=task.progress)
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
        table.meta(facts.but(seconds=seconds), cell.kind),
    )
    save_adversarial_set(path, adv, device=dev)
    measured = {
        "path": relative(plan, path), "sha256": file_digest(path), "n": len(chosen),
        "source_success_rate": float(adv.success.float().mean()),
        "mean_iterations": float(costs["iterations"].double().mean()),
        "mean_forward_passes": float(costs["forward_passes"].double().mean()),
        "mean_backward_passes": float(costs["backward_passes"].double().mean()),
        "seconds": seconds,
    }
    return {"path": relative(plan, path)}, measured


def intact_set(out: Path, db: ResultsDB, h: str, outputs: dict[str, Any]) -> bool:
    """The crafted set exists, hashes to the sha256 the database recorded and passes its own checks."""
    try:
        load_recorded_set(out / outputs["path"], CRAFT.recorded_set_sha(db, h))
    except AnntError:
        return False
    return True


CRAFT = CellKind("craft", ATTACK_SETS, attack_inputs, _craft, intact_set, yields_set=True)
