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

At the clip edges ``x = 0`` and ``x = 1`` exactly, ``ste`` and ``soft`` count ``x`` as inside
(the clip passes the gradient, ``x >= 0 and x <= 1``), as ``_ClipQuantize`` does for training.
ANNT sets this itself (``_clip_passing_edges``), not ``torch.clamp``'s backward, whose value at
the edges has changed between torch versions (torch 2.13 passes it; the issue reports 0 at x = 1
with torch 2.14.1).

Usage: ``with gradient_surrogate("soft", 0.25): ...attack...``; the registry applies it for
the ``gradient`` / ``gradient_temperature`` parameters of every gradient-based attack.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from annt.errors import AnntError

GRADIENTS = ("ste", "soft", "ste_noclip")
DEFAULT_GRADIENT = "ste"
DEFAULT_TEMPERATURE = 0.25

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
    n = float(2**k - 1)
    y = _clip_passing_edges(x) * n
    base = y.detach().floor()
    frac = y - base
    smooth = torch.tanh((frac - 0.5) / temperature) / (2 * math.tanh(0.5 / temperature) * n)
    return q.detach() + (smooth - smooth.detach())
