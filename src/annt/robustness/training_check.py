"""After adversarial training: is the model robust, or does it only mask gradients?

A model trained against attacks can look robust to the attack it was trained with while only
hiding its gradients (catastrophic overfitting of FGSM training, Wong et al. 2020; quantizers
that mask gradients at low bitwidths). ``check_trained`` runs on the finished ``best/``
checkpoint, at the training budget:

- the diagnose checklist (``annt.diagnose``: FGSM, PGD, APGD-CE/DLR, Square, ...) on
  ``images`` seeded, correctly classified test images, with its masking verdict, and a check for
  catastrophic overfitting (FGSM far weaker than the iterative attacks);
- the standard ensemble (``annt.robust_accuracy``: APGD-CE, APGD-T, FAB-T, Square) on the first
  ``images`` test images: robust accuracy in the RobustBench convention.

Both write their files under ``RUN/check/`` (the ensemble's finished stages are reused when a
killed run is restarted); the summary goes into ``best/``'s metadata as ``robustness_check``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from annt.robustness.verdict import CLEAN, MASKING

CHECK_DIR = "check"
# FGSM leaving this much more than the best iterative attack after adversarial training, and the
# iterative attack at most OVERFIT_SHARE of FGSM's robust accuracy: the model learnt to resist the
# single step, not the budget (catastrophic overfitting, Wong et al. 2020: PGD accuracy collapses).
# A PGD-trained model at a large budget (FGSM 0.95, APGD-CE 0.77) has a gap but no collapse.
OVERFIT_GAP = 0.15
OVERFIT_SHARE = 0.5


def overfitting_evidence(outcomes: list[Any], eps: float) -> str | None:
    """One line when FGSM's robust accuracy exceeds the best iterative attack's by more than
    :data:`OVERFIT_GAP` at ``eps`` and the iterative attack leaves at most :data:`OVERFIT_SHARE`
    of what FGSM leaves; ``None`` otherwise."""
    rows = [o for o in outcomes if abs(o.eps - eps) < 1e-12]
    fgsm = [o for o in rows if o.attack == "fgsm"]
    iterative = [o for o in rows if o.kind == "iterative"]
    if not fgsm or not iterative:
        return None
    best = min(iterative, key=lambda o: o.robust_accuracy)
    gap = fgsm[0].robust_accuracy - best.robust_accuracy
    if gap <= OVERFIT_GAP or best.robust_accuracy > OVERFIT_SHARE * fgsm[0].robust_accuracy:
        return None
    return (f"eps {eps:g}: FGSM leaves {fgsm[0].robust_accuracy:.3f} but {best.name} {best.robust_accuracy:.3f}"
            f" ({gap:.3f} lower): the model resists single-step attacks only (catastrophic overfitting)")


def check_trained(best: str | Path, run_dir: str | Path, *, eps: float, norm: str, images: int,
                  dataset: str, data_dir: str | Path | None = None, device: str | torch.device = "cpu",
                  seed: int = 0, progress: bool = False, attacks: list[str] | None = None,
                  ensemble: str = "adaptive", params: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Diagnose + the ``ensemble`` on ``best`` at ``eps``; returns the ``robustness_check``
    record (also written into ``best``'s metadata). ``attacks`` (the checklist's, default all)
    and ``params`` (per attack, for both) make a cheaper check."""
    from annt.robustness.ensemble import robust_accuracy
    from annt.robustness.runner import diagnose
    from annt.store.checkpoint import load_checkpoint, read_meta, save_checkpoint

    folder = Path(run_dir) / CHECK_DIR
    model = load_checkpoint(best, device=device)
    diag = diagnose(model, dataset, samples=images, eps=eps, norm=norm, attacks=attacks, params=params, seed=seed,
                    data_dir=data_dir, device=device, out_dir=folder / "diagnose", progress=progress)
    ens = robust_accuracy(model, dataset, eps=eps, norm=norm, ensemble=ensemble, n_images=images, params=params,
                          seed=seed, data_dir=data_dir, device=device, out_dir=folder / "ensemble",
                          label=str(best), progress=progress)
    worst = diag.worst_case.get(float(eps))
    overfit = overfitting_evidence(diag.outcomes, float(eps))
    record = {
        "eps": float(eps), "norm": norm, "images": images,
        "verdict": diag.verdict, "masking": diag.verdict == MASKING, "evidence": list(diag.evidence),
        "explanation": list(diag.explanation),
        "catastrophic_overfitting": overfit is not None, "overfitting_evidence": overfit,
        "diagnose_worst_case": None if worst is None else round(float(worst), 4),
        "ensemble": ens.ensemble,
        "ensemble_robust_accuracy": round(ens.robust_accuracy, 4),  # RobustBench: of all images
        "ensemble_clean_accuracy": round(ens.clean_accuracy, 4),
        "files": CHECK_DIR,
    }
    save_checkpoint(best, model, {**read_meta(best), "robustness_check": record})
    return record


def summary_line(record: dict[str, Any]) -> str:
    """One line for the training summary on stderr."""
    head = (f"robustness check at eps {record['eps']:g} ({record['images']} test images): "
            f"{record['ensemble']} ensemble robust accuracy {record['ensemble_robust_accuracy']:.3f}; ")
    if record.get("catastrophic_overfitting"):
        head += f"WARNING: {record['overfitting_evidence']}; "
    if record["masking"]:
        why = record["evidence"][0] if record["evidence"] else ""
        return head + f"WARNING: {record['verdict']} ({why}); the robust accuracy may be an overestimate"
    if record["verdict"] != CLEAN:
        why = record["explanation"][0] if record.get("explanation") else ""
        return head + f"WARNING: {record['verdict']}" + (f" ({why})" if why else "")
    return head + record["verdict"]
