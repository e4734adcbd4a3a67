"""``annt.diagnose``: run the gradient-masking checklist on one model and return a verdict.

For a fixed seeded sample of correctly classified test images and each eps: FGSM, PGD and
APGD (CE, DLR), every registered gradient-free attack (``square``, ``hop_skip_jump`` when
present), optionally a transfer attack crafted on a surrogate model, and PGD with each
quantizer gradient surrogate the attack offers. A sample counts as fooled only inside the
budget. Then growing eps (PGD until 100% success) and the share of vanishing input
gradients; the verdict names every check that failed, with its numbers.

``diagnose`` then runs the strength self-test (the binarization test of
:mod:`annt.robustness.selftest`) of the attacks the verdict rests on (the strongest gradient
and gradient-free attack at the largest eps) on the first ``selftest`` sampled images: without
masking evidence, a failed self-test turns the verdict into "attacks too weak". With
``ensemble`` it also runs that attack ensemble (:func:`annt.robustness.ensemble.run_ensemble`)
on the same images at each eps.
"""

from __future__ import annotations

import contextlib
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
    DEFAULT_SELFTEST,
    DEFAULT_TOLERANCE,
    NORMS,
    SELFTEST_MIN_PASS,
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
    explanation: list[str] = field(default_factory=list)  # the verdict in sentences
    selftests: list[dict[str, Any]] = field(default_factory=list)  # per self-tested attack
    selftest_flags: dict[str, np.ndarray] = field(default_factory=dict)  # valid / passed [attacks, n]
    ensemble: dict[str, Any] | None = None  # the attack ensemble's results, when run
    ensemble_broken_by: np.ndarray | None = None  # int8 [eps, N]: stage index, -1 robust

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
            "verdict": self.verdict, "explanation": self.explanation, "evidence": self.evidence,
            "selftest": self.selftests, "ensemble": self.ensemble, "skipped": self.skipped,
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
        surr_lines: list[str] = []
        if len(options) > 1:
            base = next((o for o in rows if o.attack == "pgd" and o.kind == "iterative"), None)
            if base is None:
                base = run("pgd", e, params.get("pgd"))
                rows.append(base)
            surr = [run("pgd", e, (params.get("pgd") or {}) | {"gradient": g}, label=f"pgd_gradient_{g}",
                        kind="surrogate") for g in options[1:]]
            surr_lines = verdict.judge_surrogates(base, surr, options[0], tolerance)
            rows += surr
        evidence += verdict.judge_eps(rows, tolerance) + surr_lines
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


