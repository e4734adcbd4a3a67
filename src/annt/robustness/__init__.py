"""Robustness diagnosis: is a model robust, or are its gradients masked? (``annt diagnose``)"""

from annt.robustness.runner import DiagnoseResult, diagnose, run_checklist
from annt.robustness.store import load_diagnose, save_diagnose

__all__ = ["DiagnoseResult", "diagnose", "load_diagnose", "run_checklist", "save_diagnose"]
