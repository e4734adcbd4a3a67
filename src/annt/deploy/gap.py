"""Deployment gap: inputs on which the PyTorch model and its deployed ONNX twin disagree on correctness.

For each test image and budget ``eps``, :func:`gap_search` looks inside the Linf ball (clipped to
[0,1]) for an input that the PyTorch model classifies correctly and the deployed model gets
wrong (``deployed_wrong``), or the reverse (``deployed_right``). The deployed model has no
gradients; the PyTorch twin has, so the search follows it: projected signed-gradient steps
drive the PyTorch margin ``m = z_label - max_other z`` toward a small target ``tau`` near the
decision boundary, approached from both sides (``tau`` is a multiple of the image's own clean
logit discrepancy ``max_j |z_j - z'_j|``, positive and negative, one per restart), and the
deployed model is queried on every iterate. Restart 0 starts at the clean image, the others
at uniform random points of the ball. Per image and direction the input on which the PyTorch
model is most decided (largest absolute margin) is kept, and confirmed by running both models
on it again.

A kept input whose PyTorch margin is still below :data:`TIE` is counted as a tie too: the
PyTorch model sits on its decision boundary within float rounding there, and two graphs that
compute the same function up to rounding disagree only on such inputs. (An int8 graph's
logits are themselves quantized: equal top logits, margin exactly 0, are common there, and
argmax takes the first class.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from annt.errors import AnntError

DIRECTIONS = ("deployed_wrong", "deployed_right")
"""``deployed_wrong``: PyTorch correct, deployed wrong; ``deployed_right``: the reverse."""
DEFAULT_TAUS = (0.0, 1.0, -1.0, 2.0, -2.0)
"""Restart ``r`` aims the PyTorch margin at ``TAUS[r % len] x`` the image's clean logit discrepancy."""
TIE = 1e-4
KIND = "annt-deploy-gap"


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per row (positive: classified as ``y``)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return true - other


@dataclass
class GapFound:
    """The inputs found at one budget in one direction (rows: images that admit one)."""

    index: np.ndarray  # positions among the tested images
    x: np.ndarray  # float32 [n,C,H,W]
    torch_pred: np.ndarray
    deployed_pred: np.ndarray
    torch_margin: np.ndarray
    deployed_margin: np.ndarray

    @property
    def ties(self) -> int:
        """Inputs on which the PyTorch margin is below :data:`TIE` (a float-rounding tie)."""
        return int((np.abs(self.torch_margin) < TIE).sum())


@dataclass
class GapResult:
    eps: list[float]
    images: int
    found: dict[tuple[int, str], GapFound] = field(default_factory=dict)  # (eps position, direction)
    crossed: dict[int, int] = field(default_factory=dict)  # eps position: images whose PyTorch boundary was reached
    clean: dict[str, int] = field(default_factory=dict)

    def summary(self) -> list[dict[str, Any]]:
        """Per budget: images tested, images whose PyTorch decision boundary the search reached (some
        iterate misclassified), images admitting a gap input in each direction and in either; per
        direction also the PyTorch ties (:data:`TIE`) and the deployed ties (equal top logits)."""
        rows = []
        for k, eps in enumerate(self.eps):
            row: dict[str, Any] = {"eps": eps, "images": self.images, "boundary_reached": self.crossed.get(k)}
            any_idx: set[int] = set()
            for d in DIRECTIONS:
                f = self.found[(k, d)]
                row[d] = len(f.index)
                row[f"{d}_ties"] = f.ties
                row[f"{d}_deployed_ties"] = int((f.deployed_margin == 0).sum())
                any_idx |= set(f.index.tolist())
            row["either"] = len(any_idx)
            rows.append(row)
        return rows


