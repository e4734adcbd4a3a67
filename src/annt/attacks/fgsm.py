"""Fast Gradient Sign Method (Goodfellow et al. 2015) and its L2 variant FGM.

One gradient of the cross-entropy on the logits, one step of size ``eps``: along the gradient's
sign (``norm="inf"``) or along the L2-normalised gradient (``norm="2"``). Untargeted attacks
ascend the loss of the true class, targeted ones descend the loss of the target class.
"""

from __future__ import annotations

import torch
from torch import nn

from annt.attacks.base import AttackResult, check_batch, counts, eval_mode, is_adversarial
from annt.attacks.geometry import check_norm, gradient_step
from annt.attacks.params import BallParams, takes
from annt.models.inference import cached_inference_copy, exact_labels


class FgsmParams(BallParams):
    pass


@takes(FgsmParams)
def attack(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    targeted: bool,
    eps: float,
    norm: str,
    seed: int | None = None,
) -> AttackResult:
    """FGSM (``norm="inf"``) / FGM (``norm="2"``) with ART's default ``eps`` = 0.3.

    ``seed`` is accepted for a uniform attack signature; the attack is deterministic.
    """
    del seed
    labels = check_batch(inputs, labels, "fgsm")
    norm = check_norm("fgsm", norm)
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
