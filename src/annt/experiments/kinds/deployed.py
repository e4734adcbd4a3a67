"""Deployed twins: ``export`` a study model to the ONNX file that ships (``annt export``); table ``models``.

The file and its sealed sidecar are written to ``OUTDIR/deployed/DATASET/``; the twin's row in
``models`` records the file's sha256 and its clean test accuracy under ONNX Runtime. Its key
holds the export settings and the source model's weights sha256 (a retrained source, another
format or calibration makes another twin). A twin file that was edited is refused in one line
(``annt.experiments.checkpoints.check_deployed_twin``); a deleted one is exported again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from annt.experiments.checkpoints import check_deployed_twin
from annt.experiments.kinds.base import CellKind, Measured
from annt.experiments.kinds.models import MODELS
from annt.experiments.plan import Cell, StudyPlan
from annt.experiments.table import Facts, Table
from annt.experiments.tasks import Done, Task, Workspace, model_of, relative
from annt.models.inference import accuracy
from annt.store.naming import slug
from annt.store.results import ResultsDB


def _inputs(plan: StudyPlan, cell: Cell, deps: dict[str, Done], facts: Facts) -> Facts:
    """The source model (the cell's dependency) and the export settings with its weights sha256."""
    twin = facts.slot.deploy
    assert twin is not None
    origin = model_of(plan, twin.origin, deps)
    deployment = {**twin.settings(), "source_sha256": origin.sha256}
    return facts.but(origin=origin, deployment=deployment, source=json.dumps(deployment, sort_keys=True))


def _export(task: Task, facts: Facts, dev: torch.device, ws: Workspace, table: Table) -> tuple[dict[str, Any], Measured]:
    """Export the source model, check the file loads back sealed, measure its clean test accuracy."""
    from annt.data import load_dataset
    from annt.deploy.export import export_model
    from annt.deploy.runtime import require_onnx

    require_onnx()
    plan, slot, origin, twin = task.plan, facts.slot, facts.origin, facts.slot.deploy
    model = ws.model(origin.slot, origin.folder, origin.sha256, torch.device("cpu"))
    images = load_dataset(slot.dataset, "train", plan.spec.data_dir).x[: twin.calibration_images]
    path = plan.out_dir / "deployed" / slot.dataset / \
        f"{slug(origin.slot.model)}-{slot.bits.tag}-{twin.format}-{task.hash[:8]}.onnx"
    shown = origin.slot.zoo_name or (origin.slot.user.shown if origin.slot.user is not None else origin.slot.model)
    meta = export_model(model, path, twin.format, images, label=shown, int8_format=twin.int8_format)
    sha = meta["onnx_sha256"]
    test = ws.test_set(plan, slot.dataset)
    deployed = ws.model(slot, path, sha, dev)
    measured = {"checkpoint": relative(plan, path), "sha256": sha, "test_accuracy": accuracy(deployed, test.x, test.y),
                "validation_accuracy": None, "epochs": None}
    return {"checkpoint": relative(plan, path), "sha256": sha}, measured


def intact_twin(out: Path, db: ResultsDB, h: str, outputs: dict[str, Any]) -> bool:
    """A missing twin is exported again; an edited one (file or sidecar) is refused in one line."""
    path = out / outputs["checkpoint"]
    if not path.exists():
        return False
    check_deployed_twin(path, outputs["sha256"])
    return True


EXPORT = CellKind("export", MODELS, _inputs, _export, intact_twin)
