"""The result every attack returns and the helpers every attack shares."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

# re-exported: geometry's helpers were first written here, and callers import them from here
from annt.attacks.geometry import bcast, flat_norm, input_gradient  # noqa: F401
from annt.errors import AnntError
from annt.models.inference import as_model_input, default_batch_size


class AttackResult:
    """Outcome of one batched attack.

    ``adversarial`` is always clipped to [0, 1] and has the inputs' shape; ``success`` says
    per sample whether the attack's goal (misclassification, or the target class) was reached
    on the attacked model. Costs are per sample so that batched and unbatched runs compare.

    An attack whose result needs a pass of its own to be judged (FGSM) may give ``success`` as
    a zero-argument function: it runs on first access, so a caller that only wants the images
    (the usual use of a one-step attack) does not pay for it, and every later access reads the
    same tensor.
    """

    def __init__(
        self,
        adversarial: torch.Tensor,
        success: torch.Tensor | Callable[[], torch.Tensor],
        iterations: torch.Tensor,
        forward_passes: torch.Tensor,
        backward_passes: torch.Tensor,
        extras: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.adversarial = adversarial
        self._success = success  # bool [N], or the function that computes it
        self.iterations = iterations  # int64 [N]
        self.forward_passes = forward_passes  # int64 [N]: model evaluations spent on each sample
        self.backward_passes = backward_passes  # int64 [N]: gradient evaluations on each sample
        self.extras = {} if extras is None else extras  # e.g. UAP noise

    @property
    def success(self) -> torch.Tensor:
        if callable(self._success):
            self._success = self._success()
        return self._success


class CallCounter(nn.Module):
    """Wraps a model and counts forward passes per sample (backward passes counted by attacks)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.samples = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.samples += x.shape[0]
        return self.model(x)


# --------------------------------------------------------------------------------------------
# Shared helpers. Attacks are plain functions; these keep their bookkeeping identical.
# --------------------------------------------------------------------------------------------


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Attack the deterministic (eval) network, then give the caller back the mode it had."""
    was_training = model.training
    if not was_training and not any(m.training for m in model.modules()):
        yield model  # already in eval mode: skip the recursive train() calls (per-call cost)
        return
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A local generator on ``device``: seeded runs repeat, unseeded ones follow torch's RNG."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def check_batch(inputs: torch.Tensor, labels: torch.Tensor, attack: str) -> torch.Tensor:
    """Fail early (one line) on inputs an attack cannot handle; return labels as int64."""
    if inputs.dim() < 2 or inputs.shape[0] == 0:
        raise AnntError(
            f"{attack}: inputs must be a non-empty batch [N, ...], got {tuple(inputs.shape)}"
        )
    if not inputs.is_floating_point():
        raise AnntError(f"{attack}: inputs must be floating point images in [0, 1]")
    labels = torch.as_tensor(labels, device=inputs.device).long().reshape(-1)
    if labels.shape[0] != inputs.shape[0]:
        raise AnntError(f"{attack}: got {inputs.shape[0]} inputs but {labels.shape[0]} labels")
    return labels


def counts(n: int, value: int | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A per-sample int64 cost vector filled with ``value`` (or a copy of a tensor)."""
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=torch.int64).clone()
    return torch.full((n,), int(value), dtype=torch.int64, device=device)


@torch.no_grad()
@torch.no_grad()  # labels only: no caller needs a graph behind them
def predict(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Labels of ``x`` evaluated in chunks so that large candidate sets fit in memory.

    The default chunk is the device's (128 images on CPU, 4096 on a GPU).
    """
    if x.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=x.device)
    batch_size = batch_size or default_batch_size(x.device)
    if x.shape[0] <= batch_size:
        return model(as_model_input(x, model)).argmax(1)
    return torch.cat([model(as_model_input(c, model)).argmax(1) for c in x.split(batch_size)])


def is_adversarial(pred: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Goal test shared by all attacks: reach the target, or leave the true class."""
    return pred == labels if targeted else pred != labels


# relative growth of the perturbation tried, in one batch, for a point the model disagrees on
BACK_OFF = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)


