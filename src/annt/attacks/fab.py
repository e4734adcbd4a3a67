"""Fast Adaptive Boundary attack (Croce & Hein 2020), targeted, as AutoAttack runs it (FAB-T).

FAB is a minimum-norm attack. Each step linearises the logit difference ``z_t - z_y`` at the
iterate ``x1`` into the hyperplane ``<w, z> = b`` (``w`` its input gradient) and projects both
``x1`` and the original ``x0`` onto it within the box [0, 1] (``d1``, ``d2``: the smallest
Linf / L2 moves, see :func:`boundary_projection`); the new iterate is
``(x1 + eta d1) (1 - alpha) + (x0 + eta d2) alpha`` clipped to [0, 1], with
``alpha = min(|d1| / (|d1| + |d2|), alpha_max)``. An adversarial iterate is recorded when it is
closer than the best so far and pulled back towards ``x0`` by ``beta``. The first run of a
target starts at ``x0``, further restarts at a random point at distance ``eps / 2``.

FAB-T: untargeted in its goal, it runs once per target, the classes ranked 2, 3, ...,
``n_target_classes + 1`` by the clean logits in turn, on the images not yet fooled; a run
fools an image when its smallest adversarial point is within ``eps``. Images the model already
misclassifies are returned as they are, and where the attack fails, the input.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field, model_validator
from torch import nn

from annt.attacks.base import (
    AttackResult,
    check_batch,
    confirm_on_model,
    counts,
    eval_mode,
    make_generator,
    over_targets,
    runner_up_classes,
)
from annt.attacks.geometry import bcast, check_norm, flat_norm, input_gradient, norm_order
from annt.attacks.params import BallParams, PosInt, takes
from annt.errors import AnntError
from annt.models.inference import cached_inference_copy


def boundary_projection(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """Per row of ``t`` [B, D]: the smallest ``d`` in Linf or L2 with ``<w, t + d> = b`` and
    ``t + d`` in [0, 1]; where the box does not reach the hyperplane, the box corner nearest it.

    With the rows signed so that ``c = <w, t> - b >= 0``, coordinate ``i`` can lower
    ``<w, .>`` by at most ``|w_i| room_i`` (``room_i``: ``t_i`` if ``w_i > 0``, else ``1 - t_i``).
    Linf: ``d_i = -sign(w_i) min(lam, room_i)`` with the smallest ``lam`` whose total decrease
    ``sum_i |w_i| min(lam, room_i)`` reaches ``c``; L2 (KKT): ``d_i = -sign(w_i) min(mu |w_i|,
    room_i)``, total ``sum_i w_i^2 min(mu, room_i / |w_i|)``. Both totals are
    ``G(s) = sum_i v_i min(s, k_i)``: increasing, concave and piecewise linear in ``s``, so
    Newton's method from ``s = 0`` never overshoots the root and is exact once it reaches the
    root's segment (no sort: each step is one pass over the knots above ``s``, and few steps are
    needed). Rows whose ``G`` never reaches ``c`` get ``s = inf``. Computed in float64, returned
    in ``t``'s dtype.
    """
    dtype = t.dtype
    t, w, b = t.double(), w.double(), b.double()
    c = (w * t).sum(1) - b
    w = torch.where((c < 0)[:, None], -w, w)
    c = c.abs()
    size = w.abs()
    room = torch.where(w > 0, t, 1 - t)
    active = size > 0
    if norm == "inf":
        knot, weight = room, size
    else:
        knot, weight = room / torch.where(active, size, 1.0), size.square()
    knot = torch.where(active, knot, 0.0)  # inactive coordinates add nothing at any s
    terms = torch.stack((weight, weight * knot), 2)  # [B, D, 2]: v_i and v_i k_i
    total = terms[..., 1].sum(1)  # G(inf)
    feasible = total >= c
    s = torch.zeros_like(c)
    count = torch.full_like(c, -1.0)  # knots above s at the previous step
    for _ in range(t.shape[1] + 2):  # each step passes at least one knot until the last
        above = (knot > s[:, None]).to(knot)
        part = torch.bmm(above[:, None, :], terms)[:, 0]  # sums of v_i and v_i k_i over k_i > s
        n_above = above.sum(1)
        done = (n_above == count) | ~feasible  # same segment as the step before: s is its root
        if bool(done.all()):
            break
        count = n_above
        g = total - part[:, 1] + s * part[:, 0]  # G(s)
        s = torch.where(done, s, s + (c - g).clamp(min=0) / part[:, 0].clamp(min=1e-300))
    s = torch.where(feasible, s, torch.inf)[:, None]
    step = torch.minimum(s, room) if norm == "inf" else torch.minimum(s * size, room)
    return torch.where(active, -w.sign() * step, 0.0).to(dtype)  # inactive: no move (and no inf * 0)


def _start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    """A restart's random start: distance ``eps / 2`` (Linf / L2), clipped to [0, 1]."""
    if norm == "inf":
        t = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1
    else:
        t = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    t = t / bcast(flat_norm(t, norm_order(norm)).clamp(min=1e-12), x)
    return (x + 0.5 * eps * t).clamp(0.0, 1.0)


