"""Progression cells: the Boundary Attack on a few images at growing iteration counts, same seed
(paper Figure 3); the frames in a file, table ``progressions``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from annt.experiments.attack_api import craft
from annt.experiments.kinds.base import CellKind, Measured, attack_inputs, file_exists
from annt.experiments.kinds.sets import samples
from annt.experiments.table import TEXT, Facts, Field, Table, fact
from annt.experiments.tasks import Task, Workspace, relative
from annt.progress import Progress
from annt.store.atomic import atomic_save_npz
from annt.store.naming import slug

PROGRESSIONS = Table("progressions", "progression", (
    Field("dataset", lambda f: f.slot.dataset, TEXT, key=True),
    Field("model", lambda f: f.slot.model, TEXT),
    Field("bits", lambda f: str(f.slot.bits), TEXT),
    Field("bits_tag", lambda f: f.slot.bits.tag, TEXT),
    Field("source_sha", lambda f: f.source.sha256, key="source"),
    Field("attack", lambda f: f.attack.name, key=True),
    Field("label", lambda f: f.attack.label, TEXT, key=True),
    Field("params", lambda f: f.attack.params, key=True),
    Field("backend", lambda f: f.attack.backend, key=True),
    Field("path", fact("path"), TEXT),
    Field("iterations", lambda f: list(f.attack.progression), TEXT, key=True),
    Field("images", lambda f: f.plan.spec.report.progression.images, key=True),
    Field("sample_seed", lambda f: f.sample_seed, key=True),
    Field("seed", lambda f: f.attack_seed, key=True),
))


def _progression(task: Task, facts: Facts, dev: torch.device, ws: Workspace,
                 table: Table) -> tuple[dict[str, Any], Measured]:
    """Boundary Attack on a few images at growing iteration counts, same seed (paper Figure 3)."""
    plan, attack, source = task.plan, facts.attack, facts.source
    model = ws.model(source.slot, source.folder, source.sha256, dev)
    pool = samples(task, source, model, plan.spec.samples, facts.sample_seed, ws)  # run 0's images: first k
    chosen = pool.subset(torch.arange(min(task.key["images"], len(pool))))
    x, y = chosen.x.to(dev), chosen.y.to(dev)
    frames, success = [], []
    bar = Progress(len(attack.progression), f"  progression {attack.label}", "steps", transient=True,
                   enabled=task.progress)
    for it in attack.progression:
        result = craft(attack.name, model, x, y, {**attack.params, "max_iter": it},
                       seed=facts.attack_seed, backend=attack.backend, chunk=len(x))
        frames.append(result.adversarial.detach().cpu().float().numpy())
        success.append(result.success.detach().cpu().numpy())
        bar.update(1)
    bar.close()
    path = plan.out_dir / "progressions" / source.slot.dataset / \
        f"{slug(source.slot.model)}-{source.slot.bits.tag}-{slug(attack.label)}-{task.hash[:8]}.npz"
    atomic_save_npz(
        path, iterations=np.asarray(attack.progression, dtype=np.int64), images=np.stack(frames),
        success=np.stack(success), clean=chosen.x.numpy(), labels=chosen.y.numpy(),
        image_index=chosen.index.numpy(),
    )
    return {"path": relative(plan, path)}, {"path": relative(plan, path)}


PROGRESSION = CellKind("progression", PROGRESSIONS, attack_inputs, _progression, file_exists("path"))
