"""Attack strength self-test: the binarization test (Zimmermann, Brendel, Tramer, Carlini,
NeurIPS 2022, "Increasing Confidence in Adversarial Robustness Evaluations").

For each sampled clean image x (correctly classified), the model becomes a binary classifier
with an adversarial example planted inside the eps ball:

1. ``inner`` random points of the ball around x (uniform in the Linf cube / L2 ball, clipped
   to [0, 1]) and x itself are class 0; one planted point on the ball's surface (a random
   corner for Linf, a random direction for L2, clipped to [0, 1]) is class 1;
2. a linear readout on the model's logits is fitted to that task (logistic regression on
   standardized logits, then the threshold set half way between the planted point's score and
   the highest class-0 score); an image whose task the readout cannot fit is left out as
   invalid. On a valid image the binary model calls x class 0 and the planted point class 1,
   so an adversarial example within eps provably exists;
3. the attack runs on the binary model (label 0); the image passes when the attack returns a
   point in [0, 1], inside the ball, that the binary model calls class 1.

The pass rate over the valid images is the attack's score: an attack that misses many planted
examples is too weak to back a robustness claim. All images are handled in one batch: the
binary model routes each input to the readout of the clean image nearest to it (in the
attack's norm); the sampled images lie more than 2 eps apart, so every point of one ball goes
to that ball's readout.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from annt.attacks.base import eval_mode
from annt.attacks.geometry import flat_norm
from annt.errors import AnntError
from annt.robustness.checks import attack_params, robust_under
from annt.robustness.defaults import NORMS, SELFTEST_IMAGES, SELFTEST_INNER, SELFTEST_MIN_PASS

PLANT_TRIES = 4  # planted points tried per image before it counts as invalid
FIT_STEPS = 300
NEVER = -1e4  # the logit of the binary model's two padding classes


class PlantedBinary(nn.Module):
    """Logits ``[0, s, NEVER, NEVER]`` with ``s = w_i . (logits(x) - mu_i) / sd_i + b_i`` for the
    clean image ``i`` nearest to ``x``: class 1 (``s > 0``) only where image ``i``'s readout says
    so. The two constant classes can never win; they let attacks whose loss needs 3 or 4 classes
    (the DLR losses of APGD-DLR and APGD-T) run, and change no other loss."""

    def __init__(self, model: nn.Module, clean: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                 mu: torch.Tensor, sd: torch.Tensor, norm: str) -> None:
        super().__init__()
        self.model, self.norm = model, norm
        for name, value in (("clean", clean.flatten(1)), ("w", w), ("b", b), ("mu", mu), ("sd", sd)):
            self.register_buffer(name, value.detach().clone())

    def owner(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest clean image, per input (Linf or L2 distance)."""
        flat = x.detach().flatten(1)
        if self.norm == "2":
            return torch.cdist(flat, self.clean).argmin(1)
        return torch.cat([(c[:, None] - self.clean[None]).abs().amax(-1).argmin(1) for c in flat.split(16)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = self.owner(x)
        z = (self.model(x) - self.mu[i]) / self.sd[i]
        s = (z * self.w[i]).sum(1) + self.b[i]
        never = torch.full_like(s, NEVER)
        return torch.stack([torch.zeros_like(s), s, never, never], 1)


@dataclass
class SelftestResult:
    attack: str
    params: dict[str, Any]
    eps: float
    norm: str
    seed: int
    index: np.ndarray  # int64 [N]: positions of the sampled images in the test split
    valid: np.ndarray  # bool [N]: the planted binary task could be fitted
    passed: np.ndarray  # bool [N]: the attack found a class-1 point within eps (valid images only)
    seconds: float
    min_pass: float = SELFTEST_MIN_PASS
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def pass_rate(self) -> float:
        n = int(self.valid.sum())
        return float((self.passed & self.valid).sum() / n) if n else float("nan")

    @property
    def strong_enough(self) -> bool:
        return bool(self.pass_rate >= self.min_pass)

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.attack, "params": self.params, "eps": self.eps, "norm": self.norm,
                "seed": self.seed, "images": int(len(self.index)), "valid": int(self.valid.sum()),
                "passed": int((self.passed & self.valid).sum()), "pass_rate": self.pass_rate,
                "min_pass": self.min_pass, "strong_enough": self.strong_enough,
                "seconds": round(self.seconds, 3), "meta": self.meta}


def _ball_points(x: torch.Tensor, k: int, eps: float, norm: str, gen: torch.Generator,
                 surface: bool) -> torch.Tensor:
    """``k`` random points per image of the eps ball (or its surface), clipped: [N, k, ...]."""
    shape = (x.shape[0], k) + tuple(x.shape[1:])
    if norm == "inf":
        u = torch.rand(shape, generator=gen, device=x.device) * 2 - 1
        d = torch.sign(u) if surface else u
    else:
        g = torch.randn(shape, generator=gen, device=x.device)
        g = g / flat_norm(g.flatten(0, 1)).view(x.shape[0], k, *([1] * (x.dim() - 1))).clamp_min(1e-12)
        if not surface:  # uniform in the ball: radius ~ U^(1/D)
            dim = x[0].numel()
            r = torch.rand((x.shape[0], k), generator=gen, device=x.device) ** (1.0 / dim)
            g = g * r.view(x.shape[0], k, *([1] * (x.dim() - 1)))
        d = g
    return (x[:, None] + eps * d).clamp(0.0, 1.0)


@torch.no_grad()
def _logits(model: nn.Module, pts: torch.Tensor) -> torch.Tensor:
    n, k = pts.shape[:2]
    return torch.cat([model(c) for c in pts.flatten(0, 1).split(1024)]).view(n, k, -1).float()


def fit_readout(f0: torch.Tensor, f1: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per image, a linear readout calling the class-0 logits ``f0`` [N, K, C] class 0 and the
    planted logits ``f1`` [N, C] class 1: (w, b, mu, sd, separable), batched over images."""
    mu = f0.mean(1)
    sd = f0.std(1).clamp_min(1e-6)
    z0, z1 = (f0 - mu[:, None]) / sd[:, None], (f1 - mu) / sd
    w = (z1 / z1.norm(dim=1, keepdim=True).clamp_min(1e-12)).clone().requires_grad_(True)
    b = torch.zeros(f0.shape[0], device=f0.device, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    with torch.enable_grad():
        for _ in range(FIT_STEPS):  # class-balanced logistic loss
            s0 = (z0 * w[:, None]).sum(-1) + b[:, None]
            s1 = (z1 * w).sum(-1) + b
            loss = nn.functional.softplus(s0).mean(1) + nn.functional.softplus(-s1)
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
    w = w.detach()
    top0, score1 = (z0 * w[:, None]).sum(-1).amax(1), (z1 * w).sum(-1)
    gap = score1 - top0
    separable = gap > 1e-6 * (1 + score1.abs())
    scale = 2.0 / gap.clamp_min(1e-12)  # planted point at +1, the highest class-0 point at -1
    return w * scale[:, None], -(top0 + score1) / 2 * scale, mu, sd, separable


def planted_model(model: nn.Module, x: torch.Tensor, eps: float, norm: str, inner: int = SELFTEST_INNER,
                  seed: int = 0) -> tuple[PlantedBinary, torch.Tensor, torch.Tensor]:
    """The binary model for images ``x``: (model, planted points [N, ...], valid [N]).

    ``valid`` is checked on the binary model itself: x and its inner points class 0, the
    planted point class 1, and every one routed to its own image.
    """
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    n = x.shape[0]
    with eval_mode(model):
        pts0 = torch.cat([x[:, None], _ball_points(x, inner, eps, norm, gen, surface=False)], 1)
        f0 = _logits(model, pts0)
        planted = torch.empty_like(x)
        w, b = torch.zeros_like(f0[:, 0]), torch.zeros(n, device=x.device)
        mu, sd = torch.zeros_like(w), torch.ones_like(w)
        valid = torch.zeros(n, dtype=torch.bool, device=x.device)
        for _ in range(PLANT_TRIES):  # a new planted point for the images not yet fitted
            todo = (~valid).nonzero()[:, 0]
            if todo.numel() == 0:
                break
            cand = _ball_points(x[todo], 1, eps, norm, gen, surface=True)
            ws, bs, ms, ss, ok = fit_readout(f0[todo], _logits(model, cand)[:, 0])
            take = todo[ok]
            w[take], b[take], mu[take], sd[take] = ws[ok], bs[ok], ms[ok], ss[ok]
            planted[take] = cand[ok, 0]
            valid[take] = True
        planted[~valid] = x[~valid]
        binary = PlantedBinary(model, x, w, b, mu, sd, norm).eval()
        with torch.no_grad():
            k = pts0.shape[1]
            own = torch.arange(n, device=x.device)
            flat = pts0.flatten(0, 1)
            zero_ok = torch.cat([binary(c).argmax(1) for c in flat.split(1024)]).view(n, k) == 0
            route_ok = torch.cat([binary.owner(c) for c in flat.split(1024)]).view(n, k) == own[:, None]
            one_ok = (binary(planted).argmax(1) == 1) & (binary.owner(planted) == own)
        valid &= zero_ok.all(1) & route_ok.all(1) & one_ok
    return binary, planted, valid


def _apart(x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Keep-mask: drop any image closer than 2 eps (in the norm) to an earlier kept one."""
    flat = x.flatten(1)
    p = math.inf if norm == "inf" else 2.0
    dist = torch.cdist(flat, flat, p=p)
    keep = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for i in range(len(x)):
        if keep[i]:
            close = dist[i] <= 2 * eps
            close[: i + 1] = False
            keep &= ~close
    return keep


def run_selftest(model: nn.Module, x: torch.Tensor, attack: str, eps: float, *, norm: str = "inf",
                 params: dict[str, Any] | None = None, inner: int = SELFTEST_INNER, seed: int = 0,
                 batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any], float]:
    """The test on images ``x`` (correctly classified by ``model``): (valid, passed, the
    attack's parameters, seconds). Images closer than 2 eps to another count as invalid."""
    from annt.attacks import check_model_supports, run_attack

    full = check_selftest_args(attack, eps, norm, inner, params)
    check_model_supports(attack, model)
    keep = _apart(x, eps, norm)
    binary, _, valid = planted_model(model, x[keep], eps, norm, inner, seed)
    y0 = torch.zeros(int(keep.sum()), dtype=torch.long, device=x.device)
    tic = time.perf_counter()
    res = run_attack(attack, binary, x[keep], y0, full, seed=seed, batch_size=batch_size)
    seconds = time.perf_counter() - tic
    adv = res.adversarial.to(x.device).clamp(0.0, 1.0)
    passed = ~robust_under(binary, x[keep], y0, adv, eps, norm)
    out_valid, out_passed = np.zeros(len(x), bool), np.zeros(len(x), bool)
    kept = keep.cpu().numpy()
    out_valid[kept] = valid.cpu().numpy()
    out_passed[kept] = passed & out_valid[kept]
    return out_valid, out_passed, full, seconds


def check_selftest_args(attack: str, eps: float, norm: str, inner: int,
                        params: dict[str, Any] | None = None) -> dict[str, Any]:
    """One line for a bad option; else the attack's parameters with the budget filled in."""
    from annt.attacks import get_attack, validate_params

    get_attack(attack)
    if norm not in NORMS:
        raise AnntError(f"selftest: norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise AnntError(f"selftest: eps must be a positive number, got {eps!r}")
    if isinstance(inner, bool) or not isinstance(inner, int) or inner < 1:
        raise AnntError(f"selftest: inner must be a positive integer, got {inner!r}")
    full = attack_params(attack, eps, norm, params)
    validate_params(attack, full)
    return full


def selftest(
    checkpoint: Any,
    dataset: str | None = None,
    *,
    attack: str,
    eps: float,
    norm: str = "inf",
    params: dict[str, Any] | None = None,
    n_images: int = SELFTEST_IMAGES,
    inner: int = SELFTEST_INNER,
    seed: int = 0,
    min_pass: float = SELFTEST_MIN_PASS,
    data_dir: Any = None,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
) -> SelftestResult:
    """The binarization test of ``attack`` on ``n_images`` seeded, correctly classified test
    images of ``dataset`` (default: the model's)."""
    from annt.data.sampling import sample_correct
    from annt.robustness.loading import model_and_test

    check_selftest_args(attack, eps, norm, inner, params)
    if not 0 <= min_pass <= 1:
        raise AnntError(f"selftest: min_pass must be between 0 and 1, got {min_pass!r}")
    model, meta, test, name, dev = model_and_test(checkpoint, dataset, data_dir, device, "selftest")
    chosen = sample_correct(model, test, n_images, seed)
    valid, passed, full, seconds = run_selftest(
        model, chosen.x.to(dev), attack, eps, norm=norm, params=params, inner=inner, seed=seed,
        batch_size=batch_size)
    return SelftestResult(
        attack=attack, params=full, eps=float(eps), norm=norm, seed=seed,
        index=chosen.index.cpu().numpy().astype(np.int64), valid=valid, passed=passed, seconds=seconds,
        min_pass=min_pass,
        meta={"checkpoint": name, "dataset": meta["dataset"], "inner": inner},
    )