def _predict(deployed: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return deployed(x.detach().cpu()).to(x.device)


def _search_batch(model: nn.Module, deployed: nn.Module, x0: torch.Tensor, y: torch.Tensor, eps: float,
                  steps: int, taus: tuple[float, ...], restarts: int, gen: torch.Generator
                  ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per direction: a found mask [n] and the inputs [n,C,H,W] (one per image); ``crossed``: the
    images on which some iterate was misclassified by the PyTorch model (the search reached its
    decision boundary there)."""
    n = len(x0)
    with torch.no_grad():
        scale = (model(x0) - _predict(deployed, x0)).abs().amax(1)  # the clean logit discrepancy
    hit = {d: torch.zeros(n, dtype=torch.bool, device=x0.device) for d in DIRECTIONS}
    best = {d: x0.clone() for d in DIRECTIONS}
    score = {d: torch.full((n,), -1.0, device=x0.device) for d in DIRECTIONS}
    crossed = torch.zeros(n, dtype=torch.bool, device=x0.device)

    def record(x: torch.Tensor, logits: torch.Tensor) -> None:
        """Keep, per image and direction, the gap input with the largest absolute PyTorch margin."""
        t_ok, d_ok = logits.argmax(1) == y, _predict(deployed, x).argmax(1) == y
        crossed.logical_or_(~t_ok)
        clear = margins(logits, y).abs()
        for d, mask in (("deployed_wrong", t_ok & ~d_ok), ("deployed_right", ~t_ok & d_ok)):
            new = mask & (clear > score[d])
            best[d][new] = x[new].detach()
            score[d][new] = clear[new]
            hit[d] |= new

    lo, hi = (x0 - eps).clamp(0, 1), (x0 + eps).clamp(0, 1)
    for r in range(restarts):
        tau = taus[r % len(taus)] * scale
        if r == 0:
            x = x0.clone()
        else:
            noise = torch.rand(x0.shape, generator=gen, device="cpu").to(x0.device)
            x = lo + (hi - lo) * noise
        for t in range(steps + 1):
            x.requires_grad_(True)
            with torch.enable_grad():
                logits = model(x)
                loss = (margins(logits, y) - tau).abs().sum()
                grad = torch.autograd.grad(loss, x)[0] if t < steps else None
            record(x.detach(), logits.detach())
            if grad is None:
                break
            alpha = eps * (0.25 - 0.23 * t / max(steps - 1, 1))  # eps/4 down to eps/50
            x = torch.min(torch.max(x.detach() - alpha * grad.sign(), lo), hi)
    return {**{d: (hit[d], best[d]) for d in DIRECTIONS}, "crossed": (crossed, x0)}


def gap_search(model: nn.Module, deployed: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float], *,
               steps: int = 50, restarts: int = 5, taus: tuple[float, ...] = DEFAULT_TAUS, seed: int = 0,
               batch_size: int = 200, progress: Any = None) -> GapResult:
    """Search every image of ``x`` for a deployment-gap input at each budget of ``eps`` (Linf).

    ``model``: the PyTorch model (differentiable, eval mode); ``deployed``: its deployed twin
    (any module mapping images to logits, e.g. :func:`annt.deploy.load_deployed`). ``steps``
    gradient steps per restart, each iterate also queried on ``deployed``. Seeded: the same
    arguments give the same inputs.
    """
    if x.dim() != 4 or len(x) != len(y) or len(x) == 0:
        raise AnntError(f"gap search needs [N,C,H,W] images with N labels, got {list(x.shape)} and {len(y)}")
    if not eps or any(not (0 < e <= 1) for e in eps):
        raise AnntError(f"eps must be in (0, 1], got {eps}")
    if steps < 1 or restarts < 1:
        raise AnntError("steps and restarts must be at least 1")
    if getattr(model, "annt_differentiable", True) is False:
        raise AnntError("the gap search follows the PyTorch model's gradients; give the differentiable model"
                        " as --checkpoint and the ONNX file as --deployed")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.eval()
    result = GapResult(list(eps), len(x))
    with torch.no_grad():
        t_ok = torch.cat([model(c.to(device)).argmax(1).cpu() for c in x.split(batch_size)]) == y
        d_ok = torch.cat([deployed(c).argmax(1).cpu() for c in x.split(batch_size)]) == y
    result.clean = {"pytorch_correct": int(t_ok.sum()), "deployed_correct": int(d_ok.sum()),
                    "deployed_wrong": int((t_ok & ~d_ok).sum()), "deployed_right": int((~t_ok & d_ok).sum())}
    for k, e in enumerate(eps):
        gen = torch.Generator().manual_seed(seed + 1000003 * k)
        masks: dict[str, list[torch.Tensor]] = {d: [] for d in DIRECTIONS}
        crossed = 0
        inputs: dict[str, list[torch.Tensor]] = {d: [] for d in DIRECTIONS}
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            found = _search_batch(model, deployed, xb, yb, e, steps, taus, restarts, gen)
            crossed += int(found["crossed"][0].sum())
            for d in DIRECTIONS:
                masks[d].append(found[d][0].cpu())
                inputs[d].append(found[d][1].cpu())
            if progress is not None:
                progress(k, start + len(xb))
        result.crossed[k] = crossed
        for d in DIRECTIONS:
            result.found[(k, d)] = _confirm(model, deployed, torch.cat(inputs[d]), y, torch.cat(masks[d]), d, device)
    return result


def _confirm(model: nn.Module, deployed: nn.Module, xs: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
             direction: str, device: torch.device) -> GapFound:
    """The found inputs of one direction, run again through both models; those still a gap."""
    idx = mask.nonzero().flatten()
    xs, ys = xs[idx], y[idx]
    with torch.no_grad():
        zt = model(xs.to(device)).cpu() if len(xs) else torch.zeros(0, 1)
        zd = deployed(xs) if len(xs) else torch.zeros(0, 1)
    if len(xs):
        t_ok, d_ok = zt.argmax(1) == ys, zd.argmax(1) == ys
        keep = (t_ok & ~d_ok) if direction == "deployed_wrong" else (~t_ok & d_ok)
        idx, xs, ys, zt, zd = idx[keep], xs[keep], ys[keep], zt[keep], zd[keep]
    empty = np.zeros(0, dtype=np.float32)
    return GapFound(
        index=idx.numpy().astype(np.int64), x=xs.numpy().astype(np.float32),
        torch_pred=zt.argmax(1).numpy().astype(np.int64) if len(xs) else np.zeros(0, np.int64),
        deployed_pred=zd.argmax(1).numpy().astype(np.int64) if len(xs) else np.zeros(0, np.int64),
        torch_margin=margins(zt, ys).numpy().astype(np.float32) if len(xs) else empty,
        deployed_margin=margins(zd, ys).numpy().astype(np.float32) if len(xs) else empty,
    )


def gap_arrays(result: GapResult, labels: torch.Tensor, image_index: torch.Tensor) -> dict[str, np.ndarray]:
    """The npz members: ``eps`` and, per budget ``k`` and direction, ``e{k}_{direction}_{field}``.

    ``image_index`` is the test-split index of each found input, ``label`` its true label.
    """
    out: dict[str, np.ndarray] = {"eps": np.asarray(result.eps, dtype=np.float64)}
    for (k, d), f in sorted(result.found.items()):
        p = f"e{k}_{d}_"
        out[p + "image_index"] = image_index.numpy()[f.index].astype(np.int64)
        out[p + "label"] = labels.numpy()[f.index].astype(np.int64)
        for name in ("x", "torch_pred", "deployed_pred", "torch_margin", "deployed_margin"):
            out[p + name] = getattr(f, name)
    return out


def save_gap(out_dir: str | Path, result: GapResult, labels: torch.Tensor, image_index: torch.Tensor,
             info: dict[str, Any], device: str | torch.device | None = None) -> tuple[Path, Path]:
    """Write ``gap.npz`` (the found inputs, no pickle) and ``gap.json`` (summary, settings,
    provenance, the npz's sha256) into ``out_dir``, each atomically; returns both paths."""
    from annt.inputs.files import output_dir
    from annt.inputs.hashing import file_digest
    from annt.provenance import FIELD, provenance
    from annt.store.atomic import atomic_save_npz, atomic_write_json

    folder = output_dir(out_dir, "--out")
    npz = atomic_save_npz(folder / "gap.npz", **gap_arrays(result, labels, image_index))
    body = {"kind": KIND, **info, "eps": result.eps, "images": result.images, "clean": result.clean,
            "results": result.summary(), "tie_margin": TIE,
            "inputs": {"file": npz.name, "sha256": file_digest(npz)}, FIELD: provenance(device)}
    return npz, atomic_write_json(folder / "gap.json", body)
