"""Square Attack (Andriushchenko et al. 2020): score-based, gradient-free random search.

Why it is here: a robustness number that an attack without gradients beats is gradient
masking, and quantized networks mask gradients. Square only reads the logits.

Each query changes one random square window of every still-unfooled sample and keeps the
change if the margin loss (true-class logit minus the best other logit; for targeted runs
best other minus target) went down or the sample became adversarial. The window side follows
the published schedule of ``p`` (the share of pixels changed), halving at queries 10, 50,
200, 500, 1000, 2000, 4000, 6000 and 8000 of 10000, rescaled to ``max_queries``.

- Linf: start from vertical stripes of +-eps; a window is set to ``x +- eps`` per channel.
- L2: start from a grid of ``h // 5`` squares with the paper's centred pseudo-Gaussian
  pattern; a step moves mass from a second window into the first, keeping ``||delta|| = eps``.

As in the published code the start counts as the first query, a sample stops querying once
it is adversarial, and a sample never spends more than ``max_queries`` forward passes.
Unlike it, window positions and pattern orientations are drawn per sample (not once per
batch), which keeps the batched code equivalent to attacking each image alone; and a Linf
window that the drawn sign would leave as it is takes the other sign instead of spending the
query (the original Square code redraws; AutoAttack's copy spends it). On the 1-bit Mnist A
this lowers Square-5000's robust accuracy from 0.53 / 0.55 to 0.50 / 0.48 (200 images, seeds 0 / 1).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from annt.attacks.base import (
    AttackResult,
    check_batch,
    counts,
    eval_mode,
    is_adversarial,
    make_generator,
)
from annt.attacks.geometry import bcast, check_norm, flat_norm
from annt.attacks.params import BallParams, Fraction, PosInt, takes
from annt.errors import AnntError
from annt.models.inference import as_model_input, cached_inference_copy, labels_of

_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
             (6000, 128), (8000, 256))  # (upper end of the phase out of 10000, divisor of p)


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """The published share of changed pixels at iteration ``it`` of ``n_iters``."""
    it = int(it / max(n_iters, 1) * 10000)
    for end, div in _SCHEDULE:
        if it <= end:
            return p_init / div
    return p_init / 512


def margin_and_loss(
    logits: torch.Tensor, labels: torch.Tensor, targeted: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Margin loss per sample (lower is better for the attacker); returned twice, as in the paper."""
    own = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    margin = others - own if targeted else own - others
    return margin, margin


def _signs(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=gen, device=device).float() * 2 - 1


