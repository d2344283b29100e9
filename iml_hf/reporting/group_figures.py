"""The figures of one group of runs, each with its caption: EM per stage with the headline contrast
beneath, each measurement's curves, the probes at stage ends, the mean embedding heatmaps and, for a
branched group, the contrasts over the branch stage. Drawn by ``iml_hf.reporting.plots`` (PNG, PDF and
SVG), coloured by each set's role (``iml_hf.reporting.figure_style``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from iml_hf.measure.registry import MEASUREMENTS
from iml_hf.reporting.figure_style import ROLE_COLOURS, chance_levels, role_label, subset_roles
from iml_hf.reporting.nested_report import contrast_curve_figure
from iml_hf.reporting.plots import DEFAULT_DPI, curve_figure, probe_figure, save_heatmap, stage_figure
from iml_hf.reporting.runs import RunRecord, contrast_sets, row_family, stage_ends, stage_order
from iml_hf.reporting.series import probe_targets, row_curves, stage_series
from iml_hf.tasks import eval_set_subset, get_task_class


def figures(
    runs: list[RunRecord],
    out: Path,
    suffix: str,
    label: str,
    confidence: float,
    nested: dict[str, Any] | None = None,
    dpi: int = DEFAULT_DPI,
) -> list[tuple[Path, str]]:
    """The figures of one group with a caption each (``(png path, caption)``; PDF and SVG beside
    each PNG): EM in one panel per stage with the headline contrast beneath, each measurement's
    curves, the probes per stage end, mean heatmaps and, for a branched group, the contrasts over
    the branch stage (``nested``). Colours follow each set's role (``iml_hf.reporting.figure_style``)."""
    pct = round(100 * confidence)
    n = sample_size(runs)
    band = f"bands: {pct}% t-intervals over seeds"
    task = _task_class(runs)
    task_config = runs[0].results["recipe"].get("task") or {}
    contrasts = contrast_sets(runs[0].results)
    written: list[tuple[Path, str]] = []
    all_em = stage_series(runs)
    kinds = (
        (0, "em_curves", "Exact match per stage", "held-out questions"),
        (1, "assoc_em_curves", "Entity association per stage", "the entity-association questions"),
        (2, "train_em_curves", "Exact match on training rows per stage", "training rows (monitoring sets)"),
    )
    for place, stem, what, rows in kinds:
        em = {
            stage: {name: v for name, v in per_set.items() if eval_set_subset(name)[0] == place}
            for stage, per_set in all_em.items()
        }
        em = {stage: per_set for stage, per_set in em.items() if per_set}
        if not em:
            continue
        names = list(dict.fromkeys(s for per_set in em.values() for s in per_set))
        last = list(em)[-1]
        headline = next(((name, a, b) for name, (a, b) in contrasts.items() if a in em[last] and b in em[last]), None)
        contrast = {stage: v["contrast"] for stage, v in stage_series(runs, *headline[1:]).items()} if headline else {}
        contrast_label = f"EM({headline[1]}) - EM({headline[2]})" if headline else ""
        chance = chance_levels(task_config) if place == 0 else []
        path = stage_figure(
            em,
            out / f"{stem}{suffix}.png",
            f"{what} ({label})\n{n}; {band}",
            confidence,
            task,
            contrast or None,
            contrast_label,
            chance,
            dpi,
        )
        caption = (
            f"Exact match on {rows} at every evaluation, one panel per stage (x: step within the stage); "
            f"lines: mean over seeds, {n}; {band}. {_role_note(task, names)} Solid: sets defined only in the "
            "IML stage (and the base task); dashed: sets whose questions were also trained."
        )
        if chance:
            caption += " Dotted horizontal line: " + "; ".join(words for _, words in chance) + "."
        if headline:
            caption += (
                f" Bottom row: the declared contrast {headline[0]}, {contrast_label} per seed, its mean and "
                f"{pct}% t-interval over seeds (before the IML stage: the split's own noise)."
            )
        written.append((path, caption))
    stages = stage_order(runs)
    for spec in MEASUREMENTS.values():
        for reader in spec.report:
            if reader.family == "probes":
                targets = probe_targets(runs)
                if targets:
                    path = probe_figure(
                        targets,
                        stages,
                        out / f"{reader.family}{suffix}.png",
                        f"{reader.curve_title} ({label})\n{n}; error bars: {pct}% t-intervals over seeds",
                        confidence,
                        dpi,
                    )
                    written.append(
                        (
                            path,
                            f"Held-out accuracy of linear probes at each stage end (probes run only "
                            f"there: no line between stages), per representation; filled: probe, hollow: "
                            f"the same probe on shuffled labels, dotted: chance; {n}; error bars: "
                            f"{pct}% t-intervals over seeds.",
                        )
                    )
                continue
            curves = row_curves(
                runs,
                lambda r: (
                    (reader.metric or r["metric"], r["subset"])  # noqa: B023
                    if row_family(r) == reader.family and (reader.metric is None or r["metric"] == reader.metric)  # noqa: B023
                    else None
                ),
            )
            if curves:
                names = list(dict.fromkeys(s for series in curves.values() for s in series))
                path = curve_figure(
                    curves,
                    stage_ends(runs[0]),
                    out / f"{reader.family}{suffix}.png",
                    f"{reader.curve_title} ({label})\n{n}; {band}",
                    reader.ylabel,
                    confidence,
                    task,
                    dpi,
                )
                written.append(
                    (
                        path,
                        f"{reader.curve_title} over training (dashed verticals: stage ends); mean over "
                        f"seeds, {n}; {band}. {_role_note(task, names)} Solid: sets defined only in the "
                        "IML stage; dashed: sets whose questions were also trained.",
                    )
                )
    if nested:
        figure = contrast_curve_figure(
            nested,
            {k: list(v) for k, v in contrasts.items()},
            out / f"contrast_curves{suffix}.png",
            f"Contrasts over the branch stage ({label})",
            confidence,
            dpi,
        )
        if figure:
            written.append(
                (
                    figure,
                    f"Each declared contrast at every evaluation of the branch stage (step 0: its start, "
                    f"before training); nested mean over seeds ({n}), {band}; dashed red: the declared "
                    "read-out step.",
                )
            )
    written += [
        (
            path,
            f"Input-embedding cosines (numbers and aliases per bucket) at the end of the stage, mean over runs; {n}.",
        )
        for path in _mean_heatmaps(runs, out, suffix, dpi)
    ]
    return written


