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
DEFAULT_SEED = 0

# ``annt robust-accuracy`` (annt.robustness.ensemble): the attack ensembles, in run order, as
# (attack, its parameters beyond eps and norm). ``standard`` is AutoAttack's standard version
# (Croce & Hein 2020); ``cheap`` swaps the targeted attacks for APGD-DLR and gives Square a fifth
# of the queries.
ENSEMBLES: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "standard": (("apgd_ce", {}), ("apgd_t", {}), ("fab_t", {}), ("square", {"max_queries": 5000})),
    "cheap": (("apgd_ce", {}), ("apgd_dlr", {}), ("square", {"max_queries": 1000})),
}
DEFAULT_ENSEMBLE = "standard"
DEFAULT_IMAGES = 1000  # the first N test images

# ``annt selftest`` (annt.robustness.selftest): the binarization test of one attack.
SELFTEST_IMAGES = 50  # correctly classified test images
SELFTEST_INNER = 200  # random class-0 points per image
SELFTEST_MIN_PASS = 0.9  # pass rate below which an attack counts as too weak
