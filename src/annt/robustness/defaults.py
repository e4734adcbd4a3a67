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