def sample_size(runs: list[RunRecord]) -> str:
    """``n = 10 seeds x 4 branches (averaged within a seed)`` or ``n = 10 seeds``."""
    seeds = sorted({r.seed for r in runs})
    branches = sorted({r.branch for r in runs if r.branch is not None})
    text = f"n = {len(seeds)} seed{'s' if len(seeds) != 1 else ''}"
    return text + (f" x {len(branches)} branches (averaged within a seed first)" if branches else "")


def _role_note(task: type | None, names: list[str]) -> str:
    """Which colour is which role, for the sets drawn."""
    roles = subset_roles(task)
    present = list(dict.fromkeys(roles[eval_set_subset(n)[1]] for n in names if eval_set_subset(n)[1] in roles))
    colour_names = {
        "#1f5fa8": "blue",
        "#c0392b": "red",
        "#2e8b57": "green",
        "#8e44ad": "purple",
        "#7f7f7f": "grey",
        "#111111": "black",
    }
    words = ", ".join(f"{colour_names[ROLE_COLOURS[r]]} {role_label(r)}" for r in present)
    return f"Colours by role, the same in every task's figures: {words}." if words else ""


def _task_class(runs: list[RunRecord]) -> type | None:
    """The runs' task class, for colours by role (None: a task this version does not know)."""
    try:
        return get_task_class(runs[0].results["recipe"]["task"]["name"])
    except (KeyError, ValueError, TypeError):
        return None


def _mean_heatmaps(runs: list[RunRecord], out: Path, suffix: str, dpi: int = DEFAULT_DPI) -> list[Path]:
    """Per stage, the mean over runs of each run's last embedding matrix of that stage. Only runs
    whose rows mean the same (bucket, number) are averaged: with ``bucket_by: number`` the buckets'
    numbers change with the seed, and then only the first run's layout is shown."""
    folders = [r.path / "embeddings" for r in runs if (r.path / "embeddings" / "labels.json").exists()]
    if not folders:
        return []
    labels = [json.loads((f / "labels.json").read_text()) for f in folders]
    layout = [
        list(zip(lab["buckets"], lab.get("row_referents", lab.get("row_numbers", [None] * len(lab["buckets"])))))
        for lab in labels
    ]
    same = [f for f, rows in zip(folders, layout) if rows == layout[0]]
    written = []
    for index, stage in enumerate(stage_order(runs)):
        matrices = []
        for folder in same:
            files = sorted(folder.glob(f"{index}-{stage}-step*.npy"), key=lambda p: int(p.stem.rsplit("step", 1)[1]))
            if files:
                matrices.append(np.load(files[-1]))
        if matrices:
            path = out / f"embeddings_{index}-{stage}{suffix}.png"
            runs_note = (
                f"mean over {len(matrices)} runs"
                if len(same) == len(folders)
                else (f"mean over the {len(matrices)} of {len(folders)} runs with the same row layout")
            )
            save_heatmap(
                np.mean(matrices, axis=0),
                labels[0]["buckets"],
                path,
                f"input-embedding cosines at the end of {stage}, {runs_note}",
                dpi,
            )
            written.append(path)
    return written
