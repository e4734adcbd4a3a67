"""Auto-PGD (Croce & Hein 2020) with the CE or the DLR loss, Linf and L2, batched.

The parameter-free schedule of the paper (Algorithm 1): step size starts at ``2 * eps``;
momentum ``alpha = 0.75`` mixes the new gradient step with the previous move; at the
checkpoints ``w_j = ceil(p_j * steps)`` with ``p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` a sample's step size is halved, and the
sample restarts from its best point, when

1. the loss increased in at most ``rho = 0.75`` of the steps since the last checkpoint, or
2. its step size was not halved at the last checkpoint and its best loss did not improve since.

Every sample keeps its own step size; the checkpoints are shared. Restarts draw a fresh
random start and run only on the samples no earlier restart fooled. A sample's result is
its last adversarial iterate (the reference implementation's ``x_best_adv``), or the iterate
with the highest loss when none was adversarial. Targeted ``apgd_dlr`` uses the targeted DLR
loss with the model's clean prediction as the class to leave.

``apgd_t`` is AutoAttack's APGD-T: untargeted in its goal (misclassify), it runs the targeted
DLR loss (true label against target) once per target, the classes ranked 2, 3, ...,
``n_target_classes + 1`` by the clean logits in turn, each on the images no earlier run fooled.
"""

from __future__ import annotations

import functools
import math

import torch
from pydantic import model_validator
from torch import nn

from annt.attacks.base import (
    AttackResult,
    check_batch,
    eval_mode,
    is_adversarial,
    make_generator,
    over_targets,
    predict,
    runner_up_classes,
    with_restarts,
)
from annt.attacks.geometry import (
    bcast,
    check_norm,
    flat_norm,
    in_ball,
    input_gradient,
    step_direction,
)
from annt.attacks.losses import ce_loss, dlr_loss, dlr_targeted_loss
from annt.attacks.params import BallParams, PosInt, takes
from annt.errors import AnntError
from annt.inputs.identity import later
from annt.models.inference import cached_inference_copy

APGD_LOSSES = ("ce", "dlr")
RHO = 0.75
MOMENTUM = 0.75


def checkpoints(steps: int) -> list[int]:
    """Iterations ``w_j = ceil(p_j * steps)`` (j >= 1) at which step sizes are reconsidered."""
    marks, prev, cur = [], 0.0, 0.22
    while cur <= 1.0:
        marks.append(math.ceil(round(cur * steps, 6)))
        prev, cur = cur, cur + max(cur - prev - 0.03, 0.06)
    return sorted(set(m for m in marks if 0 < m <= steps))


def _start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    """The reference's random start: on the surface of the Linf / L2 ball, clipped to [0, 1]."""
    if norm == "inf":
        t = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1
        t = t / bcast(t.flatten(1).abs().amax(1).clamp(min=1e-12), x)
    else:
        t = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        t = t / bcast(flat_norm(t) + 1e-12, x)
    return (x + eps * t).clamp(0.0, 1.0)


def _objective(loss: str, labels: torch.Tensor, targeted: bool, clean: torch.Tensor | None):
    """Per-sample loss to maximise, as a function of the logits."""
    if loss == "ce":
        return lambda z: ce_loss(z, labels, targeted)
    if targeted:
        return lambda z: dlr_targeted_loss(z, clean, labels)
    return lambda z: dlr_loss(z, labels)