def _corners(n: int, high: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Per-sample window corners in ``[0, high)`` (``high`` <= 0 gives 0), as randint in the paper."""
    return torch.randint(0, max(high, 1), (n,), generator=gen, device=device)


def _window_mask(vh: torch.Tensor, vw: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """Boolean [n, 1, h, w] masks of the s x s windows with top-left corners (vh, vw)."""
    rows = torch.arange(h, device=vh.device)[None, :]
    cols = torch.arange(w, device=vh.device)[None, :]
    in_r = (rows >= vh[:, None]) & (rows < vh[:, None] + s)
    in_c = (cols >= vw[:, None]) & (cols < vw[:, None] + s)
    return (in_r[:, :, None] & in_c[:, None, :])[:, None]


def _eta_rectangles(x: int, y: int, device: torch.device) -> torch.Tensor:
    """Nested rectangles with weights 1/k^2, unit L2 norm (the paper's building block)."""
    delta = torch.zeros((x, y), device=device)
    xc, yc = x // 2 + 1, y // 2 + 1
    r, c = xc - 1, yc - 1
    for k in range(max(xc, yc)):
        delta[max(r, 0) : min(r + 2 * k + 1, x), max(c, 0) : min(c + 2 * k + 1, y)] += 1.0 / (k + 1) ** 2
        r, c = r - 1, c - 1
    return delta / delta.pow(2).sum().sqrt()


@functools.lru_cache(maxsize=64)
def _eta(s: int, device: torch.device) -> torch.Tensor:
    """The s x s pseudo-Gaussian pattern: + on the upper half, - on the lower, unit norm (cached)."""
    delta = torch.zeros((s, s), device=device)
    delta[: s // 2] = _eta_rectangles(s // 2, s, device)
    delta[s // 2 :] = -_eta_rectangles(s - s // 2, s, device)
    return delta / delta.pow(2).sum().sqrt()


def _placed_eta(
    s: int, vh: torch.Tensor, vw: torch.Tensor, h: int, w: int, gen: torch.Generator
) -> torch.Tensor:
    """[n, 1, h, w]: the pattern (randomly transposed per sample) placed in each window, 0 elsewhere."""
    n, device = vh.shape[0], vh.device
    eta = _eta(s, device)
    flip = torch.rand((n, 1, 1), generator=gen, device=device) > 0.5
    values = torch.where(flip, eta.t(), eta).reshape(n, s * s)
    steps = torch.arange(s, device=device)
    index = (vh[:, None, None] + steps[None, :, None]) * w + vw[:, None, None] + steps[None, None, :]
    canvas = torch.zeros((n, h * w), device=device)
    return canvas.scatter_(1, index.reshape(n, s * s), values).view(n, 1, h, w)


def _unit(x: torch.Tensor, norm: str) -> torch.Tensor:
    length = x.flatten(1).abs().amax(1) if norm == "inf" else flat_norm(x, 2.0)
    return x / bcast(length + 1e-12, x)


def _init_linf(x: torch.Tensor, eps: float, gen: torch.Generator) -> torch.Tensor:
    n, c, _, w = x.shape
    return (x + eps * _signs((n, c, 1, w), gen, x.device)).clamp(0.0, 1.0)


def _init_l2(x: torch.Tensor, eps: float, gen: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    s = max(h // 5, 1)
    start = (h - s * 5) // 2
    delta = torch.zeros_like(x)
    for i in range(h // s):
        for j in range(w // s):
            vh, vw = start + i * s, start + j * s
            eta = _eta(s, x.device)
            if bool(torch.rand((1,), generator=gen, device=x.device) > 0.5):
                eta = eta.t()
            block = delta[:, :, vh : vh + s, vw : vw + s]
            block += eta[: block.shape[2], : block.shape[3]] * _signs((n, c, 1, 1), gen, x.device)
    return (x + _unit(delta, "2") * eps).clamp(0.0, 1.0)


def _step_linf(
    x: torch.Tensor, best: torch.Tensor, eps: float, p: float, gen: torch.Generator
) -> torch.Tensor:
    n, c, h, w = x.shape
    s = min(max(int(round(math.sqrt(p * h * w))), 1), min(h, w) - 1)
    mask = _window_mask(_corners(n, h - s, gen, x.device), _corners(n, w - s, gen, x.device), s, h, w)
    signs = _signs((n, c, 1, 1), gen, x.device)
    # A channel whose window the drawn sign leaves as it is (pixels clipped at 0 or 1 where
    # ``best`` already sits at that side) would waste the query: it takes the other sign.
    same = ((x + eps * signs).clamp(0.0, 1.0) - best).abs().masked_fill(~mask, 0.0).amax((2, 3), keepdim=True) < 1e-7
    moved = (x + eps * torch.where(same, -signs, signs)).clamp(0.0, 1.0)
    return torch.where(mask, moved, best)


def _step_l2(
    x: torch.Tensor, best: torch.Tensor, eps: float, p: float, gen: torch.Generator
) -> torch.Tensor:
    n, c, h, w = x.shape
    s = max(int(round(math.sqrt(p * h * w))), 3)
    s = min(s + 1 if s % 2 == 0 else s, min(h, w) - 1)
    delta = best - x
    vh, vw = _corners(n, h - s, gen, x.device), _corners(n, w - s, gen, x.device)
    mask1 = _window_mask(vh, vw, s, h, w).float()
    mask2 = _window_mask(_corners(n, h - s, gen, x.device), _corners(n, w - s, gen, x.device), s, h, w).float()
    norm_win1 = (delta * mask1).pow(2).sum((2, 3), keepdim=True).sqrt()  # [n, c, 1, 1]
    norm_image = bcast(flat_norm(delta), x)
    norm_windows = bcast(flat_norm(delta * torch.maximum(mask1, mask2)), x)
    new = _placed_eta(s, vh, vw, h, w, gen) * _signs((n, c, 1, 1), gen, x.device)
    new = new + delta * mask1 / (1e-12 + norm_win1)
    budget = ((eps**2 - norm_image**2).clamp_min(0.0) / c + norm_windows**2).sqrt()
    new = new / (1e-12 + new.pow(2).sum((2, 3), keepdim=True).sqrt()) * budget
    delta = delta * (1 - mask2)
    delta = delta * (1 - mask1) + new * mask1
    return (x + _unit(delta, "2") * eps).clamp(0.0, 1.0)


class SquareParams(BallParams):
    max_queries: PosInt = 5000
    p_init: Fraction = 0.8


@takes(SquareParams)
def attack(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    targeted: bool,
    eps: float,
    norm: str,
    max_queries: int,
    p_init: float,
    seed: int | None = None,
) -> AttackResult:
    """Square Attack within ``eps`` (Linf or L2) using at most ``max_queries`` forward passes.

    ``adversarial`` is the best point found (lowest margin loss, or the first adversarial one).
    """
    labels = check_batch(inputs, labels, "square")
    norm = check_norm("square", norm)
    if inputs.dim() != 4:
        raise AnntError(f"square: inputs must be images [N, C, H, W], got {tuple(inputs.shape)}")
    if min(inputs.shape[2:]) < (4 if norm == "2" else 2):
        raise AnntError(f"square: images of {tuple(inputs.shape[2:])} pixels are too small")
    if int(max_queries) < 1:
        raise AnntError(f"square: max_queries must be at least 1, got {max_queries}")
    n, device = inputs.shape[0], inputs.device
    gen = make_generator(seed, device)
    x = inputs.detach()
    step = _step_linf if norm == "inf" else _step_l2
    queries = counts(n, 0, device)
    with eval_mode(model), torch.no_grad():
        # Queries only read logits: the channels_last copy (the same logits to float rounding,
        # 2x the images/s on CPU); every goal test uses the model's exact labels.
        fast = cached_inference_copy(model)

        def query(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = fast(as_model_input(z, fast))
            return logits, labels_of(logits, model, z)

        best = _init_linf(x, eps, gen) if norm == "inf" else _init_l2(x, eps, gen)
        logits, pred = query(best)
        queries += 1
        _, loss = margin_and_loss(logits, labels, targeted)
        done = is_adversarial(pred, labels, targeted)
        n_iters = max_queries - 1
        for i in range(n_iters):
            idx = (~done).nonzero().flatten()
            if idx.numel() == 0:
                break
            cand = step(x[idx], best[idx], eps, p_selection(p_init, i, n_iters), gen)
            logits, pred = query(cand)
            queries[idx] += 1
            _, new_loss = margin_and_loss(logits, labels[idx], targeted)
            hit = is_adversarial(pred, labels[idx], targeted)
            keep = (new_loss < loss[idx]) | hit
            best[idx] = torch.where(bcast(keep, cand), cand, best[idx])
            loss[idx] = torch.where(keep, new_loss, loss[idx])
            done[idx] = hit
    iterations = (queries - 1).clamp_min(0)
    return AttackResult(best, done, iterations, queries, counts(n, 0, device))
