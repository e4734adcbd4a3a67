"""Per-sample attack losses on logits, shared by PGD, APGD and the diagnose checklist.

Every loss returns one value per sample, and larger always means "closer to the attack's
goal": untargeted losses grow as the true class loses, targeted ones as the target wins.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

LOSSES = ("ce", "dlr", "margin")


def ce_loss(logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Cross-entropy of ``labels``; negated when ``labels`` are targets (descend towards them)."""
    loss = F.cross_entropy(logits, labels, reduction="none")
    return -loss if targeted else loss


def margin_loss(logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """CW-style logit margin: best other logit minus the label's (> 0 means misclassified).

    Targeted: the target's logit minus the best other one (> 0 means the target wins).
    """
    own = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return own - other if targeted else other - own


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020, eq. 5), scale- and shift-invariant.

    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` with ``z_pi`` the logits sorted in
    decreasing order; needs at least 3 classes.
    """
    ordered, _ = logits.sort(dim=1, descending=True)
    own = logits.gather(1, labels[:, None]).squeeze(1)
    top_is_label = logits.argmax(1) == labels
    best_other = torch.where(top_is_label, ordered[:, 1], ordered[:, 0])
    return -(own - best_other) / (ordered[:, 0] - ordered[:, 2] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (Croce & Hein 2020, eq. 6): ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``.

    Needs at least 4 classes and the true labels beside the targets.
    """
    ordered, _ = logits.sort(dim=1, descending=True)
    own = logits.gather(1, labels[:, None]).squeeze(1)
    target = logits.gather(1, targets[:, None]).squeeze(1)
    return -(own - target) / (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12)
