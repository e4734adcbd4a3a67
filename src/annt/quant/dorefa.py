"""DoReFa-Net quantizers (Zhou et al. 2016) as in tensorpack's ``dorefa.py``.

All quantizers pass gradients straight through (STE) so that gradient-based attacks and
training work on quantized networks exactly as they did in the original tool.
"""

from __future__ import annotations

import torch

from annt.quant.bits import FULL
from annt.quant.surrogate import active_surrogate, surrogate_activation


def _straight_through(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Forward value exactly ``q`` (``x - x.detach()`` is exactly 0); gradient of identity."""
    return q.detach() + (x - x.detach())


def quantize_k(x: torch.Tensor, k: int) -> torch.Tensor:
    """``round(x * (2^k - 1)) / (2^k - 1)`` with a straight-through (identity) gradient."""
    if k >= FULL:
        return x
    n = float(2**k - 1)
    q = torch.round(x * n) / n
    return _straight_through(x, q)


def quantize_weight(w: torch.Tensor, k: int) -> torch.Tensor:
    """DoReFa weight quantizer.

    k = 1: ``sign(w) * mean(|w|)`` with sign(0) = +1, E without gradient, STE for sign.
    k >= 2: ``2 * quantize_k(tanh(w) / max|tanh(w)| * 0.5 + 0.5) - 1``.
    """
    if k >= FULL:
        return w
    if k == 1:
        return _SignScale.apply(w)
    t = torch.tanh(w)
    t = t / t.abs().max() * 0.5 + 0.5
    return 2 * quantize_k(t, k) - 1


class _SignScale(torch.autograd.Function):
    """1-bit DoReFa weights ``where(w >= 0, E, -E)``, ``E = mean|w|``, straight-through gradient.

    Same values and gradient as ``_straight_through(w, where(w >= 0, 1, -1) * E)`` with ``E``
    detached (``E * 1`` and ``E * -1`` are exact, ``w - w.detach()`` is exactly 0), in two
    kernels instead of eight and with nothing saved for backward.
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        scale = w.abs().mean()
        return torch.where(w >= 0, scale, -scale)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # type: ignore[override]
        return dy


class _ClipQuantize(torch.autograd.Function):
    """``quantize_k(clip(x, 0, 1))`` as one autograd node.

    Same values and gradient as composing clamp and the straight-through round (the gradient
    is ``dy`` where 0 <= x <= 1, else 0), but it keeps one boolean mask instead of the
    intermediate tensors of six elementwise ops: this is what made quantized training slow.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, k: int) -> torch.Tensor:  # type: ignore[override]
        q = torch.clamp(x, 0.0, 1.0)
        if x.requires_grad:
            # (x >= 0) & (x <= 1) in one kernel: clamping changes exactly the x outside [0, 1]
            # (a NaN is unequal to itself, so it is outside as before)
            ctx.save_for_backward(q == x)
        if k == 1:  # n = 1: multiplying and dividing by 1 are exact no-ops
            return q.round_()
        n = float(2**k - 1)
        return q.mul_(n).round_().div_(n)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return dy * inside, None


def quantize_activation(x: torch.Tensor, k: int) -> torch.Tensor:
    """The DoReFa nonlinearity: ReLU at 32 bits, else ``quantize_k(clip(x, 0, 1))``.

    Inside ``annt.quant.surrogate.gradient_surrogate`` (attack time) the same value carries
    the chosen surrogate gradient instead of the straight-through one.
    """
    if k >= FULL:
        return torch.relu(x)
    q = _ClipQuantize.apply(x, k)
    if not x.requires_grad or torch.compiler.is_compiling():
        # a compiled model (training's --compile) always uses the straight-through gradient:
        # torch.compile cannot trace the context variable that holds the surrogate
        return q
    mode, temperature = active_surrogate()
    if mode == "ste":
        return q
    return surrogate_activation(x, q, k, mode, temperature)


class _QuantizeGradient(torch.autograd.Function):
    """Identity forward; backward quantizes dy per sample with uniform noise (tensorpack fg)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, k: int) -> torch.Tensor:  # type: ignore[override]
        ctx.k = k
        return x.view_as(x)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # type: ignore[override]
        k = ctx.k
        dims = tuple(range(1, dy.dim()))
        maxx = dy.abs().amax(dim=dims, keepdim=True) if dims else dy.abs().max()
        maxx = torch.where(maxx > 0, maxx, torch.ones_like(maxx))
        n = float(2**k - 1)
        g = dy / maxx * 0.5 + 0.5 + (torch.rand_like(dy) - 0.5) / n
        g = torch.clamp(g, 0.0, 1.0)
        g = torch.round(g * n) / n - 0.5
        return g * maxx * 2, None


def quantize_gradient(x: torch.Tensor, k: int) -> torch.Tensor:
    """Identity in the forward pass; quantizes the incoming gradient to k bits when k < 32."""
    if k >= FULL or not x.requires_grad:
        return x
    return _QuantizeGradient.apply(x, k)
