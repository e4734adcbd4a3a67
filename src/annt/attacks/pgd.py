"""Projected Gradient Descent (Madry et al. 2018), Linf and L2, with random start and restarts.

Each step ascends the per-sample cross-entropy (descends it towards the target when
targeted) by ``step_size`` along the gradient's sign (Linf) or its L2-normalised direction,
then projects onto the ``eps`` ball around the input and clips to [0, 1]. Like torchattacks'
``PGD``/``PGDL2`` every step is taken; a sample's result for a restart is its last iterate if
that is adversarial, else the last adversarial iterate seen, else the last iterate. Restarts
(fresh random starts) run only on the samples no earlier restart fooled, so the first
successful restart is kept per sample.
"""

from __future__ import annotations

import torch
from torch import nn

from annt.attacks.base import (
    AttackResult,
    check_batch,
    counts,
    eval_mode,
    is_adversarial,
    make_generator,
    predict,
    with_restarts,
)
from annt.attacks.geometry import (
    bcast,
    check_norm,
    in_ball,
    input_gradient,
    random_in_ball,
    step_direction,
)
from annt.attacks.losses import ce_loss
from annt.attacks.params import BallParams, PosFloat, PosInt, takes
from annt.models.inference import cached_inference_copy

STEP_FRACTION = 2.5  # default step_size = 2.5 * eps / steps (Madry et al.'s choice)


def _one_run(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    eps: float,
    norm: str,
    steps: int,
    step_size: float,
    start: bool,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One restart on a batch: (result per sample, success per sample)."""
    adv = random_in_ball(x, eps, norm, gen) if start else x.clone()
    best = adv.clone()
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(steps):
        grad, logits = input_gradient(model, adv, lambda z: ce_loss(z, labels, targeted))
        hit = is_adversarial(logits.argmax(1), labels, targeted)
        best = torch.where(bcast(hit, x), adv, best)
        found |= hit
        adv = in_ball(x, adv + step_size * step_direction(grad, norm), eps, norm).detach()
    hit = is_adversarial(predict(model, adv), labels, targeted)
    best = torch.where(bcast(hit | ~found, x), adv, best)
    return best, hit | found


class PgdParams(BallParams):
    steps: PosInt = 40
    step_size: PosFloat | None = None  # None: 2.5 * eps / steps
    random_start: bool = True
    restarts: PosInt = 1


@takes(PgdParams)
def attack(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    targeted: bool,
    eps: float,
    norm: str,
    steps: int,
    step_size: float | None,
    random_start: bool,
    restarts: int,
    seed: int | None = None,
) -> AttackResult:
    """PGD with ``steps`` steps of ``step_size`` (default ``2.5 * eps / steps``) per restart."""
    labels = check_batch(inputs, labels, "pgd")
    norm = check_norm("pgd", norm)
    n, device = inputs.shape[0], inputs.device
    alpha = STEP_FRACTION * eps / steps if step_size is None else float(step_size)
    gen = make_generator(seed, device)
    x = inputs.detach()

    with eval_mode(model):
        frozen = cached_inference_copy(model, channels_last=False)  # bit-identical, faster

        def run_once(todo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return _one_run(frozen, x[todo], labels[todo], targeted, eps, norm, steps, alpha, random_start, gen)

        adv, success, tries = with_restarts(x, restarts, run_once)
    return AttackResult(
        adversarial=adv,
        success=success,
        iterations=counts(n, tries * steps, device),
        forward_passes=counts(n, tries * (steps + 1), device),
        backward_passes=counts(n, tries * steps, device),
    )
