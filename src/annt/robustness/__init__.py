"""Robustness diagnosis: is a model robust, or are its gradients masked? (``annt diagnose``)

The names below load their modules on first use, so that ``annt.robustness.defaults`` (the
checklist's defaults, read by the command line when it builds its parser) imports nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from annt.robustness.ensemble import robust_accuracy
    from annt.robustness.runner import DiagnoseResult, diagnose, run_checklist
    from annt.robustness.selftest import selftest
    from annt.robustness.store import load_diagnose, load_robust_accuracy, save_diagnose

__all__ = ["DiagnoseResult", "diagnose", "load_diagnose", "load_robust_accuracy", "robust_accuracy",
           "run_checklist", "save_diagnose", "selftest"]
_HOME = {"DiagnoseResult": "runner", "diagnose": "runner", "run_checklist": "runner",
         "load_diagnose": "store", "save_diagnose": "store", "load_robust_accuracy": "store",
         "robust_accuracy": "ensemble", "selftest": "selftest"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(f"annt.robustness.{_HOME[name]}"), name)
    raise AttributeError(f"module 'annt.robustness' has no attribute {name!r}")
