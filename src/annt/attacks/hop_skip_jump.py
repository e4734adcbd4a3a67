"""HopSkipJump (Chen, Jordan & Wainwright 2020): decision-based, L2 and Linf, batched.

Why it is here: it needs only the predicted label, so neither masked gradients nor flattened
scores (quantized networks have both) can stop it; it is the decision-only check of a
robustness claim and a minimum-norm yardstick.

Follows the published algorithm with ART's ``HopSkipJump`` parameters and details, for all
samples in lock-step (ART loops over samples): a clean query (an already misclassified
sample is returned as it is); uniform noise images until one is adversarial (``init_size``
draws), then an L2 binary search towards the original (threshold 0.001). Each of
``max_iter`` iterations t = 1, 2, ...: a Monte-Carlo estimate of the boundary's normal from
``min(init_eval * sqrt(t), max_eval)`` label queries at radius ``delta`` (0.1 at t = 1, then
``sqrt(d) * theta * dist`` for L2, ``d * theta * dist`` for Linf), a geometric step search
along it starting at ``dist / sqrt(t)`` and halving until the step stays adversarial, and a
binary search back to the boundary (L2: blend with the original; Linf: projection onto the
Linf ball; threshold ``theta`` = 0.01 / sqrt(d) resp. 0.01 / d). As published, an iteration
ends with the binary search; ART runs it at the start of the next iteration instead, so its
result is the last step's point, farther from the original, and it spends one search less.

``max_queries`` (optional) caps every sample's forward passes, the clean query included: a
sample stops, keeping its last adversarial point, when it cannot afford the next query (a
gradient estimate needs its full count plus one step). The queries go to the model's inference
copy; the searched points are then judged on the model itself (``confirm_on_model``: one pass,
more only where the model disagrees), which ``forward_passes`` counts beyond ``max_queries``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import field_validator
from torch import nn

from annt.attacks.base import (
    AttackResult,
    check_batch,
    confirm_on_model,
    counts,
    eval_mode,
    is_adversarial,
    make_generator,
)
from annt.attacks.geometry import check_norm, flat_norm
from annt.attacks.params import AttackParams, NonNegInt, PosInt, norm_spelling, takes
from annt.errors import AnntError
from annt.models.inference import cached_inference_copy, exact_labels

_NOISE_FLOATS = 8_000_000  # noise tensor size per gradient-estimate chunk (32 MB)
_MAX_HALVINGS = 64


class _Oracle:
    """Label queries on the model, counted per sample and capped by the per-sample budget."""

    def __init__(
        self, model: nn.Module, shape: tuple[int, ...], labels: torch.Tensor, targeted: bool, budget: int
    ) -> None:
        # the model's exact labels, read off its inference copy (2x the images/s on CPU)
        self.model, self.fast = model, cached_inference_copy(model)
        self.shape, self.labels, self.targeted = shape, labels, targeted
        self.budget = budget
        self.queries = counts(labels.shape[0], 0, labels.device)

    def affords(self, idx: torch.Tensor, k: int) -> torch.Tensor:
        return self.queries[idx] + k <= self.budget

    def ask(self, idx: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Adversarial mask of ``points`` [len(idx) * k, d] (k per sample, sample-major)."""
        k = points.shape[0] // max(idx.numel(), 1)
        pred = exact_labels(self.fast, self.model, points.clamp(0.0, 1.0).view((-1,) + self.shape))
        self.queries[idx] += k
        return is_adversarial(pred, self.labels[idx].repeat_interleave(k), self.targeted)


