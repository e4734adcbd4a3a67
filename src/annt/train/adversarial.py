"""Adversarial training: the examples a training step learns from, and robust validation.

Methods (``Recipe.adv_method``):

- ``pgd``: train on PGD examples (Madry et al. 2018): uniform random start in the ball,
  ``adv_steps`` steps of ``adv_step_size`` (default ``2.5 * eps / steps``) ascending the
  cross-entropy, each projected onto the ball and clipped to [0, 1]; the last iterate is used.
- ``fgsm_rs``: FGSM with a random start (Wong et al. 2020): the same with one step of
  ``1.25 * eps``.
- ``trades``: TRADES (Zhang et al. 2019): the examples maximise ``KL(f(x) || f(x'))`` from
  ``x + 0.001 * N(0, 1)``; the loss is ``CE(f(x), y) + beta * KL(f(x) || f(x'))``.

The steps are the attacks' own (``annt.attacks.geometry``: random start, input gradient,
steepest-ascent direction, projection and clip). Examples are crafted with the model in eval
mode (BatchNorm running statistics, no dropout), as the TRADES reference code does; the
optimiser step that follows runs in train mode. On quantized models the activation quantizers'
backward pass while crafting is ``adv_gradient`` (``annt.quant.surrogate``); the weight update
itself always uses the straight-through estimator. Random starts come from a generator seeded
by (seed, epoch), so a resumed run crafts the same examples as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from annt.attacks import pgd
from annt.attacks.base import eval_mode, make_generator, predict
from annt.attacks.geometry import in_ball, input_gradient, random_in_ball, step_direction
from annt.attacks.losses import ce_loss
from annt.quant.surrogate import gradient_surrogate
from annt.train.recipes import Recipe

FGSM_RS_STEP = 1.25  # FGSM-RS step size in units of eps (Wong et al. 2020)
TRADES_START = 0.001  # std of TRADES' Gaussian start
DEFAULT_STEPS = 10  # adv_steps for pgd / trades when not given
VALIDATION_STEPS = 10  # PGD steps of robust validation (step 2.5 eps / steps, random start)
VALIDATION_CHUNK = 500


def crafting_steps(recipe: Recipe) -> int:
    if recipe.adv_method == "fgsm_rs":
        return 1
    return recipe.adv_steps or DEFAULT_STEPS


def crafting_step_size(recipe: Recipe) -> float:
    """``adv_step_size``, or the method's default for the full ``adv_eps``."""
    if recipe.adv_step_size is not None:
        return recipe.adv_step_size
    eps = float(recipe.adv_eps or 0.0)
    if recipe.adv_method == "fgsm_rs":
        return FGSM_RS_STEP * eps
    return pgd.STEP_FRACTION * eps / crafting_steps(recipe)


def eps_at(recipe: Recipe, epoch: float) -> float:
    """The training budget at a (fractional) epoch: a linear ramp from 0 over ``adv_warmup_epochs``."""
    eps = float(recipe.adv_eps or 0.0)
    if recipe.adv_warmup_epochs > 0 and epoch < recipe.adv_warmup_epochs:
        return eps * epoch / recipe.adv_warmup_epochs
    return eps


def crafting_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The generator of an epoch's random starts: a function of (seed, epoch) only."""
    return make_generator(1_000_003 * (seed + 1) + epoch, device)


def _ascend(
    model: nn.Module, x: torch.Tensor, start: torch.Tensor, objective: Callable[[torch.Tensor], torch.Tensor],
    eps: float, norm: str, steps: int, step_size: float,
) -> torch.Tensor:
    """``steps`` projected steepest-ascent steps of ``objective`` from ``start`` in the ball around ``x``."""
    adv = start
    for _ in range(steps):
        grad, _ = input_gradient(model, adv, objective)
        adv = in_ball(x, adv + step_size * step_direction(grad, norm), eps, norm).detach()
    return adv


def adversarial_examples(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, eps: float, gen: torch.Generator
) -> torch.Tensor:
    """The examples of one training batch at budget ``eps`` (the step size scales with it)."""
    full = float(recipe.adv_eps or 0.0)
    step = crafting_step_size(recipe) * (eps / full if full > 0 else 0.0)
    steps, norm = crafting_steps(recipe), recipe.adv_norm
    x = x.detach()
    with gradient_surrogate(recipe.adv_gradient), eval_mode(model):
        if recipe.adv_method == "trades":
            with torch.no_grad():
                clean = F.softmax(model(x), dim=1)
            noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            start = (x + TRADES_START * noise).clamp(0.0, 1.0)

            def objective(z: torch.Tensor) -> torch.Tensor:
                return F.kl_div(F.log_softmax(z, dim=1), clean, reduction="none").sum(1)

            return _ascend(model, x, start, objective, eps, norm, steps, step)
        start = random_in_ball(x, eps, norm, gen)
        return _ascend(model, x, start, lambda z: ce_loss(z, y), eps, norm, steps, step)


def trades_term(logits: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    """TRADES' robustness term: ``KL(f(x) || f(x'))`` averaged over the batch."""
    return F.kl_div(F.log_softmax(adv_logits, dim=1), F.softmax(logits, dim=1), reduction="batchmean")


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int) -> float:
    """Share of ``x`` classified correctly and not fooled by ANNT's PGD at ``adv_eps``
    (``VALIDATION_STEPS`` steps, random start, ``adv_gradient``; fixed seed per chunk)."""
    robust = 0
    with gradient_surrogate(recipe.adv_gradient), eval_mode(model):
        for i, start in enumerate(range(0, len(x), VALIDATION_CHUNK)):
            xs, ys = x[start : start + VALIDATION_CHUNK], y[start : start + VALIDATION_CHUNK]
            result = pgd.attack(model, xs, ys, eps=float(recipe.adv_eps or 0.0), norm=recipe.adv_norm,
                                steps=VALIDATION_STEPS, seed=seed + i)
            with torch.no_grad():
                correct = predict(model, xs) == ys
            robust += int((correct & ~result.success).sum())
    return robust / max(1, len(x))
