"""Attack-time gradient surrogates for the activation quantizer (BPDA, Athalye et al. 2018).

Why: the straight-through estimator is one arbitrary choice of backward pass. A quantized
network can look robust only because that choice hides the direction that fools it, so an
attacker should be able to try others. A surrogate changes the *backward* pass of
``quantize_activation`` only: the forward value is the exact quantized one in every mode, so
predictions are bit-identical and nothing in the model is modified.

Modes (gradient of the activation ``q(x) = round(clip(x, 0, 1) * n) / n`` w.r.t. ``x``):

- ``ste``: 1 inside [0, 1], 0 outside (training's straight-through estimator; the default).
- ``ste_noclip``: 1 everywhere, i.e. the clip's gradient is let through as well.
- ``soft``: the derivative of a smooth staircase with temperature ``T`` (in units of one
  quantization step): ``floor(y) + 1/2 + tanh((frac(y) - 1/2) / T) / (2 tanh(1 / (2T)))``,
  ``y = clip(x, 0, 1) * n``; 0 outside [0, 1]. Large ``T`` tends to ``ste``; small ``T``
  concentrates the gradient at the rounding thresholds.
- ``sigmoid``: the derivative of the unclipped sigmoid staircase
  ``(1/n) sum_i sigmoid(2 (x - t_i) / tau)`` over the rounding thresholds ``t_i = (i + 1/2) / n``,
  with ``tau = T * std(x)``, the standard deviation of the quantizer's input over each sample's
  features (so ``T`` is scale-free, the same for every layer). Unlike ``ste`` and ``soft`` it
  does not vanish outside [0, 1], where most inputs of a 1- or 2-bit quantizer lie, and unlike
  ``ste_noclip`` it weights a unit by how close its input is to a threshold it could cross.
  As ``tau -> 0`` the staircase is the hard quantizer itself (outside [0, 1] too). With more than
  ``EXACT_THRESHOLDS`` thresholds (5+ bits) the sum is replaced by its integral over the
  thresholds, whose derivative is ``sigmoid(2 x / tau) - sigmoid(2 (x - 1) / tau)`` (the midpoint
  rule, exact up to ``O((1 / (n tau))^2)``).

At the clip edges ``x = 0`` and ``x = 1`` exactly, ``ste`` and ``soft`` count ``x`` as inside
(the clip passes the gradient, ``x >= 0 and x <= 1``), as ``_ClipQuantize`` does for training.
ANNT sets this itself (``_clip_passing_edges``), not ``torch.clamp``'s backward, whose value at
the edges has changed between torch versions (torch 2.13 passes it; the issue reports 0 at x = 1
with torch 2.14.1).

Usage: ``with gradient_surrogate("soft", 0.25): ...attack...``; the registry applies it for
the ``gradient`` / ``gradient_temperature`` parameters of every gradient-based attack.

Measured (benchmarks/adaptive_attacks.py): on the zoo's 1- and 2-bit Mnist A, APGD-CE with
``sigmoid`` (T = 0.25) is stronger than the Square Attack, where ``ste`` and ``soft`` are far weaker.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from annt.errors import AnntError

GRADIENTS = ("ste", "soft", "ste_noclip", "sigmoid")
DEFAULT_GRADIENT = "ste"
DEFAULT_TEMPERATURE = 0.25
EXACT_THRESHOLDS = 15  # up to 4 bits the sigmoid staircase's thresholds are summed one by one

_ACTIVE: ContextVar[tuple[str, float]] = ContextVar(
    "annt_gradient_surrogate", default=(DEFAULT_GRADIENT, DEFAULT_TEMPERATURE)
)


def active_surrogate() -> tuple[str, float]:
    """The (mode, temperature) in force in this thread/context."""
    return _ACTIVE.get()


@contextmanager
def gradient_surrogate(
    mode: str = DEFAULT_GRADIENT, temperature: float = DEFAULT_TEMPERATURE
) -> Iterator[None]:
    """Use surrogate ``mode`` for activation-quantizer gradients inside the block (restored after)."""
    if mode not in GRADIENTS:
        raise AnntError(f"unknown gradient surrogate {mode!r}: choose one of {', '.join(GRADIENTS)}")
    if not float(temperature) > 0:
        raise AnntError(f"gradient temperature must be positive, got {temperature!r}")
    token = _ACTIVE.set((mode, float(temperature)))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _clip_passing_edges(x: torch.Tensor) -> torch.Tensor:
    """``clip(x, 0, 1)`` with gradient 1 on the closed interval [0, 1] (edges included), 0 outside.

    The forward value is exactly ``torch.clamp``'s (inside [0, 1] the clamp is ``x`` itself);
    only the backward is defined here, by ``torch.where``'s selection, instead of by the version
    of ``torch.clamp``'s derivative.
    """
    inside = (x >= 0) & (x <= 1)
    return torch.where(inside, x, x.detach().clamp(0.0, 1.0))


def surrogate_activation(x: torch.Tensor, q: torch.Tensor, k: int, mode: str, temperature: float) -> torch.Tensor:
    """``q`` (the exact quantized value of ``x``) carrying the gradient of surrogate ``mode``."""
    if mode == "ste_noclip":
        return q.detach() + (x - x.detach())
    if mode == "sigmoid":
        return _SigmoidWindow.apply(x, q.detach(), k, spread_temperature(x, temperature))
    n = float(2**k - 1)
    y = _clip_passing_edges(x) * n
    base = y.detach().floor()
    frac = y - base
    smooth = torch.tanh((frac - 0.5) / temperature) / (2 * math.tanh(0.5 / temperature) * n)
    return q.detach() + (smooth - smooth.detach())


def spread_temperature(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """``temperature`` times the standard deviation of each sample's features, shaped to broadcast
    against ``x`` (a batch [N, ...]); a sample without spread, or with non-finite values, uses 1."""
    v = x.detach()
    flat = v.flatten(1) if v.dim() >= 2 else v.reshape(1, -1)
    std = flat.std(dim=1, correction=0)
    std = torch.where(torch.isfinite(std) & (std > 0), std, torch.ones_like(std))
    return temperature * std.reshape((-1,) + (1,) * (v.dim() - 1)) if v.dim() >= 2 else temperature * std


def sigmoid_staircase(x: torch.Tensor, k: int, tau: torch.Tensor | float) -> torch.Tensor:
    """The sigmoid staircase ``(1/n) sum_i sigmoid(2 (x - t_i) / tau)``, ``t_i = (i + 1/2) / n``,
    ``n = 2^k - 1``, every threshold summed: the function whose derivative ``sigmoid`` uses. As
    ``tau -> 0`` it is ``round(clip(x, 0, 1) * n) / n``."""
    n = 2**k - 1
    total = torch.zeros_like(x)
    for i in range(n):
        total = total + torch.sigmoid(2 * (x - (i + 0.5) / n) / tau)
    return total / n


def sigmoid_window(x: torch.Tensor, k: int, tau: torch.Tensor | float) -> torch.Tensor:
    """Derivative of the sigmoid staircase ``(1/n) sum_i sigmoid(2 (x - t_i) / tau)``, ``t_i = (i + 1/2) / n``.

    Summed threshold by threshold up to ``EXACT_THRESHOLDS`` thresholds (one elementwise pass
    each, nothing kept); above, the derivative of the staircase's integral over ``t`` in [0, 1],
    ``sigmoid(2 x / tau) - sigmoid(2 (x - 1) / tau)``.
    """
    n = 2**k - 1
    if n > EXACT_THRESHOLDS:
        return torch.sigmoid(2 * x / tau) - torch.sigmoid(2 * (x - 1) / tau)
    total = torch.zeros_like(x)
    for i in range(n):
        s = torch.sigmoid(2 * (x - (i + 0.5) / n) / tau)
        total += s * (1 - s)
    return total * (2 / (n * tau))


class _SigmoidWindow(torch.autograd.Function):
    """Forward: the exact quantized value ``q``; backward: ``dy * sigmoid_window(x)``. Only ``x``
    and the temperature are kept, the window is computed in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, q: torch.Tensor, k: int, tau: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.k = k
        ctx.save_for_backward(x, tau)
        return q.clone()

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # type: ignore[override]
        x, tau = ctx.saved_tensors
        return dy * sigmoid_window(x, ctx.k, tau), None, None, None