def _distance(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    return flat_norm(a - b, 2.0 if norm == "2" else float("inf"))


def _interpolate(cur: torch.Tensor, orig: torch.Tensor, alpha: torch.Tensor, norm: str) -> torch.Tensor:
    """L2: ``(1 - a) x + a x_adv``; Linf: ``x_adv`` projected onto the Linf ball of radius a."""
    a = alpha[:, None]
    if norm == "2":
        return (1 - a) * orig + a * cur
    return torch.minimum(torch.maximum(cur, orig - a), orig + a)


def _binary_search(
    oracle: _Oracle, idx: torch.Tensor, cur: torch.Tensor, orig: torch.Tensor, norm: str,
    theta: float, threshold: float | None = None,
) -> torch.Tensor:
    """Move the adversarial points ``cur`` towards ``orig`` up to the decision boundary."""
    m = idx.numel()
    lo = torch.zeros(m, device=cur.device, dtype=cur.dtype)
    if norm == "2":
        hi = torch.ones_like(lo)
        thr = torch.full_like(lo, theta if threshold is None else threshold)
    else:
        hi = (cur - orig).abs().amax(1)
        thr = torch.clamp(hi * theta, max=theta) if threshold is None else torch.full_like(lo, threshold)
    while True:
        live = ((hi - lo) > thr) & oracle.affords(idx, 1)
        if not bool(live.any()):
            break
        mid = (hi[live] + lo[live]) / 2
        ok = oracle.ask(idx[live], _interpolate(cur[live], orig[live], mid, norm))
        lo[live] = torch.where(ok, lo[live], mid)
        hi[live] = torch.where(ok, mid, hi[live])
    return _interpolate(cur, orig, hi, norm)


def _estimate_direction(
    oracle: _Oracle, idx: torch.Tensor, cur: torch.Tensor, delta: torch.Tensor, num_eval: int,
    norm: str, gen: torch.Generator,
) -> torch.Tensor:
    """Unit update direction from ``num_eval`` label queries around each boundary point (Eq. 14)."""
    d = cur.shape[1]
    chunk = max(1, _NOISE_FLOATS // (num_eval * d))
    out = []
    for s in range(0, idx.numel(), chunk):
        c_idx, c_cur, c_delta = idx[s : s + chunk], cur[s : s + chunk], delta[s : s + chunk, None, None]
        shape = (c_idx.numel(), num_eval, d)
        if norm == "2":
            noise = torch.randn(shape, generator=gen, device=cur.device, dtype=cur.dtype)
        else:
            noise = torch.rand(shape, generator=gen, device=cur.device, dtype=cur.dtype) * 2 - 1
        noise = noise / torch.linalg.vector_norm(noise, dim=2, keepdim=True)
        evals = (c_cur[:, None] + c_delta * noise).clamp(0.0, 1.0)
        noise = (evals - c_cur[:, None]) / c_delta
        f = oracle.ask(c_idx, evals.reshape(-1, d)).view(shape[:2]).to(cur.dtype) * 2 - 1
        mean = f.mean(1, keepdim=True)
        f = torch.where(mean.abs() == 1, f, f - mean)  # all one side: the mean noise direction
        grad = (f[:, :, None] * noise).mean(1)
        if norm == "2":
            out.append(grad / flat_norm(grad)[:, None])
        else:
            out.append(grad.sign())
    return torch.cat(out)


def _geometric_step(
    oracle: _Oracle, idx: torch.Tensor, cur: torch.Tensor, update: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """Halve each step size until ``cur + eps * update`` is adversarial (or the budget ends)."""
    out = cur.clone()
    pending = torch.ones(idx.numel(), dtype=torch.bool, device=cur.device)
    for _ in range(_MAX_HALVINGS):
        pending &= oracle.affords(idx, 1)
        if not bool(pending.any()):
            break
        eps = torch.where(pending, eps / 2, eps)
        cand = (cur[pending] + eps[pending, None] * update[pending]).clamp(0.0, 1.0)
        ok = oracle.ask(idx[pending], cand)
        rows = pending.nonzero().flatten()
        out[rows[ok]] = cand[ok]
        pending[rows[ok]] = False
    return out


class HopSkipJumpParams(AttackParams):
    norm: Literal["2", "inf"] = "2"
    max_iter: NonNegInt = 50
    max_eval: PosInt = 10000
    init_eval: PosInt = 100
    init_size: PosInt = 100
    max_queries: PosInt | None = None

    _norm = field_validator("norm", mode="before")(norm_spelling)


@takes(HopSkipJumpParams)
def attack(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    targeted: bool,
    norm: str,
    max_iter: int,
    max_eval: int,
    init_eval: int,
    init_size: int,
    max_queries: int | None,
    seed: int | None = None,
) -> AttackResult:
    """HopSkipJump with ART's parameter names and defaults; ``max_queries`` caps each sample."""
    labels = check_batch(inputs, labels, "hop_skip_jump")
    norm = check_norm("hop_skip_jump", norm)
    if init_eval > max_eval:
        raise AnntError(f"hop_skip_jump: init_eval ({init_eval}) must not exceed max_eval ({max_eval})")
    shape = tuple(inputs.shape[1:])
    x = inputs.detach().flatten(1)
    n, d, device = x.shape[0], x.shape[1], x.device
    theta = 0.01 / math.sqrt(d) if norm == "2" else 0.01 / d
    oracle = _Oracle(model, shape, labels, targeted, max_queries if max_queries is not None else 2**62)
    gen = make_generator(seed, device)
    iterations = counts(n, 0, device)
    with eval_mode(model):
        everyone = torch.arange(n, device=device)
        found = oracle.ask(everyone, x) if oracle.budget >= 1 else torch.zeros(n, dtype=torch.bool, device=device)
        adv = x.clone()
        start = torch.zeros_like(found)
        for _ in range(init_size):
            idx = (~found & ~start & oracle.affords(everyone, 1)).nonzero().flatten()
            if idx.numel() == 0:
                break
            noise = torch.rand((idx.numel(), d), generator=gen, device=device, dtype=x.dtype)
            ok = oracle.ask(idx, noise)
            adv[idx[ok]] = noise[ok]
            start[idx[ok]] = True
        idx = start.nonzero().flatten()
        adv[idx] = _binary_search(oracle, idx, adv[idx], x[idx], "2", theta, threshold=0.001)
        active = start.clone()
        for t in range(max_iter):
            num_eval = min(int(init_eval * math.sqrt(t + 1)), max_eval)
            idx = (active & oracle.affords(everyone, num_eval + 1)).nonzero().flatten()
            active[:] = False
            active[idx] = True  # a sample that cannot afford an estimate and a step stops here
            if idx.numel() == 0:
                break
            dist = _distance(x[idx], adv[idx], norm)
            scale = math.sqrt(d) * theta if norm == "2" else d * theta
            delta = torch.full_like(dist, 0.1) if t == 0 else scale * dist
            update = _estimate_direction(oracle, idx, adv[idx], delta, num_eval, norm, gen)
            adv[idx] = _geometric_step(oracle, idx, adv[idx], update, 2 * dist / math.sqrt(t + 1))
            adv[idx] = _binary_search(oracle, idx, adv[idx], x[idx], norm, theta)
            iterations[idx] += 1
        # The searched points end on the decision boundary, labelled on the inference copy and in
        # batches of candidates: judge them on the model itself, in one batch, as evaluation does.
        adv, confirmed, passes = confirm_on_model(model, inputs, adv.view_as(inputs).clamp(0.0, 1.0),
                                                  start, labels, targeted)
        oracle.queries += torch.where(start, passes, 0)
    return AttackResult(
        adversarial=adv,
        success=found | confirmed,
        iterations=iterations,
        forward_passes=oracle.queries,
        backward_passes=counts(n, 0, device),
    )
