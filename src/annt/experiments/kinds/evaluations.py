"""Evaluation cells: apply a crafted set to its source model (``evaluate``, direct) or to another
model (``transfer``); per-image records in a file, the summary in table ``results``."""

from __future__ import annotations

from typing import Any

import torch

from annt.experiments.kinds.base import CellKind, Measured, attack_inputs, file_exists
from annt.experiments.plan import Cell, StudyPlan
from annt.experiments.table import INT, REAL, TEXT, Facts, Field, Table, fact
from annt.experiments.tasks import Done, Task, Workspace, model_of, relative
from annt.metrics import evaluate_set, match_clean
from annt.metrics.records import SUMMARY_KEYS
from annt.store.adversarial_set import load_recorded_set
from annt.store.atomic import atomic_save_npz
from annt.store.naming import slug

_SUMMARY_INT = {"n_kept", "n_correct", "n_success", "n_flagged"}

RESULTS = Table("results", "evaluate", (
    Field("dataset", lambda f: f.slot.dataset, TEXT),
    Field("attack", lambda f: f.attack.name, TEXT),
    Field("label", lambda f: f.attack.label, TEXT),
    Field("params", lambda f: f.attack.params, TEXT),
    Field("run", lambda f: f.run, INT),
    Field("mode", lambda f: "direct" if f.cell.kind == "evaluate" else "transfer", TEXT, key=True),
    Field("source_model", lambda f: f.slot.model, TEXT),
    Field("source_bits", lambda f: f.slot.bits.tag, TEXT),
    Field("target_model", lambda f: f.target.slot.model, TEXT),
    Field("target_bits", lambda f: f.target.slot.bits.tag, TEXT),
    Field("source_sha", lambda f: f.source.sha256, TEXT),
    Field("target_sha", lambda f: f.target.sha256, TEXT, key="target"),
    Field("set_cell", lambda f: f.crafted.hash, TEXT, key="set"),
    Field("set_path", lambda f: f.crafted.outputs["path"], TEXT),
    Field("max_samples", lambda f: f.plan.spec.samples, key=True),
    Field("flag", lambda f: f.plan.spec.flag.model_dump(), key=True),
    Field("records_path", fact("records_path"), TEXT),
    Field("n_total", lambda f: f.summary["n_total"], INT),
    *(Field(k, lambda f, k=k: f.summary[k], INT if k in _SUMMARY_INT else REAL) for k in SUMMARY_KEYS),
))


def _inputs(plan: StudyPlan, cell: Cell, deps: dict[str, Done], facts: Facts) -> Facts:
    """The source's inputs, the target model and the crafted set (the cell's first dependency)."""
    assert cell.target is not None
    return attack_inputs(plan, cell, deps, facts).but(target=model_of(plan, cell.target, deps),
                                                      crafted=deps[cell.deps[0]])


def _evaluate(task: Task, facts: Facts, dev: torch.device, ws: Workspace, table: Table) -> tuple[dict[str, Any], Measured]:
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
    return {"records": relative(plan, path)}, {"records_path": relative(plan, path), "summary": ev.summary}


EVALUATE = CellKind("evaluate", RESULTS, _inputs, _evaluate, file_exists("records"))
TRANSFER = CellKind("transfer", RESULTS, _inputs, _evaluate, file_exists("records"))
