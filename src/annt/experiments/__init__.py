"""Studies: a YAML grid of datasets x models x bitwidths x attacks x runs, run as resumable cells."""

from annt.experiments.builder import build_plan
from annt.experiments.plan import AttackConfig, Cell, ModelSlot, StudyPlan, count_kinds
from annt.experiments.runner import StudyResult, prepare, run_study
from annt.experiments.spec import SpecError, StudySpec, load_spec, parse_spec

__all__ = [
    "AttackConfig",
    "Cell",
    "ModelSlot",
    "SpecError",
    "StudyPlan",
    "StudyResult",
    "StudySpec",
    "build_plan",
    "count_kinds",
    "load_spec",
    "parse_spec",
    "prepare",
    "run_study",
]
