"""Universal Adversarial Perturbation (Moosavi-Dezfooli et al. 2017) with FGSM/PGD inside.

One noise ``v`` for the whole set: passes over the shuffled samples; each sample that ``v``
does not fool yet is attacked from ``clip(x + v)`` by the inner attacker, and if that fools
it, the attacker's step is added to ``v``, which is then projected onto the ``xi`` ball
(Linf or L2). Passes stop after ``max_iter`` or once the fooling rate reaches ``1 - delta``.

Batched deviation from ART's per-sample loop: samples are taken ``batch_size`` at a time and
the steps of all samples of a chunk that the inner attacker fools are added to ``v`` at once
(ART adds them one after another, each computed at the previous noise). ``batch_size=1`` is
the sequential algorithm. ART also feeds the unclipped ``x + v`` to the attacker and keeps
``adv - x`` as the noise, so its noise is reset wherever one image clips; here the attacker
starts from the clipped image and only its step enters ``v``, so ``v`` stays image-independent.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from annt.attacks.base import (
    AttackResult,
    check_batch,
    counts,
    eval_mode,
    is_adversarial,
    make_generator,
    predict,
)
from annt.attacks.geometry import NORMS, gradient_step, project
from annt.attacks.params import AttackParams, PosFloat, PosInt, norm_spelling, takes
from annt.errors import AnntError
from annt.models.inference import cached_inference_copy

ATTACKERS = ("fgsm", "pgd")


def apply_universal_noise(inputs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Add a universal noise (shape [1, ...] or [...]) to new images and clip to [0, 1]."""
    noise = noise.to(device=inputs.device, dtype=inputs.dtype)
    if noise.dim() == inputs.dim() - 1:
        noise = noise.unsqueeze(0)
    if noise.shape[1:] != inputs.shape[1:]:
        raise AnntError(
            f"universal noise of shape {tuple(noise.shape[1:])} does not fit images of shape "
            f"{tuple(inputs.shape[1:])}"
        )
    return (inputs + noise).clamp(0.0, 1.0)


def _inner_attack(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    attacker: str,
    eps: float,
    steps: int,
    step_size: float,
    norm: str,
) -> torch.Tensor:
    """FGSM, or PGD (``steps`` steps of ``step_size`` projected onto the ``eps`` ball)."""
    if attacker == "fgsm":
        return gradient_step(model, x, labels, eps, norm, targeted)[0]
    adv = x
    for _ in range(steps):
        adv, _ = gradient_step(model, adv, labels, step_size, norm, targeted)
        adv = (x + project(adv - x, eps, norm)).clamp_(0.0, 1.0)
    return adv


class UapParams(AttackParams):
    attacker: Literal["fgsm", "pgd"] = "fgsm"
    attacker_eps: PosFloat = 0.01
    attacker_steps: PosInt = 10
    attacker_step_size: PosFloat | None = None
    xi: PosFloat = 0.1
    norm: Literal["inf", "2"] = "inf"
    max_iter: PosInt = 20
    delta: Annotated[float, Field(ge=0, le=1)] = 0.2
    batch_size: PosInt = 32

    _norm = field_validator("norm", mode="before")(norm_spelling)


@takes(UapParams)
def attack(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    targeted: bool,
    attacker: str,
    attacker_eps: float,
    attacker_steps: int,
    attacker_step_size: float | None,
    xi: float,
    norm: str,
    max_iter: int,
    delta: float,
    batch_size: int,
    seed: int | None = None,
) -> AttackResult:
    """Universal perturbation over ``inputs``; ``extras`` holds ``noise`` and ``fooling_rate``.

    ART's defaults for ``max_iter`` (20), ``delta`` (0.2) and ``norm``; ``xi`` = 0.1 and
    ``attacker_eps`` = 0.01 are the paper's values (ART's ``eps`` = 10 is no bound on [0, 1]
    images). PGD's step defaults to ``attacker_eps / 4``.
    """
    labels = check_batch(inputs, labels, "uap")
    norm = str(norm)
    if norm not in NORMS or attacker not in ATTACKERS:
        raise AnntError(
            f"uap: norm must be one of {', '.join(NORMS)} and attacker one of "
            f"{', '.join(ATTACKERS)}, got {norm!r} / {attacker!r}"
        )
    step_size = attacker_eps / 4 if attacker_step_size is None else attacker_step_size
    grads_per_attack = 1 if attacker == "fgsm" else attacker_steps
    n, device = inputs.shape[0], inputs.device
    x = inputs.detach()
    noise = torch.zeros_like(x[:1])
    gen = make_generator(seed, device)
    fwd, bwd = counts(n, 0, device), counts(n, 0, device)
    fooled = torch.zeros(n, dtype=torch.bool, device=device)
    passes = 0
    with eval_mode(model):
        model = cached_inference_copy(model, channels_last=False)  # bit-identical, faster
        while passes < max_iter and fooled.float().mean().item() < 1.0 - delta:
            for idx in torch.randperm(n, generator=gen, device=device).split(batch_size):
                xv = apply_universal_noise(x[idx], noise)
                fwd[idx] += 1
                todo = ~is_adversarial(predict(model, xv), labels[idx], targeted)
                if not bool(todo.any()):
                    continue
                idx, xv = idx[todo], xv[todo]
                adv = _inner_attack(
                    model,
                    xv,
                    labels[idx],
                    targeted,
                    attacker,
                    attacker_eps,
                    attacker_steps,
                    step_size,
                    norm,
                )
                fwd[idx] += grads_per_attack + 1
                bwd[idx] += grads_per_attack
                hit = is_adversarial(predict(model, adv), labels[idx], targeted)
                if bool(hit.any()):
                    step = (adv - xv)[hit].sum(0, keepdim=True)
                    noise = project(noise + step, xi, norm)
            passes += 1
            fwd += 1
            fooled = is_adversarial(
                predict(model, apply_universal_noise(x, noise)), labels, targeted
            )
    adv = apply_universal_noise(x, noise)
    rate = fooled.float().mean()
    return AttackResult(
        adversarial=adv,
        success=fooled,
        iterations=counts(n, passes, device),
        forward_passes=fwd,
        backward_passes=bwd,
        extras={"noise": noise, "fooling_rate": rate},
    )