def run_selftests(
    model: nn.Module,
    x: torch.Tensor,
    outcomes: list[Outcome],
    norm: str,
    *,
    seed: int = DEFAULT_SEED,
    batch_size: int | None = None,
    min_pass: float = SELFTEST_MIN_PASS,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """The binarization self-test (:func:`annt.robustness.selftest.run_selftest`) of each attack
    the verdict rests on (:func:`annt.robustness.verdict.selftest_targets`), with the parameters
    and eps of its checklist row, on images ``x``: (one summary per attack, per-image ``valid``
    and ``passed`` flags [attacks, len(x)])."""
    from annt.robustness.selftest import SelftestResult, run_selftest

    targets = verdict.selftest_targets(outcomes)
    bar = Progress(len(targets), "diagnose self-test", "attacks", enabled=progress)
    results: list[dict[str, Any]] = []
    valid, passed = [], []
    for row, role in targets:
        bar.set_postfix(f"{row.name} eps {row.eps:g}")
        v, ok, full, seconds = run_selftest(model, x, row.attack, row.eps, norm=norm, params=row.params,
                                            seed=seed, batch_size=batch_size)
        st = SelftestResult(attack=row.attack, params=full, eps=row.eps, norm=norm, seed=seed,
                            index=np.arange(len(x)), valid=v, passed=ok, seconds=seconds, min_pass=min_pass)
        summary = {k: val for k, val in st.to_dict().items() if k != "meta"}
        if not summary["valid"]:  # no valid planted task: no rate (JSON has no nan)
            summary["pass_rate"] = None
        results.append({"name": row.name, "role": role} | summary)
        valid.append(v)
        passed.append(ok)
        bar.update(1)
    bar.close()
    shape = (0, len(x))
    return results, {"selftest_valid": np.stack(valid) if valid else np.zeros(shape, bool),
                     "selftest_passed": np.stack(passed) if passed else np.zeros(shape, bool)}


def run_ensembles(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: list[float],
    ensemble: str,
    *,
    norm: str = DEFAULT_NORM,
    clean_accuracy: float = 1.0,
    seed: int = DEFAULT_SEED,
    batch_size: int | None = None,
    progress: bool = False,
) -> tuple[dict[str, Any], np.ndarray]:
    """The attack ensemble (:func:`annt.robustness.ensemble.run_ensemble`, its own parameters) on
    the checklist's images at each eps: (summary, ``broken_by`` [eps, N]). The images are
    correctly classified, so the measured robust accuracy is the ANNT convention; the RobustBench
    convention is estimated as ``clean_accuracy`` (of the whole test split) times it."""
    from annt.robustness.ensemble import ROBUST, run_ensemble

    per_eps, broken = [], []
    for e in eps:
        _, broken_by, _, stages = run_ensemble(model, x, y, e, norm=norm, ensemble=ensemble, seed=seed,
                                               batch_size=batch_size, progress=progress)
        robust = float((broken_by == ROBUST).mean())
        per_eps.append({
            "eps": float(e), "robust_accuracy": robust, "robust_accuracy_robustbench": clean_accuracy * robust,
            "stages": [{"attack": st.attack, "params": st.params, "attacked": st.attacked, "broken": st.broken,
                        "seconds": round(st.seconds, 3)} for st in stages],
        })
        broken.append(broken_by)
    summary = {"name": ensemble, "images": int(len(x)), "clean_accuracy": float(clean_accuracy), "per_eps": per_eps}
    return summary, np.stack(broken).astype(np.int8)


def compare_ensemble(summary: dict[str, Any], worst: dict[float, float], tolerance: float) -> list[str]:
    """A line per eps where the ensemble leaves lower robust accuracy than the checklist's worst
    case: the checklist missed adversarial examples there."""
    lines = []
    for row in summary["per_eps"]:
        e, acc = row["eps"], row["robust_accuracy"]
        if acc < worst[e] - tolerance:
            lines.append(f"eps {e:g}: the {summary['name']} ensemble leaves {acc:.3f}, below the checklist's worst"
                         f" case {worst[e]:.3f}: the checklist's attacks missed adversarial examples")
    return lines


@contextlib.contextmanager
def _as_diagnose_error() -> Any:
    """The ensemble's one-line errors, reported as diagnose's own."""
    try:
        yield
    except AnntError as err:
        raise AnntError(str(err).replace("robust-accuracy:", "diagnose:", 1)) from None


def _check_extras(selftest: Any, ensemble: str | None) -> None:
    if isinstance(selftest, bool) or not isinstance(selftest, int) or selftest < 0:
        raise AnntError(f"diagnose: selftest must be a number of images >= 0 (0: off), got {selftest!r}")
    if ensemble is not None:
        from annt.robustness.ensemble import ensemble_spec

        with _as_diagnose_error():
            ensemble_spec(ensemble)


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
    selftest: int = DEFAULT_SELFTEST,
    ensemble: str | None = None,
    out_dir: str | Path | None = None,
    progress: bool = False,
) -> DiagnoseResult:
    """Run the checklist on ``samples`` seeded, correctly classified test images of ``dataset``
    (default: the checkpoint's); write ``diagnose.json`` / ``diagnose.npz`` to ``out_dir``.

    ``selftest``: the strength self-test of the attacks the verdict rests on, on the first
    ``selftest`` sampled images (0: off); ``ensemble`` (``standard`` / ``cheap``): also run that
    attack ensemble on the same images at each eps. ``progress``: report each step on stderr
    (a bar on a terminal, plain lines in a log)."""
    from annt.data import load_dataset
    from annt.data.sampling import correct_mask, sample_correct
    from annt.zoo import load_model

    _check_extras(selftest, ensemble)
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
    if ensemble is not None:
        from annt.robustness.ensemble import ensemble_stages

        for e in eps_list:  # a missing attack or a bad eps: one line before any work
            with _as_diagnose_error():
                ensemble_stages(ensemble, norm, e)
    outcomes, worst, growing, health, evidence, skipped = run_checklist(
        model, x, y, eps_list, norm=norm, attacks=attacks, params=params, surrogate=src,
        seed=seed, batch_size=batch_size, tolerance=tolerance, grow=grow, progress=progress,
    )
    selftests: list[dict[str, Any]] = []
    flags: dict[str, np.ndarray] = {}
    selftest_lines: list[str] = []
    too_weak: list[str] = []
    failed: list[str] = []
    if selftest:
        selftests, flags = run_selftests(model, x[:selftest], outcomes, norm, seed=seed, batch_size=batch_size,
                                         progress=progress)
        selftest_lines, failed = verdict.judge_selftests(selftests)
        too_weak = verdict.weak_that_matter(failed, worst)
    ens, broken_by = None, None
    if ensemble is not None:
        clean = float(correct_mask(model, test).float().mean())
        ens, broken_by = run_ensembles(model, x, y, eps_list, ensemble, norm=norm, clean_accuracy=clean, seed=seed,
                                       batch_size=batch_size, progress=progress)
    label = verdict.verdict(evidence, too_weak)
    explanation = verdict.explain(label, outcomes, tolerance, selftest_lines, failed)
    if ens is not None:
        explanation += compare_ensemble(ens, worst, tolerance)
    name = checkpoint if not isinstance(checkpoint, nn.Module) else meta.get("zoo", "model")
    result = DiagnoseResult(
        checkpoint=str(name), dataset=str(dataset), norm=norm, eps=eps_list, seed=seed,
        index=chosen.index.cpu().numpy().astype(np.int64), outcomes=outcomes, worst_case=worst,
        growing=growing, gradient=health, verdict=label, evidence=evidence,
        skipped=skipped,
        meta={"model": meta.get("model"), "bits": meta.get("bits"), "bits_tag": _bits_tag(meta.get("bits")),
              "surrogate": None if surrogate is None else str(surrogate if not isinstance(surrogate, nn.Module) else "model"),
              "tolerance": tolerance, "selftest_images": min(selftest, len(x)), "ensemble": ensemble},
        provenance=provenance(dev),
        explanation=explanation, selftests=selftests, selftest_flags=flags, ensemble=ens,
        ensemble_broken_by=broken_by,
    )
    if out_dir is not None:
        from annt.robustness.store import save_diagnose

        save_diagnose(out_dir, result)
    return result
