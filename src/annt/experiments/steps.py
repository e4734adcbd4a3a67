"""The four kinds of study cells: model (train or load), craft, evaluate, progression.

Each ``*_cell`` function computes one cell's files under the output directory (atomically)
and returns the outputs and database row that ``CellBook`` records in one transaction.
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

from annt.data import ImageSet
from annt.data.sampling import sample_correct
from annt.experiments.attack_api import UNIVERSAL, craft
from annt.experiments.cells import CellBook, derive_seed
from annt.experiments.integrity import intact_model, intact_set
from annt.experiments.plan import AttackConfig, ModelSlot, StudyPlan
from annt.experiments.spec import slug
from annt.experiments.trust import load_slot_model
from annt.inputs.fit import check_fits
from annt.metrics import evaluate_set, match_clean
from annt.models.inference import accuracy
from annt.store.adversarial_set import AdversarialSet, load_recorded_set, save_adversarial_set
from annt.store.atomic import atomic_save_npz
from annt.store.checkpoint import WEIGHTS, read_meta
from annt.store.hashing import file_digest


@dataclass
class ModelHandle:
    """A model of the study: its slot, checkpoint folder, weights sha256 and cell hash."""

    slot: ModelSlot
    folder: Path
    sha256: str
    cell: str
    _model: nn.Module | None = field(default=None, repr=False)

    def load(self, device: torch.device) -> nn.Module:
        if self._model is None:
            self._model = load_slot_model(self.slot, self.folder, device)
        return self._model


@dataclass
class SetHandle:
    """A crafted adversarial set (file relative to the output directory) and its origin."""

    source: ModelHandle
    attack: AttackConfig
    run: int
    cell: str
    path: str


@dataclass
class StudyContext:
    plan: StudyPlan
    book: CellBook
    test_sets: dict[str, ImageSet]
    progress: bool = True
    _samples: dict[tuple[str, int, int], ImageSet] = field(default_factory=dict, repr=False)

    @property
    def out(self) -> Path:
        return self.plan.out_dir

    def rel(self, path: Path) -> str:
        return path.relative_to(self.out).as_posix()

    def samples(self, source: ModelHandle, n: int, seed: int) -> ImageSet:
        """Correctly classified test images of ``source`` (seeded); shared by all attacks of a run."""
        key = (source.cell, n, seed)
        if key not in self._samples:
            model = source.load(self.plan.device)
            self._samples[key] = sample_correct(model, self.test_sets[source.slot.dataset], n, seed)
        return self._samples[key]


# ---------------------------------------------------------------------------- models


def model_cell(ctx: StudyContext, slot: ModelSlot) -> ModelHandle:
    """Load a given checkpoint, or train the slot's model (resuming an interrupted training)."""
    plan = ctx.plan
    base = {"kind": "model", "dataset": slot.dataset, "model": slot.model, "bits": str(slot.bits)}
    if slot.checkpoint is not None:
        folder = slot.checkpoint.resolve()
        sha = read_meta(folder).get("weights_sha256") or file_digest(folder / WEIGHTS)
        key = {**base, "origin": "checkpoint", "sha256": sha}

        def load(h: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
            model = load_slot_model(slot, folder, plan.device)  # verifies hashes and seal
            test = ctx.test_sets[slot.dataset]
            check_fits(model.annt_meta, test.x, test.y, f"dataset {slot.dataset}", f"checkpoint {folder}")
            acc = accuracy(model, test.x, test.y)
            meta = read_meta(folder)
            row = {**_model_row(slot, "checkpoint", slot.zoo_name or str(folder), sha), "test_accuracy": acc,
                   "validation_accuracy": meta.get("validation_accuracy"), "epochs": meta.get("epochs")}
            return {"checkpoint": str(folder), "sha256": sha}, "models", row

        outcome = ctx.book.run("model", key, load)
        return ModelHandle(slot, folder, sha, outcome.hash)

    key = {**base, "origin": "train", "recipe": slot.recipe, "train_limit": slot.train.train_limit,
           "seed": slot.train.seed}

    def train(h: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
        from annt.train import train_model

        folder = ctx.out / "models" / slot.dataset / f"{slug(slot.model)}-{slot.bits.tag}-{h[:8]}"
        result = train_model(
            slot.model, slot.dataset, slot.bits, folder, epochs=slot.train.epochs,
            seed=slot.train.seed, data_dir=plan.spec.data_dir, device=plan.device,
            progress=ctx.progress, train_limit=slot.train.train_limit, **slot.train.recipe_overrides,
        )
        sha = file_digest(result.best / WEIGHTS)
        row = {**_model_row(slot, "train", ctx.rel(result.best), sha),
               "test_accuracy": result.test_accuracy,
               "validation_accuracy": result.validation_accuracy, "epochs": result.epochs}
        return {"checkpoint": ctx.rel(result.best), "sha256": sha}, "models", row

    outcome = ctx.book.run("model", key, train, intact=lambda h, out: intact_model(ctx, out))
    return ModelHandle(slot, ctx.out / outcome.outputs["checkpoint"], outcome.outputs["sha256"], outcome.hash)


def _model_row(slot: ModelSlot, origin: str, checkpoint: str, sha: str) -> dict[str, Any]:
    return {"dataset": slot.dataset, "model": slot.model, "bits": str(slot.bits),
            "bits_tag": slot.bits.tag, "origin": origin, "checkpoint": checkpoint, "sha256": sha}


# ---------------------------------------------------------------------------- crafting


def sample_seed(plan: StudyPlan, run: int) -> int:
    return derive_seed(plan.spec.seed, "sample", run)


def attack_seed(plan: StudyPlan, run: int, source: ModelHandle, attack: AttackConfig) -> int:
    return derive_seed(plan.spec.seed, "attack", run, source.slot.key, attack.label)


def craft_cell(ctx: StudyContext, source: ModelHandle, attack: AttackConfig, run: int) -> SetHandle:
    """Sample correctly classified test images (seeded per run) and attack them on ``source``."""
    plan = ctx.plan
    n, s_seed, a_seed = plan.spec.samples, sample_seed(plan, run), attack_seed(plan, run, source, attack)
    key = {
        "kind": "craft", "dataset": source.slot.dataset, "source": source.sha256,
        "attack": attack.name, "label": attack.label, "params": attack.params,
        "backend": attack.backend, "chunk": None if attack.name in UNIVERSAL else attack.chunk,
        "samples": n, "run": run, "sample_seed": s_seed, "attack_seed": a_seed,
    }

    def compute(h: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
        model = source.load(plan.device)
        chosen = ctx.samples(source, n, s_seed)
        bar = tqdm(total=len(chosen), desc=f"  {attack.label} on {source.slot.model}-{source.slot.bits.tag}"
                   f" run {run}", unit="img", leave=False, disable=not ctx.progress)
        tic = time.perf_counter()
        result = craft(
            attack.name, model, chosen.x.to(plan.device), chosen.y.to(plan.device), attack.params,
            seed=a_seed, backend=attack.backend, chunk=attack.chunk, on_chunk=bar.update,
        )
        seconds = time.perf_counter() - tic
        bar.close()
        costs = {k: getattr(result, k).detach().cpu() for k in ("iterations", "forward_passes", "backward_passes")}
        path = ctx.out / "sets" / source.slot.dataset / f"{slug(source.slot.model)}-{source.slot.bits.tag}" \
            / slug(attack.label) / f"run{run}-{h[:8]}.npz"
        meta = {
            "dataset": source.slot.dataset, "split": "test", "model": source.slot.model,
            "bits": str(source.slot.bits), "weights_sha256": source.sha256, "checkpoint": str(source.folder),
            "attack": attack.name, "label": attack.label, "params": attack.params, "seed": a_seed,
            "sample_seed": s_seed, "run": run, "backend": attack.backend, "cell": h,
            "seconds": round(seconds, 3),
        }
        adv = AdversarialSet(
            result.adversarial.detach().cpu().float(), chosen.y, chosen.index, result.success.detach().cpu(),
            costs, {k: v.detach().cpu() for k, v in result.extras.items()}, meta,
        )
        save_adversarial_set(path, adv)
        row = {
            "dataset": source.slot.dataset, "model": source.slot.model, "bits": str(source.slot.bits),
            "bits_tag": source.slot.bits.tag, "source_sha": source.sha256, "attack": attack.name,
            "label": attack.label, "params": attack.params, "run": run, "seed": a_seed, "samples": len(chosen),
            "path": ctx.rel(path), "sha256": file_digest(path), "n": len(chosen),
            "source_success_rate": float(adv.success.float().mean()),
            "mean_iterations": float(costs["iterations"].double().mean()),
            "mean_forward_passes": float(costs["forward_passes"].double().mean()),
            "mean_backward_passes": float(costs["backward_passes"].double().mean()),
            "seconds": seconds,
        }
        return {"path": ctx.rel(path)}, "attack_sets", row

    outcome = ctx.book.run("craft", key, compute, intact=lambda h, out: intact_set(ctx, h, out))
    return SetHandle(source, attack, run, outcome.hash, outcome.outputs["path"])


# ---------------------------------------------------------------------------- evaluation


def evaluate_cell(ctx: StudyContext, adv: SetHandle, target: ModelHandle) -> None:
    """Apply a set to its source (direct) or to another model (transfer protocol)."""
    plan = ctx.plan
    mode = "direct" if target is adv.source else "transfer"
    key = {"kind": "evaluate", "set": adv.cell, "target": target.sha256, "mode": mode,
           "max_samples": plan.spec.samples, "flag": plan.spec.flag.model_dump()}

    def compute(h: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
        adv_set = load_recorded_set(ctx.out / adv.path, ctx.book.db.value("attack_sets", adv.cell, "sha256"))
        clean = match_clean(adv_set, ctx.test_sets[target.slot.dataset])
        ev = evaluate_set(target.load(plan.device), adv_set, clean, mode=mode,
                          max_samples=plan.spec.samples, criterion=plan.spec.flag)
        src, tgt = adv.source.slot, target.slot
        path = ctx.out / "records" / src.dataset / f"{slug(src.model)}-{src.bits.tag}" / slug(adv.attack.label) \
            / f"run{adv.run}-{slug(tgt.model)}-{tgt.bits.tag}-{h[:8]}.npz"
        atomic_save_npz(path, **ev.records.to_arrays())
        row = {
            "dataset": src.dataset, "attack": adv.attack.name, "label": adv.attack.label,
            "params": adv.attack.params, "run": adv.run, "mode": mode, "source_model": src.model,
            "source_bits": src.bits.tag, "target_model": tgt.model, "target_bits": tgt.bits.tag,
            "source_sha": adv.source.sha256, "target_sha": target.sha256, "set_cell": adv.cell,
            "set_path": adv.path, "records_path": ctx.rel(path), **ev.summary,
        }
        return {"records": ctx.rel(path)}, "results", row

    ctx.book.run("evaluate", key, compute, intact=lambda h, out: (ctx.out / out["records"]).is_file())


# ---------------------------------------------------------------------------- progression


def progression_cell(ctx: StudyContext, source: ModelHandle, attack: AttackConfig) -> None:
    """Boundary Attack on a few images at growing iteration counts, same seed (paper Figure 3)."""
    plan = ctx.plan
    k = plan.spec.report.progression.images
    s_seed, a_seed = sample_seed(plan, 0), attack_seed(plan, 0, source, attack)
    key = {"kind": "progression", "dataset": source.slot.dataset, "source": source.sha256,
           "attack": attack.name, "label": attack.label, "params": attack.params,
           "iterations": list(attack.progression), "images": k, "sample_seed": s_seed, "seed": a_seed,
           "backend": attack.backend}

    def compute(h: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
        model = source.load(plan.device)
        pool = ctx.samples(source, plan.spec.samples, s_seed)  # run 0's images: first k of them
        chosen = pool.subset(torch.arange(min(k, len(pool))))
        x, y = chosen.x.to(plan.device), chosen.y.to(plan.device)
        frames, success = [], []
        for it in tqdm(attack.progression, desc=f"  progression {attack.label}", leave=False,
                       disable=not ctx.progress):
            result = craft(attack.name, model, x, y, {**attack.params, "max_iter": it},
                           seed=a_seed, backend=attack.backend, chunk=len(x))
            frames.append(result.adversarial.detach().cpu().float().numpy())
            success.append(result.success.detach().cpu().numpy())
        path = ctx.out / "progressions" / source.slot.dataset / \
            f"{slug(source.slot.model)}-{source.slot.bits.tag}-{slug(attack.label)}-{h[:8]}.npz"
        atomic_save_npz(
            path, iterations=np.asarray(attack.progression, dtype=np.int64), images=np.stack(frames),
            success=np.stack(success), clean=chosen.x.numpy(), labels=chosen.y.numpy(),
            image_index=chosen.index.numpy(),
        )
        row = {"dataset": source.slot.dataset, "model": source.slot.model, "bits": str(source.slot.bits),
               "bits_tag": source.slot.bits.tag, "label": attack.label, "path": ctx.rel(path),
               "iterations": list(attack.progression)}
        return {"path": ctx.rel(path)}, "progressions", row

    ctx.book.run("progression", key, compute, intact=lambda h, out: (ctx.out / out["path"]).is_file())
