"""Which adversarial images no human would recognise.

The paper removed Boundary Attack images "composed of random pixels" from Table 6 and
found that the true class was still within the network's top-2 for all of them. We make
that operational: a sample is *flagged* when

1. it fools the target (only successful examples enter the distortion statistics),
2. its SSIM to the clean image is below ``ssim_below`` (default 0.15). Calibration on
   300 MNIST test digits: uniform noise scores -0.06..0.10 against the digit (median 0.005);
   a blend of 20% digit and 80% noise, where the digit is barely visible, has median 0.15;
   FGSM (the most visibly perturbed attack the paper keeps) scores at least 0.35 at eps 0.1
   and 0.21 at eps 0.3 on Mnist A. So 0.15 separates noise from every recognisable case.
3. if ``require_true_in_top2`` (default, the paper's check), the true class is ranked first
   or second by the target: the network still "sees" the digit a human cannot.

Reports show every statistic with and without flagged samples and the flagged count.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field


class FlagCriterion(BaseModel):
    """Thresholds for flagging adversarial images no human would recognise.

    The module docstring gives the criterion and its calibration.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ssim_below: float = Field(0.15, ge=0.0, le=1.0)  # flag fooling images whose SSIM to the clean one is below this
    require_true_in_top2: bool = True  # flag only images whose true class the model still ranks first or second


def flag_unrecognisable(
    fooled: torch.Tensor, ssim: torch.Tensor, true_rank: torch.Tensor, criterion: FlagCriterion
) -> torch.Tensor:
    """Boolean mask [N] of flagged samples; ``true_rank`` is 1 for the top class."""
    flagged = fooled.bool() & (ssim < criterion.ssim_below)
    if criterion.require_true_in_top2:
        flagged &= true_rank <= 2
    return flagged
