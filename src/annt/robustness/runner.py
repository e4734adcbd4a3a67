"""``annt.diagnose``: run the gradient-masking checklist on one model and return a verdict.

For a fixed seeded sample of correctly classified test images and each eps: FGSM, PGD and
APGD (CE, DLR), every registered gradient-free attack (``square``, ``hop_skip_jump`` when
present), optionally a transfer attack crafted on a surrogate model, and PGD with each
quantizer gradient surrogate the attack offers. A sample counts as fooled only inside the
budget. Then growing eps (PGD until 100% success) and the share of vanishing input
gradients; the verdict names every check that failed, with its numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from annt.attacks import list_attacks
from annt.errors import AnntError
from annt.progress import Progress
from annt.provenance import provenance
from annt.robustness import checks, verdict
from annt.robustness.checks import Outcome
from annt.robustness.defaults import (  # noqa: F401  (the defaults live there; still importable from here)
    DEFAULT_ATTACKS,
    DEFAULT_GROW,
    DEFAULT_NORM,
    DEFAULT_PARAMS,
    DEFAULT_SAMPLES,
    DEFAULT_SEED,
    DEFAULT_TOLERANCE,
    NORMS,
)


def check_diagnosable(model: nn.Module, label: str = "the model") -> None:
    """One line when ``model`` has no input gradients (ONNX Runtime): the checklist needs them."""
    from annt.attacks.registry import is_differentiable

    if not is_differentiable(model):
        raise AnntError(f"diagnose: {label} is run by an inference runtime without input gradients, and"
                        " the checklist compares gradient attacks with gradient-free ones; diagnose its"
                        " differentiable original, and attack this one with square, boundary or hop_skip_jump")


@dataclass
class DiagnoseResult:
    """Everything the checklist measured, and the verdict drawn from it."""

    checkpoint: str
    dataset: str
    norm: str
    eps: list[float]
    seed: int
    index: np.ndarray  # int64 [N]: positions of the sampled images in the test split
    outcomes: list[Outcome]
    worst_case: dict[float, float]  # eps -> robust accuracy against every attack together
    growing: list[tuple[float, float]]  # (eps, PGD success rate)
    gradient: dict[str, float]
    verdict: str
    evidence: list[str]
    skipped: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)  # what computed it (annt.provenance)

    @property
    def samples(self) -> int:
        return int(len(self.index))

    def table(self, eps: float) -> dict[str, float]:
        """Robust accuracy per attack (and ``worst_case``) at one eps."""
        rows = {o.name: o.robust_accuracy for o in self.outcomes if o.eps == eps}
        return rows | {"worst_case": self.worst_case[eps]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint, "dataset": self.dataset, "norm": self.norm,
            "eps": self.eps, "seed": self.seed, "samples": self.samples,
            "outcomes": [
                {"name": o.name, "attack": o.attack, "eps": o.eps, "kind": o.kind,
                 "robust_accuracy": o.robust_accuracy, "params": o.params,
                 "seconds": round(o.seconds, 3)}
                for o in self.outcomes
            ],
            "worst_case": {str(k): v for k, v in self.worst_case.items()},
            "growing_eps": [list(r) for r in self.growing], "gradient": self.gradient,
            "verdict": self.verdict, "evidence": self.evidence, "skipped": self.skipped,
            "meta": self.meta, "provenance": self.provenance,
        }


def _check_args(eps: list[float], norm: str, attacks: list[str]) -> None:
    if not eps or any((not isinstance(e, (int, float))) or e <= 0 for e in eps):
        raise AnntError(f"diagnose: eps must be one or more positive numbers, got {eps!r}")
    if norm not in NORMS:
        raise AnntError(f"diagnose: norm must be one of {', '.join(NORMS)}, got {norm!r}")
    unknown = [a for a in attacks if a not in list_attacks()]
    if unknown:
        raise AnntError(f"diagnose: unknown attack(s) {', '.join(unknown)}: choose from {', '.join(list_attacks())}")


def run_checklist(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: list[float],
    *,
    norm: str = DEFAULT_NORM,
    attacks: list[str] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    surrogate: nn.Module | None = None,
    transfer_attack: str = "pgd",
    seed: int = DEFAULT_SEED,
    batch_size: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    grow: bool = DEFAULT_GROW,
    progress: bool = False,
) -> tuple[list[Outcome], dict[float, float], list[tuple[float, float]], dict[str, float], list[str], list[str]]:
    """The checklist on given images (already correctly classified by ``model``); ``progress``:
    report each step (attack runs, growing eps, gradients) on stderr."""
    params = {a: DEFAULT_PARAMS.get(a, {}) | (params or {}).get(a, {}) for a in set(DEFAULT_PARAMS) | set(params or {})}
    wanted = list(attacks) if attacks is not None else [a for a in DEFAULT_ATTACKS if a in list_attacks()]
    skipped = [f"{a}: not registered" for a in DEFAULT_ATTACKS if attacks is None and a not in list_attacks()]
    _check_args(eps, norm, wanted + ([transfer_attack] if surrogate is not None else []))
    options = checks.gradient_options("pgd")
    if not options:
        skipped.append("gradient surrogates: attack option 'gradient' not available")
    outcomes: list[Outcome] = []
    evidence: list[str] = []
    worst: dict[float, float] = {}
    per_eps = len(wanted) + (surrogate is not None) + (len(options) - 1 + ("pgd" not in wanted) if len(options) > 1 else 0)
    bar = Progress(len(eps) * per_eps + grow + 1, "diagnose", "steps", enabled=progress)

    def run(attack: str, e: float, extra: dict[str, Any] | None, **how: Any) -> Outcome:
        bar.set_postfix(f"{how.get('label') or attack} eps {e:g}")
        outcome = checks.run_one(model, x, y, attack, e, norm, extra, seed, batch_size, **how)
        bar.update(1)
        return outcome

    for e in eps:
        rows = [run(a, e, params.get(a)) for a in wanted]
        if surrogate is not None:
            rows.append(run(transfer_attack, e, params.get(transfer_attack), source=surrogate,
                            label=f"transfer_{transfer_attack}", kind="transfer"))
        evidence += verdict.judge_eps(rows, tolerance)
        if len(options) > 1:
            base = next((o for o in rows if o.attack == "pgd" and o.kind == "iterative"), None)
            if base is None:
                base = run("pgd", e, params.get("pgd"))
                rows.append(base)
            surr = [run("pgd", e, (params.get("pgd") or {}) | {"gradient": g}, label=f"pgd_gradient_{g}",
                        kind="surrogate") for g in options[1:]]
            evidence += verdict.judge_surrogates(base, surr, options[0], tolerance)
            rows += surr
        outcomes += rows
        worst[e] = float(np.logical_and.reduce([o.robust for o in rows]).mean())
    growing: list[tuple[float, float]] = []
    if grow:
        bar.set_postfix("pgd at growing eps")
        growing = checks.growing_eps(model, x, y, max(eps), norm, params.get("pgd"), seed, batch_size)
        bar.update(1)
        evidence += verdict.judge_growing(growing, "pgd")
    bar.set_postfix("input gradients")
    health = checks.gradient_health(model, x, y)
    bar.update(1)
    evidence += verdict.judge_gradients(health, tolerance)
    bar.close()
    return outcomes, worst, growing, health, evidence, skipped


def _bits_tag(bits: Any) -> str | None:
    """``fp`` / ``1bit`` ... for a checkpoint's recorded bitwidth (what reports group by)."""
    from annt.quant.bits import parse_bits

    try:
        return parse_bits(bits).tag if bits is not None else None
    except (ValueError, TypeError, AnntError):
        return None


