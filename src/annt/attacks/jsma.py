"""Jacobian-based Saliency Map Attack (Papernot et al. 2016), pairwise, batched.

Each iteration changes the pair of features (p, q) with the largest saliency
``alpha * |beta|`` where ``alpha`` is the pair's summed gradient of the target logit and
``beta`` the summed gradient of all other logits, restricted to ``alpha > 0, beta < 0``
(increasing features, ``theta > 0``) or ``alpha < 0, beta > 0`` (decreasing, ``theta < 0``).
Both features move by ``theta`` and are clipped; saturated features leave the search domain.
The attack stops on success, when the domain is exhausted, or when one more pair would change
more than ``gamma`` of all features.

ART's SaliencyMapMethod instead takes the two largest target-gradient features; that rule is
kept here as the fallback when no pair satisfies the sign conditions.

The exact pair maximum is found without materialising features^2 scores per sample: only
features on the first two Pareto layers of (alpha, -beta) can form the best pair, and those few
pairs are scored in chunks of bounded size.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field, field_validator
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
from annt.attacks.params import AttackParams, Fraction, takes
from annt.errors import AnntError
from annt.models.inference import cached_inference_copy

TARGET_SELECTIONS = ("random", "best")
SALIENCIES = ("probabilities", "logits")


def _pairwise_max(a: torch.Tensor, n: torch.Tensor, chunk_elems: int) -> tuple[torch.Tensor, ...]:
    """Best pair of ``relu(a_p + a_q) * relu(n_p + n_q)`` over p < q, in row chunks.

    ``a``/``n`` are [B, K] with excluded features set to -inf (their score becomes 0). Returns
    (score, p, q) per sample; a score of 0 means no pair satisfies the sign conditions.
    """
    b, k = a.shape
    best = torch.zeros(b, dtype=a.dtype, device=a.device)
    best_p = torch.zeros(b, dtype=torch.long, device=a.device)
    best_q = torch.zeros(b, dtype=torch.long, device=a.device)
    rows = max(1, chunk_elems // max(1, b * k))
    for p0 in range(0, k - 1, rows):
        p1 = min(k - 1, p0 + rows)
        r = torch.arange(p1 - p0, device=a.device)
        s = (a[:, p0:p1, None] + a[:, None, p0:]).clamp_(min=0)  # columns q >= p0 only
        s.mul_((n[:, p0:p1, None] + n[:, None, p0:]).clamp_(min=0))
        s[:, r, r] = 0  # p == q is not a pair
        val, flat = s.flatten(1).max(1)
        better = val > best
        width = k - p0
        best = torch.where(better, val, best)
        best_p = torch.where(better, p0 + flat // width, best_p)
        best_q = torch.where(better, p0 + flat % width, best_q)
    return best, best_p, best_q


def _front(a: torch.Tensor, n: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """Mask of the Pareto maxima of the points (a, n) among ``alive`` (ties may stay in)."""
    neg_inf = torch.tensor(float("-inf"), dtype=a.dtype, device=a.device)
    a = torch.where(alive, a, neg_inf)
    order = a.argsort(1, descending=True)
    n_sorted = torch.where(alive, n, neg_inf).gather(1, order)
    best_before = torch.cat(
        [torch.full_like(n_sorted[:, :1], float("-inf")), n_sorted.cummax(1).values[:, :-1]], 1
    )
    front_sorted = (n_sorted > best_before) & alive.gather(1, order)
    return torch.zeros_like(alive).scatter(1, order, front_sorted)


def best_pairs(
    alpha: torch.Tensor,
    beta: torch.Tensor,
    domain: torch.Tensor,
    increase: bool,
    chunk_elems: int = 1 << 23,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (p, q) [B] of the most salient feature pair of each sample (exact maximum).

    The score ``relu(a_p + a_q) * relu(n_p + n_q)`` (``n = -beta``) never decreases when q is
    replaced by a point that dominates it in both coordinates, so some best pair lies in the
    first two Pareto layers of the points (a_i, n_i); only those (a few dozen) are scored.
    """
    if not increase:  # decreasing features: conditions and score mirror
        alpha, beta = -alpha, -beta
    neg_inf = torch.tensor(float("-inf"), dtype=alpha.dtype, device=alpha.device)
    a = torch.where(domain, alpha, neg_inf)
    n = torch.where(domain, -beta, neg_inf)
    first = _front(a, n, domain)
    cand_mask = first | _front(a, n, domain & ~first)
    width = max(2, int(cand_mask.sum(1).max().item()))
    cand = cand_mask.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :width]
    kept = cand_mask.gather(1, cand)
    score, pi, qi = _pairwise_max(
        torch.where(kept, a.gather(1, cand), neg_inf),
        torch.where(kept, n.gather(1, cand), neg_inf),
        chunk_elems,
    )
    p, q = cand.gather(1, pi[:, None])[:, 0], cand.gather(1, qi[:, None])[:, 0]
    # Fallback (ART's rule): the two in-domain features with the largest target gradient.
    top2 = a.topk(2, dim=1).indices
    none = score <= 0
    return torch.where(none, top2[:, 0], p), torch.where(none, top2[:, 1], q)


def _targets(labels: torch.Tensor, classes: int, gen: torch.Generator) -> torch.Tensor:
    """A uniformly drawn wrong class per sample (ART draws one per true class instead)."""
    shift = torch.randint(1, classes, labels.shape, generator=gen, device=labels.device)
    return (labels + shift) % classes


