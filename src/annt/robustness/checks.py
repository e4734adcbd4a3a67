"""The diagnose checklist's measurements: budget-checked attack outcomes, growing eps,
input-gradient health. Each function measures; :mod:`annt.robustness.verdict` judges."""

from __future__ import annotations

import time
import typing
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from annt.attacks import get_attack, run_attack
from annt.attacks.base import eval_mode, flat_norm, input_gradient
from annt.attacks.losses import margin_loss
from annt.models.inference import predict_labels

SINGLE_STEP = ("fgsm",)
ITERATIVE = ("pgd", "apgd_ce", "apgd_dlr")
GRADIENT_BASED = SINGLE_STEP + ITERATIVE + ("cw_l2", "jsma", "uap")
VANISHING = 1e-8  # L2 norm of the margin's input gradient below which a sample counts as vanishing


def kind_of(attack: str) -> str:
    """single-step / iterative / gradient-free: which checklist row an attack belongs to (an
    attack the registry marks gradient-based, e.g. ``apgd_t`` or ``fab_t``, is iterative)."""
    if attack in SINGLE_STEP:
        return "single-step"
    if attack in GRADIENT_BASED or get_attack(attack).gradient_based:
        return "iterative"
    return "gradient-free"


@dataclass
class Outcome:
    """One attack at one eps: per sample, robust (not fooled within the budget) or not."""

    attack: str
    eps: float
    kind: str
    robust: np.ndarray  # bool [N]
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    label: str = ""  # shown name; defaults to the attack's

    @property
    def name(self) -> str:
        return self.label or self.attack

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.mean())


def within_budget(x: torch.Tensor, adv: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Per sample: is ``adv`` inside the eps ball (Linf: + 1e-6; L2: relative 1e-6)?"""
    if norm == "inf":
        return (adv - x).flatten(1).abs().amax(1) <= eps + 1e-6
    return flat_norm(adv - x) <= eps * (1 + 1e-6) + 1e-9


def attack_params(attack: str, eps: float, norm: str, extra: dict[str, Any] | None) -> dict[str, Any]:
    """The budget passed to every attack that takes one, plus the caller's overrides."""
    fields = get_attack(attack).params_model.model_fields
    params: dict[str, Any] = {}
    if "eps" in fields:
        params["eps"] = float(eps)
    if "norm" in fields:
        params["norm"] = norm
    return params | dict(extra or {})


def robust_under(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor, eps: float, norm: str
) -> np.ndarray:
    """Robust per sample: still correct, or fooled only outside the budget."""
    adv = adv.to(x.device)  # attacks may hand back their result on another device than the images
    fooled = (predict_labels(model, adv).to(x.device) != y.to(x.device)) & within_budget(x, adv, eps, norm)
    return (~fooled).cpu().numpy()


def run_one(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: str,
    eps: float,
    norm: str,
    extra: dict[str, Any] | None,
    seed: int,
    batch_size: int | None,
    *,
    source: nn.Module | None = None,
    label: str = "",
    kind: str | None = None,
) -> Outcome:
    """Attack ``source`` (default: ``model``) and judge the result on ``model``."""
    params = attack_params(attack, eps, norm, extra)
    tic = time.perf_counter()
    res = run_attack(attack, source or model, x, y, params, seed=seed, batch_size=batch_size)
    seconds = time.perf_counter() - tic
    robust = robust_under(model, x, y, res.adversarial, eps, norm)
    return Outcome(attack, float(eps), kind or kind_of(attack), robust, params, seconds, label)


def gradient_options(attack: str = "pgd") -> list[str]:
    """Values of an attack's ``gradient`` option (quantizer surrogates), default first;
    [] when it has none."""
    info = get_attack(attack).params_model.model_fields.get("gradient")
    if info is None:
        return []
    args = [a for a in typing.get_args(info.annotation) if isinstance(a, str)]
    return sorted(args, key=lambda a: a != info.default)


def growing_eps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str,
    extra: dict[str, Any] | None,
    seed: int,
    batch_size: int | None,
    attack: str = "pgd",
) -> list[tuple[float, float]]:
    """Success rate of ``attack`` at eps, 2 eps, 4 eps, ... up to the largest useful budget
    (1 for Linf, the image diagonal for L2); stops once every sample is fooled."""
    cap = 1.0 if norm == "inf" else float(np.sqrt(x[0].numel()))
    rows: list[tuple[float, float]] = []
    cur = max(float(eps), 1e-3)
    while True:
        cur = min(cur, cap)
        out = run_one(model, x, y, attack, cur, norm, extra, seed, batch_size)
        rows.append((cur, 1.0 - out.robust_accuracy))
        if rows[-1][1] >= 1.0 or cur >= cap:
            return rows
        cur *= 2


def gradient_health(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Shares of samples whose input gradient of the logit margin is exactly zero / vanishing.

    The margin (best other logit minus the true one), not the cross-entropy: a confident
    sample's cross-entropy gradient vanishes with its softmax (float saturation, a problem of
    the loss that APGD-DLR avoids), while a zero margin gradient means the network itself
    passes no gradient to the input (e.g. every quantizer or clip on the path is saturated).
    """
    grads = []
    with eval_mode(model):
        for xb, yb in zip(x.split(256), y.split(256)):
            grad, _ = input_gradient(model, xb, lambda z, yb=yb: margin_loss(z, yb))
            grads.append(flat_norm(grad))
    norms = torch.cat(grads)
    return {
        "zero_gradient": float((norms == 0).float().mean()),
        "vanishing_gradient": float((norms < VANISHING).float().mean()),
        "median_gradient_l2": float(norms.median()),
    }
