"""The diagnose verdict: compare the checklist's measurements and name what looks wrong.

Robust accuracies closer than ``tolerance`` count as equal. Any of these makes the verdict
"gradient masking suspected", each with its evidence line:

- an iterative gradient attack is weaker than FGSM;
- a gradient-free attack or a transfer attack beats the plain gradient attacks (below);
- growing eps does not reach 100% success;
- some samples have a zero or vanishing input gradient;
- a gradient surrogate (``gradient: soft`` ...) beats the default straight-through gradient.

"The gradient attacks" of the gradient-free rule are the plain ones (FGSM, PGD, APGD-CE: the
cross-entropy's gradient through the model's default gradient); the others (APGD-DLR, APGD-T,
the gradient surrogate rows, ...) are alternatives, and :func:`explain_gap` says which of them,
if any, closed the gap. Without masking evidence, a failed strength self-test of an attack the
verdict rests on (:func:`selftest_targets`) makes it :data:`TOO_WEAK` instead of :data:`CLEAN`,
unless the worst case at the largest eps is 0 (no robustness is claimed; :func:`weak_that_matter`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from annt.robustness.checks import Outcome

MASKING = "gradient masking suspected"
CLEAN = "no sign of gradient masking"
TOO_WEAK = "attacks too weak to support a robustness claim"
PLAIN = ("fgsm", "pgd", "apgd_ce")  # the gradient attacks a masked gradient fools first
GRADIENT_KINDS = ("single-step", "iterative", "surrogate")


RANK = {"iterative": 0, "surrogate": 1, "single-step": 2}  # ties: the stronger kind first


def _best(rows: list[Outcome]) -> Outcome | None:
    """The row with the lowest robust accuracy (ties: iterative, surrogate, single-step, then
    checklist order)."""
    return min(rows, key=lambda o: (o.robust_accuracy, RANK.get(o.kind, 3))) if rows else None


def _gradient_rows(outcomes: list[Outcome]) -> tuple[list[Outcome], list[Outcome]]:
    """(plain, alternative) gradient rows; all of them count as plain when no plain one ran."""
    rows = [o for o in outcomes if o.kind in GRADIENT_KINDS]
    plain = [o for o in rows if o.attack in PLAIN and o.kind != "surrogate"]
    if not plain:
        return rows, []
    return plain, [o for o in rows if o not in plain]


def _gap(outcomes: list[Outcome], tolerance: float) -> tuple[Outcome, Outcome, float] | None:
    """(best plain gradient row, best gradient-free/transfer row, gap) when the latter wins by
    more than ``tolerance``."""
    plain, _ = _gradient_rows(outcomes)
    best_grad = _best(plain)
    best_other = _best([o for o in outcomes if o.kind in ("gradient-free", "transfer")])
    if best_grad is None or best_other is None:
        return None
    gap = best_grad.robust_accuracy - best_other.robust_accuracy
    return (best_grad, best_other, gap) if gap > tolerance else None


def judge_eps(outcomes: list[Outcome], tolerance: float) -> list[str]:
    """Evidence lines for one eps from its single-step / iterative / gradient-free rows."""
    lines: list[str] = []
    single = [o for o in outcomes if o.kind == "single-step"]
    iterative = [o for o in outcomes if o.kind == "iterative"]
    fgsm = _best(single)
    for it in iterative:
        if fgsm and it.robust_accuracy > fgsm.robust_accuracy + tolerance:
            lines.append(
                f"eps {it.eps:g}: {it.name} ({it.robust_accuracy:.3f}) is weaker than "
                f"{fgsm.name} ({fgsm.robust_accuracy:.3f}): iterative must be at least as strong"
            )
    found = _gap(outcomes, tolerance)
    if found:
        best_grad, best_other, gap = found
        lines.append(
            f"eps {best_grad.eps:g}: {best_other.name} ({best_other.kind}) leaves robust "
            f"accuracy {best_other.robust_accuracy:.3f} vs {best_grad.robust_accuracy:.3f} "
            f"for the best gradient attack ({best_grad.name}): {gap:.3f} lower"
        )
    return lines


def explain_gap(outcomes: list[Outcome], tolerance: float) -> str | None:
    """For one eps whose gradient-free (or transfer) attack beat the plain gradient attacks:
    which alternative gradient attack came within ``tolerance`` of it, or, when none did, that
    the worst case is an upper bound resting on the attack(s) that beat them. ``None`` without
    such a gap."""
    found = _gap(outcomes, tolerance)
    if found is None:
        return None
    best_grad, best_other, _ = found
    _, alternative = _gradient_rows(outcomes)
    closers = sorted((o for o in alternative if o.robust_accuracy <= best_other.robust_accuracy + tolerance),
                     key=lambda o: o.robust_accuracy)
    e = best_other.eps
    if closers:
        names = ", ".join(f"{o.name} ({o.robust_accuracy:.3f})" for o in closers)
        return (f"eps {e:g}: {names} closed the gap that {best_other.name} ({best_other.robust_accuracy:.3f})"
                f" left to {best_grad.name} ({best_grad.robust_accuracy:.3f}): the default gradient is masked,"
                f" {'this alternative gradient attack reaches' if len(closers) == 1 else 'these alternative gradient attacks reach'}"
                " the gradient-free result")
    gradient = [o for o in outcomes if o.kind in GRADIENT_KINDS]
    best_any = _best(gradient)
    setters = [o for o in outcomes if o.kind in ("gradient-free", "transfer")
               and o.robust_accuracy < best_any.robust_accuracy - tolerance]
    worst = float(np.logical_and.reduce([o.robust for o in outcomes]).mean())
    return (f"eps {e:g}: worst case {worst:.3f} is an upper bound set by {_and(o.name for o in setters)};"
            f" no gradient attack came within {tolerance:g} (best: {best_any.name}, {best_any.robust_accuracy:.3f})")


def _and(names: Any) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


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


def selftest_targets(outcomes: list[Outcome]) -> list[tuple[Outcome, str]]:
    """The rows the verdict rests on, at the largest eps: the strongest gradient attack (ties:
    iterative before surrogate before single-step, then checklist order) and the strongest
    gradient-free one, each with its role. Transfer rows attack another model: never tested."""
    if not outcomes:
        return []
    top = max(o.eps for o in outcomes)
    rows = [o for o in outcomes if o.eps == top]
    grad = _best([o for o in rows if o.kind in GRADIENT_KINDS])
    free = _best([o for o in rows if o.kind == "gradient-free"])
    out = [(grad, "strongest gradient attack")] if grad else []
    return out + ([(free, "strongest gradient-free attack")] if free else [])


def judge_selftests(results: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(a line per self-tested attack, the names of those that failed). An attack fails below
    its ``min_pass`` rate, or when no image had a valid planted task (nothing was checked)."""
    lines, failed = [], []
    for r in results:
        rate, name = r["pass_rate"], r["name"]
        head = (f"self-test at eps {r['eps']:g}: {name} ({r['role']}) found the planted adversarial example"
                f" on {r['passed']}/{r['valid']} images")
        if r["valid"] == 0 or rate is None or math.isnan(rate):
            lines.append(f"self-test at eps {r['eps']:g}: {name} ({r['role']}): no image had a valid planted"
                         " task, so its strength is unchecked")
            failed.append(name)
        elif r["strong_enough"]:
            lines.append(f"{head} (pass rate {rate:.3f}): passed")
        else:
            lines.append(f"{head} (pass rate {rate:.3f} < {r['min_pass']:g}): FAILED, too weak")
            failed.append(name)
    return lines, failed


