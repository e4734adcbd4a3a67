"""Structural similarity (SSIM, Wang et al. 2004), batched in torch.

Matches ``skimage.metrics.structural_similarity(a, b, data_range=1, channel_axis=0)`` with
its defaults (7x7 uniform window, sample covariance, K1 = 0.01, K2 = 0.03), or with
``gaussian=True`` its ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``.
The mean is taken over the positions where the window lies inside the image, channels
averaged, exactly as skimage crops its filtered maps.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

K1, K2 = 0.01, 0.03


def _window_1d(win_size: int, gaussian: bool, sigma: float) -> torch.Tensor:
    """The 1-D window whose outer product with itself is the 2-D SSIM window (float64)."""
    if gaussian:
        radius = int(3.5 * sigma + 0.5)  # skimage: truncate 3.5 -> 11x11 for sigma 1.5
        coords = torch.arange(-radius, radius + 1, dtype=torch.float64)
        g = torch.exp(-(coords**2) / (2 * sigma**2))
        return g / g.sum()
    return torch.full((win_size,), 1.0 / win_size, dtype=torch.float64)


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float = 1.0,
    win_size: int = 7,
    gaussian: bool = False,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Mean SSIM per sample (float64 [N]) between two image batches [N, C, H, W]."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two batches [N, C, H, W] of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    if win_size % 2 == 0 or win_size < 3:
        raise ValueError(f"SSIM window size must be odd and at least 3, got {win_size}")
    _, c, h, w = x.shape
    g = _window_1d(win_size, gaussian, sigma).to(x.device)
    k = g.numel()
    if h < k or w < k:
        raise ValueError(f"images {h}x{w} are smaller than the {k}x{k} SSIM window")
    x, y = x.double(), y.double()
    # the five local means in one separable pass ("valid": only windows inside the image):
    # rows then columns, each a grouped 1-D convolution, 2k instead of k*k products per pixel
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    groups = maps.shape[1]
    maps = F.conv2d(maps, g.view(1, 1, 1, k).expand(groups, 1, 1, k).contiguous(), groups=groups)
    maps = F.conv2d(maps, g.view(1, 1, k, 1).expand(groups, 1, k, 1).contiguous(), groups=groups)
    ux, uy, uxx, uyy, uxy = maps.split(c, dim=1)
    # skimage scales the covariances by NP / (NP - 1) unless it uses Gaussian weights
    cov_norm = 1.0 if gaussian else (k * k) / (k * k - 1.0)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1)