def _gradients(
    model: nn.Module,
    x: torch.Tensor,
    shape: tuple[int, ...],
    target: torch.Tensor | None,
    labels: torch.Tensor,
    saliency: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Logits, alpha and beta gradients at flat ``x``, and the number of backward passes used.

    ``target=None`` aims each sample at its highest wrong logit ("best"). On probabilities
    (JSMA-F) the other classes' gradient is exactly ``-alpha`` because the softmax sums to one,
    and ``d log F_t`` replaces ``d F_t``: it differs by the positive factor ``F_t`` per sample,
    which leaves the pair ranking unchanged but cannot underflow for confident models.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x.view((-1,) + shape))
        if target is None:
            target = logits.detach().scatter(1, labels[:, None], float("-inf")).argmax(1)
        if saliency == "probabilities":
            z_t = logits.log_softmax(1).gather(1, target[:, None]).sum()
            (g_t,) = torch.autograd.grad(z_t, x)
            return logits.detach(), g_t, -g_t, 1
        z_t = logits.gather(1, target[:, None]).sum()
        (g_t,) = torch.autograd.grad(z_t, x, retain_graph=True)
        (g_all,) = torch.autograd.grad(logits.sum(), x)
    return logits.detach(), g_t, g_all - g_t, 2


class JsmaParams(AttackParams):
    theta: Annotated[float, Field(ge=-1, le=1)] = 0.1
    gamma: Fraction = 1.0
    target_selection: Literal["random", "best"] = "random"
    saliency: Literal["probabilities", "logits"] = "probabilities"

    @field_validator("theta")
    @classmethod
    def _nonzero(cls, v: float) -> float:
        if v == 0:
            raise ValueError("must be non-zero")
        return v


@takes(JsmaParams)
def attack(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    targeted: bool,
    theta: float,
    gamma: float,
    target_selection: str,
    saliency: str,
    seed: int | None = None,
    chunk_elems: int = 1 << 23,
) -> AttackResult:
    """Batched pairwise JSMA with ART's defaults (theta 0.1, gamma 1.0).

    ``saliency="probabilities"`` is Papernot et al.'s JSMA-F (gradients of the softmax output),
    ``"logits"`` their JSMA-Z (gradients of the logits, as in cleverhans).

    Untargeted ``target_selection="random"`` aims at a random wrong class per sample (ART's
    behaviour without ``y``, the paper's setting) but stops as soon as the sample is
    misclassified; ``"best"`` re-aims every iteration at the currently highest wrong logit.
    """
    labels = check_batch(inputs, labels, "jsma")
    if target_selection not in TARGET_SELECTIONS:
        raise AnntError(
            f"jsma: target_selection must be one of {', '.join(TARGET_SELECTIONS)}, "
            f"got {target_selection!r}"
        )
    if saliency not in SALIENCIES:
        raise AnntError(f"jsma: saliency must be one of {', '.join(SALIENCIES)}, got {saliency!r}")
    if theta == 0:
        raise AnntError("jsma: theta must be non-zero")
    device, shape = inputs.device, tuple(inputs.shape[1:])
    x = inputs.detach().flatten(1).clone()
    n, features = x.shape
    increase = theta > 0
    domain = x < 1.0 if increase else x > 0.0
    changed = torch.zeros_like(domain)
    budget = int(gamma * features)
    active = torch.ones(n, dtype=torch.bool, device=device)
    success = torch.zeros(n, dtype=torch.bool, device=device)
    iters = counts(n, 0, device)
    fwd = counts(n, 0, device)
    bwd = counts(n, 0, device)
    gen = make_generator(seed, device)
    with eval_mode(model):
        original, model = model, cached_inference_copy(model, channels_last=False)  # bit-identical, faster
        classes = int(model(x[:1].view((1,) + shape)).shape[1])
        fixed = labels if targeted else None
        if not targeted and target_selection == "random":
            fixed = _targets(labels, classes, gen)
        while bool(active.any()):
            idx = active.nonzero()[:, 0]
            target = None if fixed is None else fixed[idx]
            logits, alpha, beta, grads = _gradients(
                model, x[idx], shape, target, labels[idx], saliency
            )
            fwd[idx] += 1
            done = is_adversarial(logits.argmax(1), labels[idx], targeted)
            success[idx] = done
            room = (changed[idx].sum(1) + 2 <= budget) & (domain[idx].sum(1) >= 2)
            go = ~done & room
            active[idx] = go
            if not bool(go.any()):
                break
            idx, alpha, beta = idx[go], alpha[go], beta[go]
            bwd[idx] += grads
            iters[idx] += 1
            p, q = best_pairs(alpha, beta, domain[idx], increase, chunk_elems)
            _apply_pair(x, changed, domain, idx, p, q, theta)
        adv, success, passes = confirm_on_model(
            original, inputs, x.view_as(inputs), success, labels, targeted
        )
    return AttackResult(adv, success, iters, fwd + passes, bwd)


def _apply_pair(
    x: torch.Tensor,
    changed: torch.Tensor,
    domain: torch.Tensor,
    idx: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    theta: float,
) -> None:
    """Move features p and q of samples ``idx`` by theta, clip, and update the search domain."""
    for f in (p, q):
        x[idx, f] = (x[idx, f] + theta).clamp(0.0, 1.0)
        changed[idx, f] = True
    rows = x[idx]
    domain[idx] = domain[idx] & (rows < 1.0 if theta > 0 else rows > 0.0)
