"""Robustness metrics: adversarial accuracy, distortions, SSIM and unrecognisable-image flags."""

from annt.metrics.distances import (
    L0_TOLERANCE,
    l0_distance,
    l2_distance,
    linf_distance,
    perturbation_norms,
)
from annt.metrics.evaluate import Evaluation, evaluate_set, match_clean, records_from_logits
from annt.metrics.flags import FlagCriterion, flag_unrecognisable
from annt.metrics.records import SUMMARY_KEYS, SampleRecords, summarize
from annt.metrics.ssim import ssim

__all__ = [
    "L0_TOLERANCE",
    "SUMMARY_KEYS",
    "Evaluation",
    "FlagCriterion",
    "SampleRecords",
    "evaluate_set",
    "flag_unrecognisable",
    "l0_distance",
    "l2_distance",
    "linf_distance",
    "match_clean",
    "perturbation_norms",
    "records_from_logits",
    "ssim",
    "summarize",
]
