"""The diagnose verdict: compare the checklist's measurements and name what looks wrong.

Robust accuracies closer than ``tolerance`` count as equal. Any of these makes the verdict
"gradient masking suspected", each with its evidence line:

- an iterative gradient attack is weaker than FGSM;
- a gradient-free attack or a transfer attack beats every gradient attack;
- growing eps does not reach 100% success;
- some samples have a zero or vanishing input gradient;
- a gradient surrogate (``gradient: soft`` ...) beats the default straight-through gradient.
"""

from __future__ import annotations

from annt.robustness.checks import Outcome

MASKING = "gradient masking suspected"
CLEAN = "no sign of gradient masking"


def _best(rows: list[Outcome]) -> Outcome | None:
    return min(rows, key=lambda o: o.robust_accuracy) if rows else None


def judge_eps(outcomes: list[Outcome], tolerance: float) -> list[str]:
    """Evidence lines for one eps from its single-step / iterative / gradient-free rows."""
    lines: list[str] = []
    single = [o for o in outcomes if o.kind == "single-step"]
    iterative = [o for o in outcomes if o.kind == "iterative"]
    gradient = single + iterative
    other = [o for o in outcomes if o.kind in ("gradient-free", "transfer")]
    fgsm = _best(single)
    for it in iterative:
        if fgsm and it.robust_accuracy > fgsm.robust_accuracy + tolerance:
            lines.append(
                f"eps {it.eps:g}: {it.name} ({it.robust_accuracy:.3f}) is weaker than "
                f"{fgsm.name} ({fgsm.robust_accuracy:.3f}): iterative must be at least as strong"
            )
    best_grad, best_other = _best(gradient), _best(other)
    if best_grad and best_other:
        gap = best_grad.robust_accuracy - best_other.robust_accuracy
        if gap > tolerance:
            lines.append(
                f"eps {best_grad.eps:g}: {best_other.name} ({best_other.kind}) leaves robust "
                f"accuracy {best_other.robust_accuracy:.3f} vs {best_grad.robust_accuracy:.3f} "
                f"for the best gradient attack ({best_grad.name}): {gap:.3f} lower"
            )
    return lines


def judge_growing(rows: list[tuple[float, float]], attack: str) -> list[str]:
    if rows and rows[-1][1] < 1.0:
        eps, rate = rows[-1]
        return [f"{attack} at eps {eps:g} fools only {rate:.3f} of the samples (unbounded must win)"]
    return []


def judge_gradients(health: dict[str, float], tolerance: float) -> list[str]:
    share = health.get("vanishing_gradient", 0.0)
    if share > tolerance:
        zero = health.get("zero_gradient", 0.0)
        return [f"{share:.3f} of the samples have a vanishing input gradient ({zero:.3f} exactly zero)"]
    return []


def judge_surrogates(base: Outcome, rows: list[Outcome], default: str, tolerance: float) -> list[str]:
    """A gradient surrogate that beats the default gradient (``base``) means the default is masked."""
    lines = []
    for o in rows:
        gap = base.robust_accuracy - o.robust_accuracy
        if gap > tolerance:
            lines.append(
                f"eps {o.eps:g}: gradient={o.params['gradient']} leaves {o.robust_accuracy:.3f} "
                f"vs {base.robust_accuracy:.3f} with gradient={default}: {gap:.3f} lower"
            )
    return lines


def verdict(evidence: list[str]) -> str:
    return MASKING if evidence else CLEAN
