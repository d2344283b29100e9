"""Figures: curves over training with confidence bands and stage boundaries, cosine heatmaps, and
the atomic PNG writer every figure of the toolkit goes through."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import numpy as np  # noqa: E402

from iml_hf.io import write_atomic  # noqa: E402
from iml_hf.stats import mean_ci  # noqa: E402
from iml_hf.tasks import eval_set_subset  # noqa: E402

#: The palette subsets take in the task's subset order, so a subset keeps its colour across figures.
PALETTE = [*(f"tab:{c}" for c in ("gray", "blue", "orange", "green", "red", "purple", "brown", "pink", "olive", "cyan")),
           "navy", "gold", "teal", "salmon", "lime", "indigo", "maroon", "black"]


def subset_colour(name: str, order: list[str]) -> str | None:
    """The colour of a set: by its subset's position in ``order`` (``assoc_<subset>`` and
    ``train_<kind>_<subset>`` share their subset's colour); None leaves it to matplotlib."""
    subset = name if name in order else eval_set_subset(name)[1]
    return PALETTE[order.index(subset) % len(PALETTE)] if subset in order else None

Series = dict[str, dict[int, list[float]]]  # series name -> x -> values over runs


def save_figure(fig, path: Path) -> None:
    """Write ``fig`` as PNG through a temporary file, so no half-written image is left, and close it."""
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110))
    finally:
        plt.close(fig)


def _draw(ax, series: Series, boundaries: list[tuple[int, str]], ylabel: str, confidence: float,
          order: list[str]) -> None:
    for name, points in series.items():
        xs = sorted(points)
        summaries = [mean_ci(points[x], confidence) for x in xs]
        means = [s["mean"] for s in summaries]
        colour = subset_colour(name, order)
        style = "--" if name.startswith("assoc_") else "-"
        ax.plot(xs, means, style, marker=".", ms=3, lw=1.4, label=name, color=colour)
        low = [s["ci_low"] if s["n"] > 1 else s["mean"] for s in summaries]
        high = [s["ci_high"] if s["n"] > 1 else s["mean"] for s in summaries]
        ax.fill_between(xs, low, high, alpha=0.2, color=colour, lw=0)
    top = ax.get_ylim()[1]
    start = 0
    for end, stage in boundaries:
        ax.axvline(end, color="k", ls="--", lw=0.7)
        ax.text((start + end) / 2, top, stage, ha="center", va="bottom", fontsize=8)
        start = end
    ax.set_xlabel("training step (all stages)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def curve_figure(
    panels: dict[str, Series],
    boundaries: list[tuple[int, str]],
    path: Path,
    title: str,
    ylabel: str,
    confidence: float = 0.95,
    order: list[str] | None = None,
) -> Path:
    """One panel per entry of ``panels``: the mean over runs of each series with a ``confidence``
    t-band, stage ends as dashed lines with the stage names above."""
    count = len(panels)
    columns = min(count, 3)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.6 * rows), squeeze=False)
    for ax, (panel, series) in zip(axes.flat, panels.items()):
        _draw(ax, series, boundaries, ylabel, confidence, order or [])
        if count > 1:
            ax.set_title(panel, fontsize=9, pad=14)
    for ax in list(axes.flat)[count:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="best", ncol=2 if len(next(iter(panels.values()))) > 8 else 1)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def save_heatmap(matrix: np.ndarray, row_buckets: list[str], path: Path, title: str) -> None:
    """Heatmap of a cosine matrix with lines between referents and each subset of aliases
    (``row_buckets`` names each row's category; rows of a category are contiguous)."""
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="cosine")
    ticks, names, start = [], [], 0
    for bucket in dict.fromkeys(row_buckets):
        count = row_buckets.count(bucket)
        ticks.append(start + count / 2)
        names.append("referents" if bucket == "referent" else bucket)
        start += count
        if start < len(row_buckets):
            ax.axhline(start - 0.5, color="k", lw=0.6)
            ax.axvline(start - 0.5, color="k", lw=0.6)
    ax.set_xticks(ticks, names, rotation=45)
    ax.set_yticks(ticks, names)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