def _one_run(
    model: nn.Module,
    x0: torch.Tensor,
    labels: torch.Tensor,
    target: torch.Tensor,
    start: torch.Tensor,
    norm: str,
    steps: int,
    alpha_max: float,
    eta: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One FAB run towards ``target``: (closest adversarial point, its norm (inf where none),
    the number of gradients taken again per image).

    The forward pass that checks a step's iterate also gives the next step's gradient there, so a
    step costs one forward and one backward, plus one of each for the iterates that were
    adversarial (pulled back towards ``x0``, so their gradient is taken again at the new point).
    """
    n, p = x0.shape[0], norm_order(norm)
    flat0 = x0.flatten(1)

    def margin(z: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(t), device=z.device)
        return z[rows, t] - z[rows, y]

    def gradient(x: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        t, y = (target, labels) if keep is None else (target[keep], labels[keep])
        return input_gradient(model, x, lambda z: margin(z, t, y))

    x1 = start
    best, best_norm = x0.clone(), torch.full((n,), torch.inf, device=x0.device, dtype=x0.dtype)
    again = torch.zeros(n, dtype=torch.int64, device=x0.device)
    grad, logits = gradient(x1)
    for step in range(steps):
        with torch.no_grad():
            w = grad.flatten(1)
            b = (w * x1.flatten(1)).sum(1) - margin(logits, target, labels)
            d = boundary_projection(torch.cat((x1.flatten(1), flat0)), w.repeat(2, 1), b.repeat(2), norm)
            size = flat_norm(d, p).clamp(min=1e-8)
            d1, d2 = d[:n].view_as(x0), d[n:].view_as(x0)
            alpha = bcast((size[:n] / (size[:n] + size[n:])).clamp(0.0, alpha_max), x0)
            x1 = ((x1 + eta * d1) * (1 - alpha) + (x0 + eta * d2) * alpha).clamp(0.0, 1.0)
        last = step == steps - 1
        if last:
            with torch.no_grad():
                logits = model(x1)
        else:
            grad, logits = gradient(x1)
        with torch.no_grad():
            hit = logits.argmax(1) != labels
            dist = flat_norm(x1 - x0, p)
            better = hit & (dist < best_norm)
            best = torch.where(bcast(better, x0), x1, best)
            best_norm = torch.where(better, dist, best_norm)
            x1 = torch.where(bcast(hit, x0), x0 + (x1 - x0) * beta, x1)
        if not last and bool(hit.any()):
            grad[hit], logits[hit] = gradient(x1[hit], hit)  # both are fresh tensors, no graph behind them
            again += hit
    return best, best_norm, again


class FabParams(BallParams):
    steps: PosInt = 100
    restarts: PosInt = 1
    n_target_classes: PosInt = 9
    alpha_max: Annotated[float, Field(ge=0, le=1)] = 0.1
    eta: Annotated[float, Field(ge=1)] = 1.05
    beta: Annotated[float, Field(gt=0, le=1)] = 0.9

    @model_validator(mode="after")
    def _goal_is_untargeted(self) -> FabParams:
        if self.targeted:
            raise ValueError("targeted must be false: fab_t picks its own targets (the runner-up classes)")
        return self


@takes(FabParams)
def attack(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    targeted: bool,
    eps: float,
    norm: str,
    steps: int,
    restarts: int,
    n_target_classes: int,
    alpha_max: float,
    eta: float,
    beta: float,
    seed: int | None = None,
) -> AttackResult:
    """FAB-T with AutoAttack's settings: ``restarts`` runs of ``steps`` per target class, the
    ``n_target_classes`` (at most classes - 1) runner-up classes in turn; success only within
    ``eps``."""
    labels = check_batch(inputs, labels, "fab_t")
    norm = check_norm("fab_t", norm)
    if targeted:
        raise AnntError("fab_t: targeted must be false (it picks the runner-up classes as its targets)")
    n, device, p = inputs.shape[0], inputs.device, norm_order(norm)
    gen = make_generator(seed, device)
    x = inputs.detach()
    again = torch.zeros(n, dtype=torch.int64, device=device)  # gradients taken twice in a step
    with eval_mode(model):
        original, model = model, cached_inference_copy(model, channels_last=False)  # bit-identical, faster
        with torch.no_grad():
            logits = model(x)
        if logits.shape[1] < 2:
            raise AnntError(f"fab_t: needs at least 2 classes, got {logits.shape[1]}")
        targets = runner_up_classes(logits, n_target_classes)

        def run_once(todo: torch.Tensor, target: torch.Tensor, restart: int) -> tuple[torch.Tensor, torch.Tensor]:
            x0 = x[todo]
            start = x0 if restart == 0 else _start(x0, eps, norm, gen)
            best, size, repeats = _one_run(model, x0, labels[todo], target, start, norm, steps, alpha_max, eta, beta)
            again[todo] += repeats
            return best, size <= eps

        adv, claimed, runs = over_targets(x, logits.argmax(1) != labels, targets, restarts, run_once)
        adv, success, checks = confirm_on_model(original, x, adv, claimed, labels, targeted=False)
        size = flat_norm(adv - x, p)
        success &= size <= eps  # a point the confirmation pushed out of the budget is a failure
        adv = torch.where(bcast(success, x), adv, x)
    return AttackResult(
        adversarial=adv,
        success=success,
        iterations=counts(n, runs * steps, device),
        forward_passes=counts(n, 1 + runs * (steps + 1) + again + checks, device),
        backward_passes=counts(n, runs * steps + again, device),
    )
