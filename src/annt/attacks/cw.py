"""Carlini & Wagner's L2 attack (2017), batched, with a per-sample binary search over c.

The image is optimised in tanh space, ``x' = (tanh(w) + 1) / 2``, minimising
``||x' - x||^2 + c * max(Z_y - max_{j != y} Z_j + kappa, 0)`` (untargeted; targeted swaps the
roles) with Adam, as in the paper. Each sample keeps its own c: halved towards the lower
bound after a success, multiplied by 10 while no success was seen (bisected once an upper
bound exists). The smallest successful perturbation of each sample over all steps is kept.
Optional abort-early (the paper's, off by default like ART, which has none) is decided per
sample: a sample whose loss stopped improving stops computing. On quantized networks the loss
is piecewise constant while the straight-through gradient still points somewhere useful, so
aborting early there gives up on samples that more iterations would break.

ART's CarliniL2Method differs: gradient steps with a line search (several forward passes per
step) and c doubled instead of multiplied by 10; its results are comparable, its cost higher.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from annt.attacks.base import (
    AttackResult,
    check_batch,
    confirm_on_model,
    counts,
    eval_mode,
    is_adversarial,
)
from annt.attacks.params import AttackParams, NonNegFloat, PosFloat, PosInt, takes
from annt.models.inference import cached_inference_copy

_TANH_SCALE = 0.999999  # keeps atanh finite at 0 and 1, as in the reference code
_NO_BOUND = 1e10
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8  # TF's Adam defaults used by the authors


def to_tanh_space(x: torch.Tensor) -> torch.Tensor:
    return torch.atanh((2.0 * x - 1.0) * _TANH_SCALE)


def from_tanh_space(w: torch.Tensor) -> torch.Tensor:
    return (torch.tanh(w) + 1.0) / 2.0


def margin(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """``Z_y - max_{j != y} Z_j`` (untargeted) or ``max_{j != t} Z_j - Z_t`` (targeted).

    The competing class is found by masking the label with -inf, which stays right when all
    logits are negative (multiplying a one-hot mask by zero would pick the label's 0 instead).
    """
    own = logits.gather(1, labels[:, None])[:, 0]
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return other - own if targeted else own - other


@dataclass
class _Adam:
    """Per-sample Adam: frozen samples keep their moments and step counts untouched."""

    m: torch.Tensor
    v: torch.Tensor
    t: torch.Tensor

    @classmethod
    def like(cls, w: torch.Tensor) -> _Adam:
        return cls(
            torch.zeros_like(w), torch.zeros_like(w), torch.zeros(w.shape[0], device=w.device)
        )

    def step(
        self, w: torch.Tensor, idx: torch.Tensor | slice, grad: torch.Tensor, lr: float
    ) -> None:
        """One Adam step of the rows ``idx`` (``slice(None)``: all rows, updated in place)."""
        self.t[idx] += 1
        m = self.m[idx].mul_(_BETA1).add_(grad, alpha=1 - _BETA1)
        v = self.v[idx].mul_(_BETA2).addcmul_(grad, grad, value=1 - _BETA2)
        shape = (-1,) + (1,) * (w.dim() - 1)
        t = self.t[idx].reshape(shape)
        m_hat = m / (1 - _BETA1**t)
        v_hat = v / (1 - _BETA2**t)
        if isinstance(idx, slice):  # views: moments already updated, step w in place
            w.sub_(lr * m_hat / (v_hat.sqrt() + _ADAM_EPS))
            return
        self.m[idx], self.v[idx] = m, v
        w[idx] = w[idx] - lr * m_hat / (v_hat.sqrt() + _ADAM_EPS)

    def step_all(self, w: torch.Tensor, grad: torch.Tensor, lr: float, t: int) -> None:
        """One Adam step of every row, all at step ``t``: scalar bias corrections, in place.

        The same arithmetic as ``torch.optim.Adam`` (and adv-lib's CW): no per-row step
        tensor, no index copies, no host sync.
        """
        self.t += 1
        self.m.mul_(_BETA1).add_(grad, alpha=1 - _BETA1)
        self.v.mul_(_BETA2).addcmul_(grad, grad, value=1 - _BETA2)
        denom = self.v.sqrt().div_(math.sqrt(1 - _BETA2**t)).add_(_ADAM_EPS)
        w.addcdiv_(self.m, denom, value=-lr / (1 - _BETA1**t))


def _objective(
    model: nn.Module,
    w: torch.Tensor,
    x: torch.Tensor,
    labels: torch.Tensor,
    c: torch.Tensor,
    kappa: float,
    targeted: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss, gradient w.r.t. w, L2^2, attack success and the image for a subset of samples."""
    w = w.detach().requires_grad_(True)
    with torch.enable_grad():
        adv = from_tanh_space(w)
        logits = model(adv)
        dist = (adv - x).flatten(1).pow(2).sum(1)
        gap = margin(logits, labels, targeted)
        loss = dist + c * (gap + kappa).clamp(min=0)
        (grad,) = torch.autograd.grad(loss.sum(), w)
    done = -gap.detach() > kappa if kappa > 0 else _reached(logits.detach(), labels, targeted)
    return loss.detach(), grad, dist.detach(), done, adv.detach()


def _reached(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    return is_adversarial(logits.argmax(1), labels, targeted)


def _descend_all(
    model: nn.Module,
    w: torch.Tensor,
    adam: _Adam,
    x: torch.Tensor,
    labels: torch.Tensor,
    c: torch.Tensor,
    kappa: float,
    targeted: bool,
    lr: float,
    max_iter: int,
    best_dist: torch.Tensor,
    best_adv: torch.Tensor,
) -> torch.Tensor:
    """``max_iter`` Adam steps of all samples (no abort-early); updates the bests in place.

    Returns which samples reached the goal at some step (for the schedule of c).
    """
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    shape = (-1,) + (1,) * (x.dim() - 1)
    for step in range(1, max_iter + 1):
        _, grad, dist, done, adv = _objective(model, w, x, labels, c, kappa, targeted)
        better = done & (dist < best_dist)
        best_dist.copy_(torch.where(better, dist, best_dist))
        best_adv.copy_(torch.where(better.view(shape), adv, best_adv))
        found |= done
        adam.step_all(w, grad, lr, step)
    return found


def _update_const(
    c: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, found: torch.Tensor
) -> None:
    """CW's schedule: bisect when bracketed, else multiply by 10 (in place)."""
    upper.copy_(torch.where(found, torch.minimum(upper, c), upper))
    lower.copy_(torch.where(found, lower, torch.maximum(lower, c)))
    bracketed = upper < _NO_BOUND
    c.copy_(torch.where(bracketed, (lower + upper) / 2, c * 10))


class CwL2Params(AttackParams):
    confidence: NonNegFloat = 0.0
    learning_rate: PosFloat = 0.01
    binary_search_steps: PosInt = 10
    max_iter: PosInt = 10
    initial_const: PosFloat = 0.01
    abort_early: bool = False


@takes(CwL2Params)
def attack(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    targeted: bool,
    confidence: float,
    learning_rate: float,
    binary_search_steps: int,
    max_iter: int,
    initial_const: float,
    abort_early: bool,
    seed: int | None = None,
) -> AttackResult:
    """CW-L2 with ART's defaults (kappa 0, lr 0.01, 10 x 10 iterations, c0 = 0.01).

    Samples never made adversarial are returned unchanged. ``seed`` is accepted for a uniform
    signature; the attack is deterministic.
    """
    del seed
    labels = check_batch(inputs, labels, "cw_l2")
    x = inputs.detach()
    n, device = x.shape[0], x.device
    w0 = to_tanh_space(x)
    c = torch.full((n,), float(initial_const), device=device)
    lower, upper = torch.zeros_like(c), torch.full_like(c, _NO_BOUND)
    best_dist = torch.full_like(c, float("inf"))
    best_adv = x.clone()
    iters, fwd, bwd = counts(n, 0, device), counts(n, 0, device), counts(n, 0, device)
    check_every = max(1, max_iter // 10)
    with eval_mode(model):
        original, model = model, cached_inference_copy(model, channels_last=False)  # bit-identical, faster
        for _ in range(binary_search_steps):
            w, adam = w0.clone(), _Adam.like(w0)
            if not abort_early:  # every sample runs every step: no gathers, no host syncs
                found = _descend_all(
                    model,
                    w,
                    adam,
                    x,
                    labels,
                    c,
                    confidence,
                    targeted,
                    learning_rate,
                    max_iter,
                    best_dist,
                    best_adv,
                )
                iters += max_iter
                fwd += max_iter
                bwd += max_iter
                _update_const(c, lower, upper, found)
                continue
            found = torch.zeros(n, dtype=torch.bool, device=device)
            active = torch.ones_like(found)
            prev = torch.full_like(c, float("inf"))
            for step in range(max_iter):
                idx = active.nonzero()[:, 0]
                if idx.numel() == 0:
                    break
                # all rows active: slices are views, no gather/scatter copies
                sel = slice(None) if idx.numel() == n else idx
                loss, grad, dist, done, adv = _objective(
                    model, w[sel], x[sel], labels[sel], c[sel], confidence, targeted
                )
                iters[idx] += 1
                fwd[idx] += 1
                bwd[idx] += 1
                better = done & (dist < best_dist[idx])
                best_dist[idx[better]] = dist[better]
                best_adv[idx[better]] = adv[better]
                found[idx] |= done
                adam.step(w, sel, grad, learning_rate)
                if step % check_every == 0:
                    stalled = loss > prev[idx] * 0.9999
                    active[idx[stalled]] = False
                    prev[idx] = loss
            _update_const(c, lower, upper, found)
        # kappa-0 points lie on the boundary: judge them on the model, in one batch
        best_adv, success, passes = confirm_on_model(
            original, x, best_adv, torch.isfinite(best_dist), labels, targeted
        )
    return AttackResult(best_adv, success, iters, fwd + passes, bwd)
