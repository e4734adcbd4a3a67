"""Robust accuracy against an attack ensemble, AutoAttack style (``annt robust-accuracy``).

The attacks run in a fixed order, each only on the images that every earlier attack left
robust; an image's worst-case adversarial example is the first one found (verified on the
model: in [0, 1], inside the eps ball, misclassified). Robust accuracy is reported twice:

- RobustBench convention: over the first N test images, a misclassified clean image counts
  as not robust;
- ANNT convention: over the correctly classified ones among them (what ``annt attack`` and
  ``annt diagnose`` report).

With ``out_dir`` each finished stage is written at once (npz + JSON sidecar, atomic); a run
killed mid-way reuses the finished stages and ends with the same numbers.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from annt.attacks import get_attack, list_attacks
from annt.attacks.base import confirm_on_model, eval_mode
from annt.errors import AnntError
from annt.robustness.checks import attack_params, within_budget
from annt.robustness.defaults import DEFAULT_ENSEMBLE, DEFAULT_IMAGES, ENSEMBLES, NORMS, stage_label

CLEAN_WRONG = -2  # ``broken_by`` of a misclassified clean image
ROBUST = -1  # ``broken_by`` of an image no attack broke


@dataclass
class Stage:
    """One attack of the ensemble: how many of the images it was run on it broke, and its time."""

    attack: str
    params: dict[str, Any]
    attacked: int
    broken: int
    seconds: float
    reused: bool = False

    @property
    def name(self) -> str:
        return stage_label(self.attack, self.params)


@dataclass
class EnsembleResult:
    checkpoint: str
    dataset: str
    ensemble: str
    eps: float
    norm: str
    seed: int
    index: np.ndarray  # int64 [N]: positions in the test split (0..N-1)
    clean_correct: np.ndarray  # bool [N]
    broken_by: np.ndarray  # int8 [N]: stage index, ROBUST or CLEAN_WRONG
    adversarial: np.ndarray  # float32 [N, C, H, W]: worst case (the clean image where none)
    stages: list[Stage]
    meta: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)  # what computed it (annt.provenance)

    @property
    def images(self) -> int:
        return int(len(self.index))

    @property
    def robust(self) -> np.ndarray:
        return self.broken_by == ROBUST

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.mean())

    @property
    def robust_accuracy(self) -> float:
        """RobustBench convention: robust images / all N images."""
        return float(self.robust.mean())

    @property
    def robust_accuracy_correct(self) -> float:
        """ANNT convention: robust images / correctly classified images (nan when none)."""
        correct = int(self.clean_correct.sum())
        return float(self.robust.sum() / correct) if correct else float("nan")

    def arrays(self) -> dict[str, np.ndarray]:
        return {"index": self.index, "clean_correct": self.clean_correct, "broken_by": self.broken_by,
                "adversarial": self.adversarial}

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint, "dataset": self.dataset, "ensemble": self.ensemble,
            "eps": self.eps, "norm": self.norm, "seed": self.seed, "images": self.images,
            "clean_correct": int(self.clean_correct.sum()), "robust": int(self.robust.sum()),
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy_robustbench": self.robust_accuracy,
            "robust_accuracy_of_correct": self.robust_accuracy_correct,
            "stages": [{"attack": s.attack, "name": s.name, "params": s.params, "attacked": s.attacked, "broken": s.broken,
                        "seconds": round(s.seconds, 3), "reused": s.reused} for s in self.stages],
            "broken_by_codes": {"-2": "misclassified clean", "-1": "robust",
                                **{str(k): s.name for k, s in enumerate(self.stages)}},
            "meta": self.meta, "provenance": self.provenance,
        }


def ensemble_spec(name: str) -> tuple[tuple[str, dict[str, Any]], ...]:
    """The (attack, own parameters) stages of ensemble ``name``: a named one (``ENSEMBLES``) or
    a comma-separated list of stages, each an attack with an optional quantizer gradient in
    brackets (``apgd_ce,apgd_ce[sigmoid],square``)."""
    if not isinstance(name, str) or not name.strip():
        raise AnntError(f"robust-accuracy: ensemble must be a name or a comma-separated attack list, got {name!r}")
    if name in ENSEMBLES:
        return ENSEMBLES[name]
    if "," not in name and "[" not in name and name not in list_attacks():
        raise AnntError(f"robust-accuracy: unknown ensemble {name!r}: choose one of {', '.join(ENSEMBLES)},"
                        " or list attacks (apgd_ce,apgd_ce[sigmoid],square)")
    stages = []
    for token in (t.strip() for t in name.split(",")):
        m = re.fullmatch(r"([a-z0-9_]+)(?:\[([a-z0-9_]+)\])?", token)
        if m is None:
            raise AnntError(f"robust-accuracy: ensemble stage {token!r} is not ATTACK or ATTACK[GRADIENT]")
        stages.append((m.group(1), {"gradient": m.group(2)} if m.group(2) else {}))
    return tuple(stages)


def ensemble_stages(name: str, norm: str, eps: float,
                    params: dict[str, dict[str, Any]] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The ensemble's (attack, full parameters) in order; one line for a bad option or an
    attack this installation does not register."""
    spec = ensemble_spec(name)
    if norm not in NORMS:
        raise AnntError(f"robust-accuracy: norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise AnntError(f"robust-accuracy: eps must be a positive number, got {eps!r}")
    missing = [a for a, _ in spec if a not in list_attacks()]
    if missing:
        raise AnntError(f"robust-accuracy: the {name} ensemble needs attack(s) {', '.join(missing)}, which"
                        " this installation does not register; use --ensemble cheap")
    params = params or {}
    unknown = sorted(set(params) - {a for a, _ in spec})
    if unknown:
        raise AnntError(f"robust-accuracy: parameters for {', '.join(unknown)}, which the {name} ensemble"
                        f" does not run ({', '.join(a for a, _ in spec)})")
    from annt.attacks import validate_params

    stages = []
    for attack, own in spec:
        # an image needs one adversarial example: APGD may drop it at its first (same success, less time)
        early = {"early_stop": True} if "early_stop" in get_attack(attack).params_model.model_fields else {}
        full = attack_params(attack, eps, norm, early | own | params.get(attack, {}))
        validate_params(attack, full)  # a bad parameter fails here, before any work
        stages.append((attack, full))
    return stages


def _fingerprint(model: nn.Module, label: str, correct: np.ndarray, pred: np.ndarray) -> str:
    """What ties a stage file to one model: its weights' sha256 where recorded, else its name,
    plus its clean predictions on the images."""
    meta = getattr(model, "annt_meta", {}) or {}
    who = meta.get("weights_sha256") or meta.get("checkpoint_sha256") or label
    return hashlib.sha256(f"{who}|{pred.tobytes().hex()}|{correct.tobytes().hex()}".encode()).hexdigest()


def _stored_stage(path: Path, settings: dict[str, Any], todo: np.ndarray,
                  shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, float] | None:
    """A finished stage's (fooled, adversarial, seconds) when stored intact for ``settings``."""
    from annt.robustness.store import load_stage

    found = load_stage(path, settings)
    if found is None:
        return None
    arrays, meta = found
    fooled, adv = arrays.get("fooled"), arrays.get("adversarial")
    if (fooled is None or adv is None or fooled.dtype != bool or fooled.shape != todo.shape
            or adv.shape != (int(fooled.sum()), *shape) or not isinstance(meta.get("seconds"), (int, float))):
        return None
    return fooled, adv, float(meta["seconds"])


def run_ensemble(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    norm: str = "inf",
    ensemble: str = DEFAULT_ENSEMBLE,
    params: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    out_dir: str | Path | None = None,
    label: str = "model",
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Stage]]:
    """The ensemble on images ``x`` with labels ``y``: (clean_correct, broken_by, adversarial,
    stages). Every attack runs with ``seed``; with ``out_dir`` finished stages are stored and reused;
    ``progress``: one step per attack on stderr."""
    from annt.attacks import check_model_supports, run_attack
    from annt.attacks.base import predict
    from annt.progress import Progress

    stages = ensemble_stages(ensemble, norm, eps, params)
    for attack, _ in stages:
        check_model_supports(attack, model)
    with eval_mode(model), torch.no_grad():
        pred = predict(model, x)
    correct = (pred == y).cpu().numpy()
    broken_by = np.where(correct, ROBUST, CLEAN_WRONG).astype(np.int8)
    adversarial = x.detach().cpu().float().numpy().copy()
    base = {"ensemble": ensemble, "eps": float(eps), "norm": norm, "seed": int(seed), "images": int(len(y)),
            "batch_size": batch_size, "model": _fingerprint(model, label, correct, pred.cpu().numpy())}
    done: list[Stage] = []
    bar = Progress(len(stages), f"robust-accuracy ({ensemble})", "attacks", enabled=progress)
    for k, (attack, full) in enumerate(stages):
        todo = np.flatnonzero(broken_by == ROBUST)
        bar.set_postfix(f"{attack} on {len(todo)} images")
        settings = base | {"stage": k, "attack": attack, "params": full, "todo": todo.tolist()}
        path = None
        if out_dir is not None:
            from annt.robustness.store import stage_path

            path = stage_path(out_dir, k, attack)
            found = _stored_stage(path, settings, todo, adversarial.shape[1:])
            if found is not None:
                fooled, adv, seconds = found
                broken_by[todo[fooled]] = k
                adversarial[todo[fooled]] = adv
                done.append(Stage(attack, full, len(todo), int(fooled.sum()), seconds, True))
                bar.update(1)
                continue
        fooled = np.zeros(len(todo), dtype=bool)
        adv = np.zeros((0,) + adversarial.shape[1:], dtype=np.float32)
        tic = time.perf_counter()
        if len(todo):
            idx = torch.as_tensor(todo, device=x.device)
            xs, ys = x[idx], y[idx]
            res = run_attack(attack, model, xs, ys, full, seed=seed, batch_size=batch_size)
            cand = res.adversarial.to(xs.device).clamp(0.0, 1.0)
            with eval_mode(model):
                cand, ok, _ = confirm_on_model(model, xs, cand, res.success.to(xs.device), ys, False)
            hit = ok & within_budget(xs, cand, eps, norm)
            fooled = hit.cpu().numpy()
            adv = cand[hit].detach().cpu().float().numpy()
        seconds = time.perf_counter() - tic
        broken_by[todo[fooled]] = k
        adversarial[todo[fooled]] = adv
        done.append(Stage(attack, full, len(todo), int(fooled.sum()), seconds))
        if path is not None:
            from annt.robustness.store import save_stage

            save_stage(path, {"fooled": fooled, "adversarial": adv},
                       {"settings": settings, "seconds": seconds, "broken": int(fooled.sum())})
        bar.update(1)
    bar.close()
    return correct, broken_by, adversarial, done


