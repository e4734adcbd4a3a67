"""Run an attack through ART's implementation, for exact replication of the paper's pipeline.

ART (adversarial-robustness-toolbox) is imported lazily. Parameters are the validated ANNT
ones mapped onto ART's classes; options ART lacks (JSMA's ``saliency``, CW's ``abort_early``,
Boundary's ``init_starts``, ``init_search_steps`` and ``guided``) are ignored, and ``batch_size=None`` keeps ART's defaults.
Costs: ART exposes no per-sample counts, so the model calls are counted during the run and
spread evenly over the samples (``iterations`` is -1). ``seed`` seeds NumPy's and Python's
global generators, which ART draws from (its Boundary start uses an unseeded generator).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

from annt.attacks.base import AttackResult, counts, eval_mode, is_adversarial, predict
from annt.attacks.geometry import norm_order
from annt.errors import AnntError

SUPPORTED = frozenset({"fgsm", "jsma", "uap", "cw_l2", "boundary"})  # the paper's five attacks


class _CountBackward(torch.autograd.Function):
    """Identity that counts the samples whose input gradient is computed."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, box: list[int]) -> torch.Tensor:  # type: ignore[override]
        ctx.box = box
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        ctx.box[0] += grad.shape[0]
        return grad, None


class CountingModel(nn.Module):
    """float32 input (ART sometimes hands over float64) and per-sample call counters."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_samples = 0
        self.backward_box = [0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        self.forward_samples += x.shape[0]
        if x.requires_grad:
            x = _CountBackward.apply(x, self.backward_box)
        return self.model(x)


def _import_art() -> Any:
    try:
        import art.attacks.evasion as evasion
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        raise AnntError(
            "backend 'art' needs adversarial-robustness-toolbox: pip install "
            "adversarial-robustness-toolbox"
        ) from None
    return evasion, PyTorchClassifier


def _batch(kw: dict[str, Any], batch_size: int | None) -> dict[str, Any]:
    return kw if batch_size is None else {**kw, "batch_size": batch_size}


def _build(name: str, evasion: Any, clf: Any, p: dict[str, Any], bs: int | None) -> Any:
    """ART attack object for ANNT parameters ``p``."""
    if name == "fgsm":
        return evasion.FastGradientMethod(
            clf, **_batch({"eps": p["eps"], "norm": norm_order(p["norm"]), "targeted": p["targeted"]}, bs)
        )
    if name == "jsma":
        if p["target_selection"] != "random" and not p["targeted"]:
            raise AnntError("jsma: backend 'art' supports only target_selection='random'")
        kw = {"theta": p["theta"], "gamma": p["gamma"], "verbose": False}
        return evasion.SaliencyMapMethod(clf, **_batch(kw, bs))
    if name == "uap":
        if p["targeted"]:
            raise AnntError("uap: backend 'art' has no targeted universal perturbation")
        inner: dict[str, Any] = {"eps": p["attacker_eps"]}
        if p["attacker"] == "pgd":
            step = p["attacker_step_size"] or p["attacker_eps"] / 4
            inner |= {"eps_step": step, "max_iter": p["attacker_steps"], "verbose": False}
        kw = {
            "attacker": p["attacker"],
            "attacker_params": inner,
            "delta": p["delta"],
            "max_iter": p["max_iter"],
            "eps": p["xi"],
            "norm": norm_order(p["norm"]),
            "verbose": False,
        }
        return evasion.UniversalPerturbation(clf, **_batch(kw, bs))
    if name == "cw_l2":
        keys = (
            "confidence",
            "targeted",
            "learning_rate",
            "binary_search_steps",
            "max_iter",
            "initial_const",
        )
        return evasion.CarliniL2Method(
            clf, **_batch({k: p[k] for k in keys} | {"verbose": False}, bs)
        )
    if p.get("step_mode", "trial") != "trial":
        raise AnntError("boundary: step_mode 'single' has no ART counterpart (use backend annt)")
    keys = (
        "targeted",
        "delta",
        "epsilon",
        "step_adapt",
        "max_iter",
        "num_trial",
        "sample_size",
        "init_size",
        "min_epsilon",
    )
    return evasion.BoundaryAttack(clf, **_batch({k: p[k] for k in keys} | {"verbose": False}, bs))


def run_art(
    name: str,
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    params: dict[str, Any],
    *,
    seed: int | None = None,
    batch_size: int | None = None,
) -> AttackResult:
    """Attack ``inputs`` with ART's class for ``name``; ``params`` must be validated already."""
    if name not in SUPPORTED:
        raise AnntError(f"{name}: no ART backend (it has one for {', '.join(sorted(SUPPORTED))}); use backend 'annt'")
    evasion, classifier_cls = _import_art()
    n, device = inputs.shape[0], inputs.device
    counter = CountingModel(model)
    with eval_mode(model):
        classes = int(model(inputs[:1]).shape[1])
        clf = classifier_cls(
            counter,
            loss=nn.CrossEntropyLoss(),
            input_shape=tuple(inputs.shape[1:]),
            nb_classes=classes,
            clip_values=(0.0, 1.0),
            device_type="gpu" if device.type == "cuda" else "cpu",
        )
        if seed is not None:
            np.random.seed(seed % 2**32)
            random.seed(seed)
        attack = _build(name, evasion, clf, params, batch_size)
        x_np, y_np = inputs.detach().cpu().numpy(), labels.cpu().numpy()
        use_y = params["targeted"] or name in ("fgsm", "uap", "cw_l2")
        adv_np = attack.generate(x_np, y=y_np if use_y else None)
        adv = torch.from_numpy(np.asarray(adv_np, dtype=np.float32)).to(device).clamp_(0.0, 1.0)
        adv = adv.view_as(inputs)
        success = is_adversarial(predict(model, adv), labels, params["targeted"])
    extras: dict[str, torch.Tensor] = {}
    if name == "uap":
        extras["noise"] = torch.from_numpy(np.asarray(attack.noise, dtype=np.float32)).to(device)
        extras["fooling_rate"] = torch.tensor(float(attack.fooling_rate))
    return AttackResult(
        adversarial=adv,
        success=success,
        iterations=counts(n, -1, device),
        forward_passes=counts(n, -(-counter.forward_samples // n), device),
        backward_passes=counts(n, -(-counter.backward_box[0] // n), device),
        extras=extras,
    )
