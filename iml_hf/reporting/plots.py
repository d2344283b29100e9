"""Figures: per-stage EM panels with the headline contrast, curves over training, probe accuracy per
stage end and cosine heatmaps, all written by ``save_figure`` (PNG + PDF + SVG, atomically).

Every band is a t-interval over seeds (the figure's caption says so and gives n); colours follow the
set's role (``iml_hf.reporting.figure_style``), so tag 1 is the same blue in every task's figure; legends sit
outside the data area.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from iml_hf.reporting.figure_style import OTHER_COLOURS, set_style  # noqa: E402
from iml_hf.reporting.stats import mean_ci  # noqa: E402
from iml_hf.utils.io import write_atomic  # noqa: E402

#: The formats every figure is written in: PNG for the Markdown reports, PDF and SVG for papers.
FIGURE_FORMATS = ("png", "pdf", "svg")
#: Resolution of the PNG (``python -m iml_hf.report --dpi``).
DEFAULT_DPI = 200
#: What plots drawn during a training run write (embedding heatmaps, stage-end probes and layers):
#: a PNG at a lower resolution, so a run is not slowed; the report redraws the paper figures.
RUN_FORMATS, RUN_DPI = ("png",), 110
#: Identical input, identical files: no creation dates, fixed SVG element ids.
_METADATA = {"pdf": {"CreationDate": None, "ModDate": None}, "svg": {"Date": None}, "png": {}}
plt.rcParams.update(
    {
        "svg.hashsalt": "iml_hf",
        "font.size": 9,
        "axes.titlesize": 9,
        "legend.fontsize": 8,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)

Series = dict[str, dict[int, list[float]]]  # series name -> x -> values over seeds


def save_figure(fig, path: Path, dpi: int = DEFAULT_DPI, formats: Sequence[str] = FIGURE_FORMATS) -> Path:
    """Write ``fig`` as ``<stem>.<format>`` for each of ``formats`` (``path``'s suffix is replaced),
    each through a temporary file so no half-written image is left; close it; return the first
    written path (the PNG by default). A figure legend (outside the axes) gets the box fitted around
    it; a figure without one keeps its size (no second drawing pass)."""
    stem = Path(path).with_suffix("")
    bbox = "tight" if fig.legends else None
    try:
        for fmt in formats:
            target = stem.with_name(f"{stem.name}.{fmt}")
            write_atomic(
                target,
                functools.partial(fig.savefig, format=fmt, dpi=dpi, bbox_inches=bbox, metadata=_METADATA.get(fmt, {})),
            )
    finally:
        plt.close(fig)
    return stem.with_name(f"{stem.name}.{formats[0]}")


def _band(
    ax, xs: list[int], points: dict[int, list[float]], confidence: float, style: dict[str, Any], label: str | None
) -> None:
    """The mean over seeds at each x with its t-band (no band where one seed)."""
    summaries = [mean_ci(points[x], confidence) for x in xs]
    means = [s["mean"] for s in summaries]
    ax.plot(xs, means, label=label, lw=1.5, ms=3.5, **style)
    low = [s["ci_low"] if s["n"] > 1 else s["mean"] for s in summaries]
    high = [s["ci_high"] if s["n"] > 1 else s["mean"] for s in summaries]
    if len(xs) == 1:  # one evaluation: a band has no width, an error bar shows the interval
        ax.errorbar(
            xs,
            means,
            yerr=[[means[0] - low[0]], [high[0] - means[0]]],
            color=style.get("color"),
            capsize=2,
            lw=1,
            ls="none",
        )
    ax.fill_between(xs, low, high, alpha=0.15, color=style.get("color"), lw=0)


def _role_band(ax, points: dict[int, list[float]], confidence: float, style: Any) -> None:
    """``_band`` of one evaluation set in its role's colour, line style, marker and legend label."""
    _band(
        ax,
        sorted(points),
        points,
        confidence,
        {"color": style.colour, "ls": style.linestyle, "marker": style.marker},
        style.label,
    )


def _styles(names: list[str], task: type | None) -> dict[str, Any]:
    others = [n for n in names if set_style(n, task, []).role is None]
    return {n: set_style(n, task, others) for n in names}


def _outside_legend(fig, axes, ncol: int = 1) -> None:
    """One legend for the figure, right of the panels, from the handles of every panel (once each)."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(
            handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, ncol=ncol
        )


def stage_figure(
    em: dict[str, dict[str, dict[int, list[float]]]],
    path: Path,
    title: str,
    confidence: float = 0.95,
    task: type | None = None,
    contrast: dict[str, dict[int, list[float]]] | None = None,
    contrast_label: str = "",
    chance: Sequence[tuple[float, str]] = (),
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Exact match in one panel per stage (x: the step within the stage), as the papers lay it out:
    ``em`` is ``{stage: {set: {stage step: per-seed values}}}``. With ``contrast`` (``{stage: {step:
    per-seed differences}}``) a second row shows it with its t-band and the zero line. Chance lines
    dotted, one legend right of the panels."""
    stages = list(em)
    rows = 2 if contrast else 1
    fig, axes = plt.subplots(
        rows, len(stages), figsize=(3.3 * len(stages), 2.9 * rows), squeeze=False, sharey="row", sharex="col"
    )
    names = list(dict.fromkeys(s for per_set in em.values() for s in per_set))
    styles = _styles(names, task)
    for column, stage in enumerate(stages):
        ax = axes[0, column]
        for name in names:
            points = em[stage].get(name)
            if not points:
                continue
            _role_band(ax, points, confidence, styles[name])
        for level, words in chance:
            ax.axhline(level, color="#555555", ls=(0, (1, 2)), lw=1, label=words)
        ax.set_title(f"{stage} (stage {column + 1} of {len(stages)})")
        ax.grid(alpha=0.25)
        if column == 0:
            ax.set_ylabel("exact match")
        if contrast:
            cax = axes[1, column]
            points = contrast.get(stage) or {}
            if points:
                _band(
                    cax,
                    sorted(points),
                    points,
                    confidence,
                    {"color": "#333333", "marker": "o"},
                    f"{contrast_label}, mean over seeds",
                )
            cax.axhline(0, color="black", lw=0.8)
            cax.grid(alpha=0.25)
            if column == 0:
                cax.set_ylabel(contrast_label)
        axes[-1, column].set_xlabel("step within the stage")
        axes[-1, column].set_xlim(left=0)
    _outside_legend(fig, axes.flat)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi)