def robust_accuracy(
    checkpoint: str | Path | nn.Module,
    dataset: str | None = None,
    *,
    eps: float,
    norm: str = "inf",
    ensemble: str = DEFAULT_ENSEMBLE,
    n_images: int = DEFAULT_IMAGES,
    params: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    data_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    out_dir: str | Path | None = None,
    label: str | None = None,
    progress: bool = False,
) -> EnsembleResult:
    """The ensemble on the first ``n_images`` test images of ``dataset`` (default: the model's).

    With ``out_dir``: the stages and ``robust_accuracy.json`` / ``.npz`` are written there, and
    a re-run with the same settings reuses the finished stages.
    """
    from annt.provenance import provenance
    from annt.robustness.loading import model_and_test

    ensemble_stages(ensemble, norm, eps, params)  # bad options: one line before any loading
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
        raise AnntError(f"robust-accuracy: n_images must be a positive integer, got {n_images!r}")
    if out_dir is not None:
        from annt.inputs.files import output_dir

        output_dir(out_dir, "robust-accuracy output folder")
    model, meta, test, name, dev = model_and_test(checkpoint, dataset, data_dir, device, "robust-accuracy")
    name = label or name
    dataset = meta["dataset"]
    chosen = test.subset(torch.arange(min(n_images, len(test))))
    x, y = chosen.x.to(dev), chosen.y.to(dev)

    def run() -> EnsembleResult:
        correct, broken_by, adversarial, stages = run_ensemble(
            model, x, y, eps, norm=norm, ensemble=ensemble, params=params, seed=seed, batch_size=batch_size,
            out_dir=out_dir, label=name, progress=progress)
        return EnsembleResult(
            checkpoint=name, dataset=str(dataset), ensemble=ensemble, eps=float(eps), norm=norm, seed=seed,
            index=chosen.index.cpu().numpy().astype(np.int64), clean_correct=correct, broken_by=broken_by,
            adversarial=adversarial, stages=stages,
            meta={"model": meta.get("model"), "bits": meta.get("bits"), "batch_size": batch_size},
            provenance=provenance(dev),
        )

    if out_dir is None:
        return run()
    from annt.robustness.store import save_robust_accuracy
    from annt.store.lock import OutputLock

    with OutputLock(out_dir):
        result = run()
        save_robust_accuracy(out_dir, result)
    return result
