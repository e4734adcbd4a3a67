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
    bcast,
    check_batch,
    counts,
    eval_mode,
    flat_norm,
    input_gradient,
    is_adversarial,
    make_generator,
    predict,
)
from annt.attacks.fgsm import NORMS, step_direction
from annt.attacks.losses import ce_loss
from annt.attacks.uap import project
from annt.errors import AnntError

STEP_FRACTION = 2.5  # default step_size = 2.5 * eps / steps (Madry et al.'s choice)


def start_point(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    """A uniform point of the Linf ball, or a point of the L2 ball (uniform direction,
    radius ``eps * U(0, 1)``, as torchattacks' PGDL2), clipped to [0, 1]."""
    if norm == "inf":
        noise = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1
        return (x + eps * noise).clamp(0.0, 1.0)
    direction = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    direction = direction / bcast(flat_norm(direction).clamp(min=1e-12), x)
    radius = torch.rand(x.shape[0], generator=gen, device=x.device, dtype=x.dtype) * eps
    return (x + direction * bcast(radius, x)).clamp(0.0, 1.0)


def in_ball(x: torch.Tensor, adv: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project ``adv`` onto the ``eps`` ball around ``x`` and clip to [0, 1]; the L2 radius is
    shrunk by a hair so that float rounding never puts a sample outside the budget."""
    radius = eps if norm == "inf" else eps * (1 - 1e-6)
    return (x + project(adv - x, radius, norm)).clamp(0.0, 1.0)


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
    adv = start_point(x, eps, norm, gen) if start else x.clone()
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


def attack(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    targeted: bool = False,
    eps: float = 0.3,
    norm: str = "inf",
    steps: int = 40,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    seed: int | None = None,
) -> AttackResult:
    """PGD with ``steps`` steps of ``step_size`` (default ``2.5 * eps / steps``) per restart."""
    labels = check_batch(inputs, labels, "pgd")
    norm = str(norm)
    if norm not in NORMS:
        raise AnntError(f"pgd: norm must be one of {', '.join(NORMS)}, got {norm!r}")
    n, device = inputs.shape[0], inputs.device
    alpha = STEP_FRACTION * eps / steps if step_size is None else float(step_size)
    gen = make_generator(seed, device)
    x = inputs.detach()
    adv, success = x.clone(), torch.zeros(n, dtype=torch.bool, device=device)
    tries = torch.zeros(n, dtype=torch.int64, device=device)
    with eval_mode(model):
        for _ in range(restarts):
            todo = (~success).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            tries[todo] += 1
            found, hit = _one_run(
                model, x[todo], labels[todo], targeted, eps, norm, steps, alpha, random_start, gen
            )
            adv[todo] = found
            success[todo] = hit
    return AttackResult(
        adversarial=adv,
        success=success,
        iterations=counts(n, tries * steps, device),
        forward_passes=counts(n, tries * (steps + 1), device),
        backward_passes=counts(n, tries * steps, device),
    )