def _draw(
    ax, series: Series, boundaries: list[tuple[int, str]], ylabel: str, confidence: float, styles: dict[str, Any]
) -> None:
    for name, points in series.items():
        _role_band(ax, points, confidence, styles[name])
    top = ax.get_ylim()[1]
    start = 0
    for end, stage in boundaries:
        ax.axvline(end, color="k", ls="--", lw=0.7)
        ax.text((start + end) / 2, top, stage, ha="center", va="bottom", fontsize=8)
        start = end
    ax.set_xlabel("training step (all stages)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.25)


def curve_figure(
    panels: dict[str, Series],
    boundaries: list[tuple[int, str]],
    path: Path,
    title: str,
    ylabel: str,
    confidence: float = 0.95,
    task: type | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """One panel per entry of ``panels``: the mean over seeds of each series with a ``confidence``
    t-band, stage ends as dashed lines with the stage names above; colours by role, one legend
    right of the panels."""
    count = len(panels)
    columns = min(count, 3)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    names = list(dict.fromkeys(s for series in panels.values() for s in series))
    styles = _styles(names, task)
    for ax, (panel, series) in zip(axes.flat, panels.items()):
        _draw(ax, series, boundaries, ylabel, confidence, styles)
        if count > 1:
            ax.set_title(panel, pad=14)
    for ax in list(axes.flat)[count:]:
        ax.axis("off")
    _outside_legend(fig, axes.flat)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi)


def representation_name(metric: str) -> str:
    """A probe row's representation in words: ``layer_0`` is the embeddings' output, ``layer_i``
    the output of layer i."""
    if metric.startswith("layer_") and metric[6:].isdigit():
        index = int(metric[6:])
        return "embeddings" if index == 0 else f"layer {index}"
    return metric


def probe_figure(
    targets: dict[str, dict[str, dict[str, dict[str, list[float]]]]],
    stages: list[str],
    path: Path,
    title: str,
    confidence: float = 0.95,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Probe accuracy at each stage end, one panel per target: ``targets`` is ``{target:
    {representation: {stage: {"accuracy": per-seed values, "shuffled": ..., "chance": ...}}}}``.
    Only measured stage ends are drawn (markers with 95% t-intervals, no line between stages:
    nothing was measured in between), beside the shuffled-label control (hollow) and the chance line."""
    fig, axes = plt.subplots(1, len(targets), figsize=(max(5.5, 3.8 * len(targets)), 3.2), squeeze=False, sharey=True)
    for ax, (target, by_representation) in zip(axes.flat, targets.items()):
        count = len(by_representation)
        width = 0.7 / max(count, 1)
        chance_levels = set()
        for index, (representation, per_stage) in enumerate(by_representation.items()):
            colour = plt.get_cmap("viridis")(0.1 + 0.55 * index / max(count - 1, 1))
            shift = (index - (count - 1) / 2) * width
            for key, label, filled in (
                ("accuracy", representation, True),
                ("shuffled", f"{representation}, shuffled labels", False),
            ):
                xs, means, errors = [], [], []
                for position, stage in enumerate(stages):
                    values = (per_stage.get(stage) or {}).get(key) or []
                    if not values:
                        continue
                    s = mean_ci(values, confidence)
                    xs.append(position + shift)
                    means.append(s["mean"])
                    half = 0.0 if s["n"] < 2 else (s["ci_high"] - s["ci_low"]) / 2
                    errors.append(half)
                if xs:
                    ax.errorbar(
                        xs,
                        means,
                        yerr=errors,
                        ls="none",
                        marker="o" if filled else "s",
                        ms=5,
                        capsize=2,
                        color=colour,
                        mfc=colour if filled else "white",
                        label=label,
                    )
            for stage in stages:
                chance_levels.update((per_stage.get(stage) or {}).get("chance") or [])
        for level in sorted(chance_levels):
            ax.axhline(level, color="#555555", ls=(0, (1, 2)), lw=1, label=f"chance {level:g}")
        ax.set_xticks(range(len(stages)), [f"end of\n{s}" for s in stages])
        ax.set_xlim(-0.6, len(stages) - 0.4)
        ax.set_title(f"target: {target}")
        ax.grid(alpha=0.25, axis="y")
    axes[0, 0].set_ylabel("held-out probe accuracy")
    _outside_legend(fig, axes.flat)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi)


def save_heatmap(
    matrix: np.ndarray,
    row_buckets: list[str],
    path: Path,
    title: str,
    dpi: int = DEFAULT_DPI,
    formats: Sequence[str] = FIGURE_FORMATS,
) -> Path:
    """Heatmap of a cosine matrix with lines between referents and each subset of aliases
    (``row_buckets`` names each row's category; rows of a category are contiguous)."""
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
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
    ax.spines[["top", "right"]].set_visible(True)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi, formats)


__all__ = [
    "DEFAULT_DPI",
    "FIGURE_FORMATS",
    "RUN_DPI",
    "RUN_FORMATS",
    "OTHER_COLOURS",
    "Series",
    "curve_figure",
    "plt",
    "probe_figure",
    "representation_name",
    "save_figure",
    "save_heatmap",
    "stage_figure",
]
