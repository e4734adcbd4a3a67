"""Per-sample evaluation records and the summary statistics computed from them."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch


@dataclass
class SampleRecords:
    """One entry per counted sample; ``true_rank`` is 1 when the true class has the top logit."""

    image_index: torch.Tensor  # int64: index of the clean image in the test split
    label: torch.Tensor  # int64: true class
    clean_pred: torch.Tensor  # int64: target's label for the clean image
    adv_pred: torch.Tensor  # int64: target's label for the adversarial image
    fooled: torch.Tensor  # bool: adv_pred != label
    true_rank: torch.Tensor  # int64: rank of the true class among the target's logits
    true_prob: torch.Tensor  # float64: softmax probability of the true class (adversarial)
    confidence: torch.Tensor  # float64: softmax probability of adv_pred
    l0: torch.Tensor  # int64: changed pixels (see annt.metrics.distances)
    l2: torch.Tensor  # float64
    linf: torch.Tensor  # float64
    ssim: torch.Tensor  # float64: SSIM of adversarial vs clean
    flagged: torch.Tensor  # bool: unrecognisable (see annt.metrics.flags)

    def __len__(self) -> int:
        return len(self.label)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays (for npz files and data frames)."""
        return {f.name: getattr(self, f.name).cpu().numpy() for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> SampleRecords:
        return cls(**{f.name: torch.from_numpy(np.asarray(arrays[f.name])) for f in fields(cls)})


def _mean(x: torch.Tensor) -> float:
    return float(x.double().mean()) if len(x) else math.nan


def _median(x: torch.Tensor) -> float:
    """Median with the two middle values averaged (numpy's definition, not torch.median's)."""
    return float(torch.quantile(x.double(), 0.5)) if len(x) else math.nan


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def summarize(rec: SampleRecords) -> dict[str, float | int]:
    """Paper metrics (eq. 28/29, distortions over successful examples) plus flag-aware variants.

    Keys ending in ``_unflagged`` repeat a statistic with flagged samples removed from the
    population (so adversarial accuracy is over ``n - n_flagged`` samples).
    """
    n = len(rec)
    correct = ~rec.fooled
    ok = rec.fooled  # successful adversarial examples
    keep = ok & ~rec.flagged
    n_flagged = int(rec.flagged.sum())
    out: dict[str, float | int] = {
        "n_kept": n,
        "n_correct": int(correct.sum()),
        "n_success": int(ok.sum()),
        "adversarial_accuracy": _ratio(int(correct.sum()), n),
        "evasion_rate": _ratio(int(ok.sum()), n),
        "top2_fraction": _mean((rec.true_rank[ok] <= 2).double()),
        "mean_true_rank": _mean(rec.true_rank[ok]),
        "mean_confidence": _mean(rec.confidence[ok]),
        "mean_ssim": _mean(rec.ssim[ok]),
        "n_flagged": n_flagged,
        "adversarial_accuracy_unflagged": _ratio(int((correct & ~rec.flagged).sum()), n - n_flagged),
    }
    for name in ("l0", "l2", "linf"):
        values = getattr(rec, name)
        out[f"mean_{name}"] = _mean(values[ok])
        out[f"median_{name}"] = _median(values[ok])
        out[f"mean_{name}_unflagged"] = _mean(values[keep])
    return out


SUMMARY_KEYS: tuple[str, ...] = (
    "n_kept", "n_correct", "n_success", "adversarial_accuracy", "evasion_rate", "top2_fraction",
    "mean_true_rank", "mean_confidence", "mean_ssim", "n_flagged", "adversarial_accuracy_unflagged",
    "mean_l0", "median_l0", "mean_l0_unflagged", "mean_l2", "median_l2", "mean_l2_unflagged",
    "mean_linf", "median_linf", "mean_linf_unflagged",
)
"""Every key ``summarize`` returns, in a stable order (the results database's metric columns)."""