def _one_run(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    objective,
    eps: float,
    norm: str,
    steps: int,
    gen: torch.Generator,
    early_stop: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One APGD run from a random start: (result per sample, success per sample, iterations run
    per sample). With
    ``early_stop`` a sample leaves the run at its first adversarial iterate (the model then
    sees only the samples still unfooled; their trajectories are unchanged)."""
    marks = set(checkpoints(steps))
    adv = _start(x, eps, norm, gen)
    grad, logits = input_gradient(model, adv, objective)
    with torch.no_grad():
        loss = objective(logits)
    hit = is_adversarial(logits.argmax(1), labels, targeted)
    found, adv_found = hit.clone(), adv.clone()
    best, best_loss, grad_best = adv.clone(), loss.clone(), grad.clone()
    step = torch.full((x.shape[0],), 2.0 * eps, device=x.device, dtype=x.dtype)
    previous = adv.clone()
    increases = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    loss_at_mark = best_loss.clone()
    halved_at_mark = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    last_mark = 0
    taken = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    for i in range(steps):
        a = MOMENTUM if i > 0 else 1.0
        z = in_ball(x, adv + bcast(step, x) * step_direction(grad, norm), eps, norm)
        new = in_ball(x, adv + a * (z - adv) + (1 - a) * (adv - previous), eps, norm)
        if early_stop:
            live = ~found
            if not live.any():
                break
            taken += live.long()
            new = torch.where(bcast(live, x), new, adv)  # a fooled sample stays where it was fooled
            previous, adv = adv, new.detach()
            grad, logits = _rows_gradient(model, adv, objective, live, grad, logits)
        else:
            taken += 1
            previous, adv = adv, new.detach()
            grad, logits = input_gradient(model, adv, objective)
        with torch.no_grad():
            new_loss = objective(logits)
        hit = is_adversarial(logits.argmax(1), labels, targeted)
        if early_stop:
            hit &= live
        adv_found = torch.where(bcast(hit, x), adv, adv_found)
        found |= hit
        increases += (new_loss > loss).long()
        loss = new_loss
        better = new_loss > best_loss
        best = torch.where(bcast(better, x), adv, best)
        grad_best = torch.where(bcast(better, x), grad, grad_best)
        best_loss = torch.where(better, new_loss, best_loss)
        if i + 1 in marks:
            window = i + 1 - last_mark
            oscillates = increases.double() < RHO * window  # condition 1 fails
            stalled = ~halved_at_mark & (best_loss <= loss_at_mark)  # condition 2
            halve = oscillates | stalled
            step = torch.where(halve, step / 2, step)
            adv = torch.where(bcast(halve, x), best, adv)
            grad = torch.where(bcast(halve, x), grad_best, grad)
            halved_at_mark, loss_at_mark = halve, best_loss.clone()
            increases.zero_()
            last_mark = i + 1
    return torch.where(bcast(found, x), adv_found, best), found, taken


def _rows_gradient(
    model: nn.Module,
    adv: torch.Tensor,
    objective,
    rows: torch.Tensor,
    grad: torch.Tensor,
    logits: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_gradient`` on the ``rows`` (bool mask) of ``adv`` only: the other rows keep their
    ``grad`` and ``logits``. The per-sample objective still sees the whole batch's logits."""
    index = rows.nonzero().squeeze(1)
    sub = adv[index].detach().requires_grad_(True)
    with torch.enable_grad():
        z = model(sub)
        full = logits.index_put((index,), z)
        (g,) = torch.autograd.grad(objective(full)[index].sum(), sub)
    return grad.index_put((index,), g), logits.index_put((index,), z.detach())


class ApgdParams(BallParams):
    steps: PosInt = 100
    restarts: PosInt = 1
    early_stop: bool = later(False, "0.6.0")  # leave a sample at its first adversarial iterate (same success, less work)


def _check_dlr_classes(name: str, classes: int, targeted: bool) -> None:
    """The DLR loss ranks the logits: 3 classes untargeted, 4 with a target beside the true label."""
    need = 4 if targeted else 3
    if classes < need:
        raise AnntError(f"{name}: the DLR loss needs at least {need} classes, got {classes}")


@takes(ApgdParams)
def attack(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    loss: str = "ce",
    targeted: bool,
    eps: float,
    norm: str,
    steps: int,
    restarts: int,
    early_stop: bool,
    seed: int | None = None,
) -> AttackResult:
    """APGD-CE / APGD-DLR with ``steps`` iterations per restart."""
    name = f"apgd_{loss}"
    labels = check_batch(inputs, labels, name)
    norm = check_norm(name, norm)
    if loss not in APGD_LOSSES:
        raise AnntError(f"apgd: loss must be one of {', '.join(APGD_LOSSES)}, got {loss!r}")
    n, device = inputs.shape[0], inputs.device
    gen = make_generator(seed, device)
    x = inputs.detach()
    with eval_mode(model):
        model = cached_inference_copy(model, channels_last=False)  # bit-identical, faster
        with torch.no_grad():
            classes = model(x[:1]).shape[1]
        if loss == "dlr":
            _check_dlr_classes(name, classes, targeted)
        clean = predict(model, x) if loss == "dlr" and targeted else None
        spent = torch.zeros(n, dtype=torch.int64, device=device)  # iterations per sample, all restarts

        def run_once(todo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            objective = _objective(loss, labels[todo], targeted, None if clean is None else clean[todo])
            adv, hit, taken = _one_run(model, x[todo], labels[todo], targeted, objective, eps, norm, steps, gen,
                                       early_stop)
            spent[todo] += taken
            return adv, hit

        adv, success, tries = with_restarts(x, restarts, run_once)
    return AttackResult(
        adversarial=adv,
        success=success,
        iterations=spent,
        forward_passes=tries + spent,
        backward_passes=tries + spent,
    )


# the registry's entries: APGD with the cross-entropy loss (``apgd_ce``) and the DLR loss (``apgd_dlr``)
attack_ce = functools.partial(attack, loss="ce")
attack_dlr = functools.partial(attack, loss="dlr")


class ApgdTargetedParams(ApgdParams):
    n_target_classes: PosInt = 9

    @model_validator(mode="after")
    def _goal_is_untargeted(self) -> ApgdTargetedParams:
        if self.targeted:
            raise ValueError("targeted must be false: apgd_t picks its own targets (the runner-up classes);"
                             " for one given target use apgd_dlr with targeted=true")
        return self


@takes(ApgdTargetedParams)
def attack_targeted(
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
    early_stop: bool,
    seed: int | None = None,
) -> AttackResult:
    """APGD-T: ``restarts`` runs of ``steps`` per target class, the ``n_target_classes`` (at most
    classes - 1) runner-up classes of the clean logits in turn; images the model already
    misclassifies are returned as they are. Where it fails the input is returned."""
    labels = check_batch(inputs, labels, "apgd_t")
    norm = check_norm("apgd_t", norm)
    if targeted:
        raise AnntError("apgd_t: targeted must be false (it picks the runner-up classes as its targets)")
    n, device = inputs.shape[0], inputs.device
    gen = make_generator(seed, device)
    x = inputs.detach()
    with eval_mode(model):
        model = cached_inference_copy(model, channels_last=False)  # bit-identical, faster
        with torch.no_grad():
            logits = model(x)
        _check_dlr_classes("apgd_t", logits.shape[1], targeted=True)
        targets = runner_up_classes(logits, n_target_classes)
        spent = torch.zeros(n, dtype=torch.int64, device=device)  # iterations per sample, all runs

        def run_once(todo: torch.Tensor, target: torch.Tensor, restart: int) -> tuple[torch.Tensor, torch.Tensor]:
            y = labels[todo]
            objective = functools.partial(dlr_targeted_loss, labels=y, targets=target)
            adv, hit, taken = _one_run(model, x[todo], y, False, objective, eps, norm, steps, gen, early_stop)
            spent[todo] += taken
            return adv, hit

        adv, success, runs = over_targets(x, logits.argmax(1) != labels, targets, restarts, run_once)
    return AttackResult(
        adversarial=adv,
        success=success,
        iterations=spent,
        forward_passes=1 + runs + spent,
        backward_passes=runs + spent,
    )
