"""The diagnose checklist's defaults, in one place (no heavy imports: the CLI reads them when
it builds its parser).

Used by ``annt.diagnose`` / ``run_checklist`` (their keyword defaults), ``annt diagnose``
(its option defaults and help) and the report's column order. The study spec's ``diagnose:``
block (``annt.experiments.spec.DiagnoseSpec``) must agree: tests/foundation/test_cli_reference.py
fails when any of them disagrees.
"""

from __future__ import annotations

from typing import Any

# Gradient attacks first, then the gradient-free ones (each run only when registered).
GRADIENT_ATTACKS = ("fgsm", "pgd", "apgd_ce", "apgd_dlr")
GRADIENT_FREE_ATTACKS = ("square", "hop_skip_jump")
DEFAULT_ATTACKS = GRADIENT_ATTACKS + GRADIENT_FREE_ATTACKS
# HopSkipJump's own defaults (50 iterations of up to 10,000 queries) would dwarf the rest: give
# it Square's default query budget. The caller's parameters override these.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {"hop_skip_jump": {"max_queries": 5000}}
NORMS = ("inf", "2")
DEFAULT_NORM = "inf"
DEFAULT_SAMPLES = 200  # correctly classified test images
DEFAULT_TOLERANCE = 0.01  # robust accuracies closer than this count as equal
DEFAULT_GROW = True  # run the growing-eps check
DEFAULT_SELFTEST = 20  # images for the strength self-test of the attacks behind the verdict (0: off)
DEFAULT_SEED = 0

# ``annt robust-accuracy`` (annt.robustness.ensemble): the attack ensembles, in run order, as
# (attack, its parameters beyond eps and norm). ``standard`` is AutoAttack's standard version
# (Croce & Hein 2020); ``cheap`` swaps the targeted attacks for APGD-DLR and gives Square a fifth
# of the queries; ``adaptive`` is ``standard`` for quantized models: APGD-CE and APGD-T each
# through the ``sigmoid`` surrogate and through the default straight-through gradient (at 1-2
# bits the surrogate breaks far more images, at 8-16 bits the straight-through one; on a model
# without quantizers both are the exact gradient, so it equals ``standard`` with each APGD run
# twice). The ensemble runs APGD with ``early_stop`` (an image leaves at its first adversarial
# iterate), which changes no success, only the time.
ENSEMBLES: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "standard": (("apgd_ce", {}), ("apgd_t", {}), ("fab_t", {}), ("square", {"max_queries": 5000})),
    "adaptive": (("apgd_ce", {}), ("apgd_ce", {"gradient": "sigmoid"}), ("apgd_t", {"gradient": "sigmoid"}),
                 ("apgd_t", {}), ("fab_t", {}), ("square", {"max_queries": 5000})),
    "cheap": (("apgd_ce", {}), ("apgd_dlr", {}), ("square", {"max_queries": 1000})),
}
DEFAULT_ENSEMBLE = "standard"


def stage_label(attack: str, params: dict[str, Any]) -> str:
    """An ensemble stage's name: the attack, with its quantizer gradient where that is not the
    default (``apgd_ce[sigmoid]``)."""
    gradient = params.get("gradient")
    return f"{attack}[{gradient}]" if gradient not in (None, "ste") else attack
DEFAULT_IMAGES = 1000  # the first N test images

# ``annt selftest`` (annt.robustness.selftest): the binarization test of one attack.
SELFTEST_IMAGES = 50  # correctly classified test images
SELFTEST_INNER = 200  # random class-0 points per image
SELFTEST_MIN_PASS = 0.9  # pass rate below which an attack counts as too weak