def confirm_on_model(
    model: nn.Module,
    inputs: torch.Tensor,
    adv: torch.Tensor,
    claimed: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Judge an attack's claimed successes on ``model`` itself, in one batch, as evaluation does.

    Minimal-perturbation attacks end within float rounding of the decision boundary, and were
    judged on a faster copy or in other batches; on a quantized model a point on a quantization
    step can change label with the kernel or batch that computes it (CIFAR-10, session 9: 1 of
    100 Boundary points on a CPU, 6-12 of 500 CW points on a GPU). A claimed point that the model
    does not call adversarial is pushed away from the original along its own perturbation, by
    the smallest of ``BACK_OFF`` (relative to the perturbation) from which on the model agrees
    (else the smallest that works, else it stays a failure); then all are judged again.
    Returns the images, the success mask and the model passes spent per sample.
    """
    n = inputs.shape[0]
    success = claimed & is_adversarial(predict(model, adv), labels, targeted)
    passes = counts(n, 1, inputs.device)
    lost = (claimed & ~success).nonzero()[:, 0]
    if lost.numel() == 0:
        return adv, success, passes
    x, d = inputs[lost].flatten(1), (adv[lost] - inputs[lost]).flatten(1)
    scale = torch.tensor(BACK_OFF, dtype=d.dtype, device=d.device)
    cand = (x[:, None] + (1 + scale[None, :, None]) * d[:, None]).clamp(0, 1)  # [lost, k, D]
    k = len(BACK_OFF)
    pred = predict(model, cand.view((-1,) + tuple(inputs.shape[1:])))
    hit = is_adversarial(pred, labels[lost].repeat_interleave(k), targeted).view(-1, k)
    passes[lost] += k
    ok = hit.any(1)
    if not bool(ok.any()):
        return adv, success, passes
    # a lone hit may be rounding again: prefer the step from which every larger one works
    stable = hit.flip(1).long().cumprod(1).flip(1).bool()
    first = torch.where(stable.any(1), stable.float().argmax(1), hit.float().argmax(1))
    adv = adv.clone()
    adv[lost[ok]] = cand[ok, first[ok]].view((-1,) + tuple(inputs.shape[1:]))
    success = claimed & is_adversarial(predict(model, adv), labels, targeted)
    return adv, success, passes + 1


def with_restarts(
    x: torch.Tensor,
    restarts: int,
    run_once: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Up to ``restarts`` runs, each only on the samples no earlier run fooled.

    ``run_once(todo)`` attacks the samples ``x[todo]`` and returns (result, success) for them;
    the first successful run is kept per sample. Returns the images, the success mask and the
    number of runs spent on each sample.
    """
    n, device = x.shape[0], x.device
    adv, success = x.clone(), torch.zeros(n, dtype=torch.bool, device=device)
    tries = torch.zeros(n, dtype=torch.int64, device=device)
    for _ in range(restarts):
        todo = (~success).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        tries[todo] += 1
        found, hit = run_once(todo)
        adv[todo] = found
        success[todo] = hit
    return adv, success, tries


def runner_up_classes(logits: torch.Tensor, n: int) -> torch.Tensor:
    """[N, min(n, classes - 1)]: the classes ranked 2, 3, ..., n + 1 by ``logits`` (AutoAttack's targets)."""
    return logits.sort(dim=1).indices.flip(1)[:, 1 : n + 1]


def over_targets(
    x: torch.Tensor,
    done: torch.Tensor,
    targets: torch.Tensor,
    restarts: int,
    run_once: Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AutoAttack's loop of a targeted attack with an untargeted goal: for each column of
    ``targets`` [N, K] in turn, ``restarts`` runs, each on the samples not yet fooled (``done``
    ones never run). ``run_once(todo, target, restart)`` attacks ``x[todo]`` towards ``target``
    and returns (result, success) for them. Returns the images (``x`` where never fooled), the
    success mask and the number of runs spent on each sample."""
    adv, success = x.clone(), done.clone()
    runs = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    for k in range(targets.shape[1]):
        for restart in range(restarts):
            todo = (~success).nonzero().squeeze(1)
            if todo.numel() == 0:
                return adv, success, runs
            runs[todo] += 1
            found, hit = run_once(todo, targets[todo, k], restart)
            adv[todo[hit]] = found[hit]
            success[todo[hit]] = True
    return adv, success, runs


def concat_results(parts: list[AttackResult]) -> AttackResult:
    """Join the results of attacking consecutive chunks of one batch, in order.

    Per-sample extras are concatenated; per-chunk extras (scalars, one noise per chunk) are
    stacked.
    """
    if len(parts) == 1:
        return parts[0]
    extras: dict[str, torch.Tensor] = {}
    for key in parts[0].extras:
        values = [p.extras[key] for p in parts]
        per_sample = all(v.dim() > 0 and v.shape[0] == len(p.adversarial) for v, p in zip(values, parts))
        extras[key] = torch.cat(values) if per_sample else torch.stack(values)
    return AttackResult(
        adversarial=torch.cat([p.adversarial for p in parts]),
        success=lambda: torch.cat([p.success for p in parts]),  # lazy parts stay lazy until asked
        iterations=torch.cat([p.iterations for p in parts]),
        forward_passes=torch.cat([p.forward_passes for p in parts]),
        backward_passes=torch.cat([p.backward_passes for p in parts]),
        extras=extras,
    )
