"""Charts (matplotlib, Agg backend): transfer heat maps and metric-vs-bitwidth line plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from annt.report.aggregate import bits_label, canonical, group, ordered_bits, ordered_labels, stat  # noqa: E402
from annt.report.tables import Matrix  # noqa: E402
from annt.store.atomic import atomic_write  # noqa: E402


def save_figure(fig: Any, path: Path) -> Path:
    """Write a PNG atomically and release the figure."""
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def heatmap(matrix: Matrix, path: Path) -> Path:
    """Adversarial accuracy, source bitwidth (rows) x target bitwidth (columns), annotated."""
    rows, cols = len(matrix.bits_rows), len(matrix.bits_cols)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * cols, 0.9 + 0.6 * rows))
    im = ax.imshow(matrix.values, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(cols), [bits_label(b) for b in matrix.bits_cols])
    ax.set_yticks(range(rows), [bits_label(b) for b in matrix.bits_rows])
    ax.set_xlabel(f"target {matrix.target_model} bitwidth")
    ax.set_ylabel(f"source {matrix.source_model} bitwidth")
    ax.set_title(f"{matrix.label}: adversarial accuracy ({matrix.dataset})", fontsize=9)
    for i in range(rows):
        for j in range(cols):
            v = matrix.values[i][j]
            if not math.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if v < 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return save_figure(fig, path)


def metric_vs_bits(
    rows: Sequence[dict[str, Any]], metric: str, ylabel: str, title: str, path: Path,
    labels: Sequence[str] | None = None,
) -> Path:
    """One line per attack label: mean over runs (error bars: std) against the bitwidth.

    Lines (and legend entries) in ``labels`` order, then alphabetically; means summed in run
    order: the PNG does not depend on the order the results were stored in.
    """
    rows = canonical(rows, labels)
    bits = ordered_bits(rows, "source_bits")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    per = group(rows, ("label", "source_bits"))
    for label in ordered_labels(rows, labels):
        stats = [stat(r[metric] for r in per.get((label, b), [])) for b in bits]
        ys = [s.mean for s in stats]
        errs = [0.0 if math.isnan(s.std) else s.std for s in stats]
        if all(math.isnan(y) for y in ys):
            continue
        ax.errorbar(range(len(bits)), ys, yerr=errs, marker="o", capsize=3, label=label)
    ax.set_xticks(range(len(bits)), [bits_label(b) for b in bits])
    ax.set_xlabel("bitwidth (weights = activations)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)