def weak_that_matter(too_weak: list[str], worst: dict[float, float]) -> list[str]:
    """The self-test failures a verdict must heed: none when the worst case at the largest eps
    is 0 (every image was broken, so no robustness claim rests on any attack's failure to find
    more), else all of them."""
    if not too_weak or not worst:
        return list(too_weak)
    return list(too_weak) if worst[max(worst)] > 0 else []


def verdict(evidence: list[str], too_weak: list[str] | None = None) -> str:
    """MASKING on any masking evidence; else TOO_WEAK when an attack the verdict rests on failed
    its self-test; else CLEAN."""
    if evidence:
        return MASKING
    return TOO_WEAK if too_weak else CLEAN


def explain(label: str, outcomes: list[Outcome], tolerance: float, selftest_lines: list[str],
            too_weak: list[str]) -> list[str]:
    """The verdict in sentences: per eps the gradient-free gap (:func:`explain_gap`), why the
    attacks are too weak (naming them), and the self-test results."""
    lines = []
    if label == TOO_WEAK:
        lines.append(f"{_and(too_weak)} failed the strength self-test: the checklist cannot support a"
                     " robustness claim; strengthen the attack (more steps, restarts or queries) and run again")
    for e in dict.fromkeys(o.eps for o in outcomes):
        line = explain_gap([o for o in outcomes if o.eps == e], tolerance)
        if line:
            lines.append(line)
    if label == CLEAN and not selftest_lines:
        lines.append("the attacks' strength was not self-tested (selftest 0)")
    if label != TOO_WEAK and too_weak:
        top = max(o.eps for o in outcomes)
        lines.append(f"{_and(too_weak)} failed the strength self-test, but the attacks broke every image at eps"
                     f" {top:g}: no robustness claim rests on it")
    return lines + selftest_lines
