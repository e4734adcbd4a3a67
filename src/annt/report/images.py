"""Image figures: clean / adversarial / amplified-difference grids and attack progressions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from annt.report.figures import save_figure  # noqa: E402


def _show(ax, img: np.ndarray) -> None:
    """Draw one CHW image in [0, 1] (gray for one channel)."""
    img = np.clip(img, 0.0, 1.0)
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(np.transpose(img, (1, 2, 0)), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def amplified_difference(clean: np.ndarray, adv: np.ndarray) -> tuple[np.ndarray, float]:
    """``0.5 + gain * (adv - clean)`` with one gain for the whole grid so that the largest
    change reaches black or white; returns the images and the gain."""
    diff = adv - clean
    peak = float(np.abs(diff).max())
    gain = 0.5 / peak if peak > 0 else 1.0
    return 0.5 + gain * diff, gain


def adversarial_grid(
    adv: np.ndarray,
    path: Path,
    *,
    clean: np.ndarray | None = None,
    title: str = "",
    captions: Sequence[str] | None = None,
) -> Path:
    """Rows: clean, adversarial, amplified difference (or only the adversarial row without clean)."""
    n = len(adv)
    rows = 1 if clean is None else 3
    fig, axes = plt.subplots(rows, n, figsize=(1.2 * n + 0.6, 1.3 * rows + 0.4), squeeze=False)
    diff, gain = (None, 1.0) if clean is None else amplified_difference(clean, adv)
    names = ["adversarial"] if clean is None else ["clean", "adversarial", "difference"]
    for j in range(n):
        images = [adv[j]] if clean is None else [clean[j], adv[j], diff[j]]
        for i, img in enumerate(images):
            _show(axes[i][j], img)
        if captions is not None:
            axes[-1][j].set_xlabel(captions[j], fontsize=7)
    for i, name in enumerate(names):
        axes[i][0].set_ylabel(name if name != "difference" else f"diff x{gain:.1f}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def progression_grid(
    frames: np.ndarray, iterations: Sequence[int], clean: np.ndarray, path: Path, *, title: str = ""
) -> Path:
    """Rows: images; columns: the clean image, then the attack after each iteration count."""
    steps, n = frames.shape[0], frames.shape[1]
    fig, axes = plt.subplots(n, steps + 1, figsize=(1.1 * (steps + 1) + 0.4, 1.15 * n + 0.5), squeeze=False)
    for i in range(n):
        _show(axes[i][0], clean[i])
        for t in range(steps):
            _show(axes[i][t + 1], frames[t, i])
    axes[0][0].set_title("clean", fontsize=8)
    for t, it in enumerate(iterations):
        axes[0][t + 1].set_title(f"{it} it.", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