def diagnose(
    checkpoint: str | Path | nn.Module,
    dataset: str | None = None,
    *,
    samples: int = DEFAULT_SAMPLES,
    eps: float | list[float] = 0.1,
    norm: str = DEFAULT_NORM,
    attacks: list[str] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    surrogate: str | Path | nn.Module | None = None,
    seed: int = DEFAULT_SEED,
    data_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    grow: bool = DEFAULT_GROW,
    out_dir: str | Path | None = None,
    progress: bool = False,
) -> DiagnoseResult:
    """Run the checklist on ``samples`` seeded, correctly classified test images of ``dataset``
    (default: the checkpoint's); write ``diagnose.json`` / ``diagnose.npz`` to ``out_dir``.
    ``progress``: report each step on stderr (a bar on a terminal, plain lines in a log)."""
    from annt.data import load_dataset
    from annt.data.sampling import sample_correct
    from annt.zoo import load_model

    model = checkpoint if isinstance(checkpoint, nn.Module) else load_model(checkpoint, device=device)
    meta = dict(getattr(model, "annt_meta", {}) or {})
    check_diagnosable(model)
    dataset = dataset or meta.get("dataset")
    if not dataset:
        raise AnntError("diagnose: the model names no dataset; pass dataset (--dataset)")
    try:
        eps_list = [float(e) for e in (eps if isinstance(eps, (list, tuple)) else [eps])]
    except (TypeError, ValueError):
        raise AnntError(f"diagnose: eps must be one or more positive numbers, got {eps!r}") from None
    src = None
    if surrogate is not None:
        src = surrogate if isinstance(surrogate, nn.Module) else load_model(surrogate, device=device)
    dev = next(model.parameters()).device
    test = load_dataset(dataset, "test", data_dir)
    from annt.inputs.fit import check_fits
    from annt.models.sources import check_logits

    label = str(checkpoint) if not isinstance(checkpoint, nn.Module) else "the model"
    check_fits(meta, test.x, test.y, f"dataset {dataset}", label)
    check_logits(model, test.x[:2].to(dev), len(test.classes), label)
    chosen = sample_correct(model, test, samples, seed)
    x, y = chosen.x.to(dev), chosen.y.to(dev)
    outcomes, worst, growing, health, evidence, skipped = run_checklist(
        model, x, y, eps_list, norm=norm, attacks=attacks, params=params, surrogate=src,
        seed=seed, batch_size=batch_size, tolerance=tolerance, grow=grow, progress=progress,
    )
    name = checkpoint if not isinstance(checkpoint, nn.Module) else meta.get("zoo", "model")
    result = DiagnoseResult(
        checkpoint=str(name), dataset=str(dataset), norm=norm, eps=eps_list, seed=seed,
        index=chosen.index.cpu().numpy().astype(np.int64), outcomes=outcomes, worst_case=worst,
        growing=growing, gradient=health, verdict=verdict.verdict(evidence), evidence=evidence,
        skipped=skipped,
        meta={"model": meta.get("model"), "bits": meta.get("bits"), "bits_tag": _bits_tag(meta.get("bits")),
              "surrogate": None if surrogate is None else str(surrogate if not isinstance(surrogate, nn.Module) else "model"),
              "tolerance": tolerance},
        provenance=provenance(dev),
    )
    if out_dir is not None:
        from annt.robustness.store import save_diagnose

        save_diagnose(out_dir, result)
    return result
