"""Per-sample perturbation sizes between clean and adversarial images.

Definitions (all per sample, images in [0, 1], shape [N, C, H, W]):

* ``l0``: number of pixel positions (h, w) at which *any* channel changed by more than
  ``tol`` (default 1e-6, far below one 8-bit grey level of 1/255 but above float32 round-off).
  An RGB pixel whose three channels all change counts once, as in the paper's Table 7
  ("changed pixels"), so MNIST and CIFAR-10 counts are comparable.
* ``l2``: Euclidean norm of the difference over all values (channels included).
* ``linf``: largest absolute change of any value.
"""

from __future__ import annotations

import torch

L0_TOLERANCE = 1e-6


def _check_pair(clean: torch.Tensor, adv: torch.Tensor) -> None:
    if clean.shape != adv.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and adversarial {tuple(adv.shape)} differ in shape")
    if clean.dim() != 4:
        raise ValueError(f"expected image batches [N, C, H, W], got {tuple(clean.shape)}")


def l0_distance(clean: torch.Tensor, adv: torch.Tensor, tol: float = L0_TOLERANCE) -> torch.Tensor:
    """Changed pixel positions per sample (int64 [N]); a pixel counts once whatever its channels."""
    _check_pair(clean, adv)
    changed = (adv.double() - clean.double()).abs() > tol  # [N, C, H, W]
    return changed.any(dim=1).flatten(1).sum(dim=1)


def l2_distance(clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of the perturbation per sample (float64 [N])."""
    _check_pair(clean, adv)
    return torch.linalg.vector_norm((adv.double() - clean.double()).flatten(1), ord=2, dim=1)


def linf_distance(clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Largest absolute change per sample (float64 [N])."""
    _check_pair(clean, adv)
    return (adv.double() - clean.double()).abs().flatten(1).amax(dim=1)


def perturbation_norms(
    clean: torch.Tensor, adv: torch.Tensor, tol: float = L0_TOLERANCE
) -> dict[str, torch.Tensor]:
    """``{"l0", "l2", "linf"}`` per sample in one pass over the difference."""
    _check_pair(clean, adv)
    diff = adv.double() - clean.double()
    absdiff = diff.abs()
    return {
        "l0": (absdiff > tol).any(dim=1).flatten(1).sum(dim=1),
        "l2": torch.linalg.vector_norm(diff.flatten(1), ord=2, dim=1),
        "linf": absdiff.flatten(1).amax(dim=1),
    }
