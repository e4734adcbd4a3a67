"""Geometry shared by the attacks: the norms, per-sample lengths, projections and steps.

One module, so that no attack imports another's helpers and the norm check is written once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from annt.errors import AnntError

NORMS = ("inf", "2")  # Linf and L2, as the attacks' ``norm`` parameter spells them


def norm_order(norm: str) -> float:
    """The ``ord`` that torch, numpy and ART give the norm ``norm``: ``inf`` or 2."""
    return float("inf") if norm == "inf" else 2


def check_norm(attack: str, norm: object, extra: str = "") -> str:
    """``norm`` as a string, or a one-line error naming ``attack`` when it is not in ``NORMS``."""
    norm = str(norm)
    if norm not in NORMS:
        raise AnntError(f"{attack}: norm must be one of {', '.join(NORMS)}, got {norm!r}{extra}")
    return norm


def flat_norm(x: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Per-sample vector norm of a batch."""
    return torch.linalg.vector_norm(x.flatten(1), ord=p, dim=1)


def bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector [N] so that it broadcasts against a batch like ``like``."""
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


def step_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Unit-norm steepest-ascent direction of ``grad`` (sign for Linf, normalised for L2).

    Zero gradients stay zero: a pixel (or sample) with no gradient is left alone, as in ART.
    """
    if norm == "inf":
        return grad.sign()
    length = flat_norm(grad, 2.0)
    return grad / bcast(torch.where(length > 0, length, torch.ones_like(length)), grad)


def project(noise: torch.Tensor, xi: float, norm: str) -> torch.Tensor:
    """Nearest point of the Linf / L2 ball of radius ``xi`` (per sample)."""
    if norm == "inf":
        return noise.clamp(-xi, xi)
    length = flat_norm(noise, 2.0)
    scale = torch.where(length > xi, xi / length.clamp(min=1e-12), torch.ones_like(length))
    return noise * bcast(scale, noise)


def in_ball(x: torch.Tensor, adv: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project ``adv`` onto the ``eps`` ball around ``x`` and clip to [0, 1]; the L2 radius is
    shrunk by a hair so that float rounding never puts a sample outside the budget."""
    radius = eps if norm == "inf" else eps * (1 - 1e-6)
    return (x + project(adv - x, radius, norm)).clamp(0.0, 1.0)


def random_in_ball(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    """A uniform point of the Linf ball, or a point of the L2 ball (uniform direction,
    radius ``eps * U(0, 1)``, as torchattacks' PGDL2), clipped to [0, 1]."""
    if norm == "inf":
        noise = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1
        return (x + eps * noise).clamp(0.0, 1.0)
    direction = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    direction = direction / bcast(flat_norm(direction).clamp(min=1e-12), x)
    radius = torch.rand(x.shape[0], generator=gen, device=x.device, dtype=x.dtype) * eps
    return (x + direction * bcast(radius, x)).clamp(0.0, 1.0)


def input_gradient(
    model: nn.Module, x: torch.Tensor, objective: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of ``objective(logits).sum()`` w.r.t. ``x`` (one forward + one backward)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        (grad,) = torch.autograd.grad(objective(logits).sum(), x)
    return grad, logits.detach()


def gradient_step(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    norm: str,
    targeted: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One clipped FGSM/FGM step from ``x``; also returns the logits at ``x``.

    FGSM's step, shared with UAP's inner attacker. The sum of per-sample losses is used so that
    the step does not depend on the batch size (only its sign or direction matters anyway).
    """
    grad, logits = input_gradient(model, x, lambda z: F.cross_entropy(z, labels, reduction="none"))
    direction = step_direction(grad, norm)
    if targeted:
        direction = -direction
    return (x + eps * direction).clamp_(0.0, 1.0), logits
