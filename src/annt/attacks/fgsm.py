"""Fast Gradient Sign Method (Goodfellow et al. 2015) and its L2 variant FGM.

One gradient of the cross-entropy on the logits, one step of size ``eps``: along the gradient's
sign (``norm="inf"``) or along the L2-normalised gradient (``norm="2"``). Untargeted attacks
ascend the loss of the true class, targeted ones descend the loss of the target class.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from annt.attacks.base import (
    AttackResult,
    bcast,
    check_batch,
    counts,
    eval_mode,
    flat_norm,
    input_gradient,
    is_adversarial,
)
from annt.errors import AnntError
from annt.models.inference import cached_inference_copy, exact_labels

NORMS = ("inf", "2")


def step_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Unit-norm steepest-ascent direction of ``grad`` (sign for Linf, normalised for L2).

    Zero gradients stay zero: a pixel (or sample) with no gradient is left alone, as in ART.
    """
    if norm == "inf":
        return grad.sign()
    length = flat_norm(grad, 2.0)
    return grad / bcast(torch.where(length > 0, length, torch.ones_like(length)), grad)


def gradient_step(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    norm: str,
    targeted: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One clipped FGSM/FGM step from ``x``; also returns the logits at ``x``.

    Shared with UAP's inner attacker. The sum of per-sample losses is used so that the step
    does not depend on the batch size (only its sign or direction matters anyway).
    """
    grad, logits = input_gradient(model, x, lambda z: F.cross_entropy(z, labels, reduction="none"))
    direction = step_direction(grad, norm)
    if targeted:
        direction = -direction
    return (x + eps * direction).clamp_(0.0, 1.0), logits


def attack(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    targeted: bool = False,
    eps: float = 0.3,
    norm: str = "inf",
    seed: int | None = None,
) -> AttackResult:
    """FGSM (``norm="inf"``) / FGM (``norm="2"``) with ART's default ``eps`` = 0.3.

    ``seed`` is accepted for a uniform attack signature; the attack is deterministic.
    """
    del seed
    labels = check_batch(inputs, labels, "fgsm")
    norm = str(norm)
    if norm not in NORMS:
        raise AnntError(f"fgsm: norm must be one of {', '.join(NORMS)}, got {norm!r}")
    n, device = inputs.shape[0], inputs.device
    with eval_mode(model):
        frozen = cached_inference_copy(model, channels_last=False)  # bit-identical gradients
        adv, _ = gradient_step(frozen, inputs, labels, eps, norm, targeted)
    adv = adv.detach()

    def judge() -> torch.Tensor:
        # one more forward pass, on the faster inference copy (labels exactly the model's);
        # run when ``success`` is first read, so a caller that wants only the images skips it
        with eval_mode(model):
            return is_adversarial(exact_labels(cached_inference_copy(model), model, adv), labels, targeted)

    return AttackResult(
        adversarial=adv,
        success=judge,
        iterations=counts(n, 1, device),
        forward_passes=counts(n, 1, device),  # the gradient's forward; judging is not the attack's cost
        backward_passes=counts(n, 1, device),
    )
