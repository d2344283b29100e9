"""Turn a sweep (or any folder of runs) into the IML numbers and figures.

    python -m iml_hf.report runs/sweep [--confidence 0.95] [--dpi 200] [--report_dir DIR]

Reads every run's ``results.json`` and ``metrics.jsonl`` (grouped by the sweep's ``--set`` values
when ``sweep.json`` is there) and writes into the folder: ``summary.json`` and ``summary.md`` (per
stage and evaluation set the mean EM with a t-interval over seeds; every contrast the task declares
(``EM(a) - EM(b)``, e.g. the toy's ``iml_gap`` or entity QA's ``stage2_d1_vs_d2``) at every stage
end with its interval and a one-sided paired t-test; each measurement's stage-end values through
its ``iml_hf.measure.registry`` report reader), figures (PNG at ``--dpi``, PDF and SVG: EM in one panel per
stage with the headline contrast beneath, colours fixed per role across tasks, captions giving n and
the interval), every table also as CSV and LaTeX (``tables/``), the report's and the runs'
provenance, and ``report.md`` that shows them all. ``--report_dir`` writes all of it elsewhere
(``docs/results/NAME``), leaving the runs' folder as it was. JSON is strict: NaN is written as null.

Bad input never aborts the report nor slips into it: a run whose ``results.json`` cannot be read or
lacks what the report needs is skipped and listed (file and reason) in the output, summary.json
(``bad_runs``) and the Markdown files; a ``metrics.jsonl`` whose last line is cut off (what a
killed writer leaves) loses that line, with a note naming the file. Two runs of one group with the
same seed (a copied run folder) are refused (exit 2, naming both): a copy must never count twice.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iml_hf.config.resolved import configuration, configuration_defaults, same_configuration
from iml_hf.measure.registry import MEASUREMENTS
from iml_hf.reporting.figure_style import ROLE_COLOURS, chance_levels, role_label, subset_roles
from iml_hf.reporting.gate import NOT_INTERPRETABLE, gate, gated_sides
from iml_hf.reporting.nested_report import _plain, contrast_curve_figure, nested_markdown, summarize_nested
from iml_hf.reporting.nested_stats import nested_summary
from iml_hf.reporting.plots import (
    DEFAULT_DPI,
    Series,
    curve_figure,
    probe_figure,
    representation_name,
    save_heatmap,
    stage_figure,
)
from iml_hf.reporting.stats import difference, mean_ci, paired_greater
from iml_hf.reporting.tables import with_table_files
from iml_hf.tasks import eval_set_order, eval_set_subset, get_task_class, make_task
from iml_hf.utils.io import write_json_atomic


@dataclass
class RunRecord:
    """One finished run: where it is, its seed and ``--set`` values, its results and metric rows."""

    name: str
    path: Path
    seed: int
    overrides: dict[str, Any]
    results: dict[str, Any]
    rows: list[dict[str, Any]] = field(repr=False)

    @property
    def branch(self) -> int | None:
        """The stage-2 branch this run is (``iml_hf.training.branching``), or None for a plain run."""
        return ((self.results.get("recipe") or {}).get("task") or {}).get("branch")


class BadRun(ValueError):
    """A run the report cannot use: ``path`` is the file, the message says why."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class DuplicateRuns(ValueError):
    """Two runs of one group have the same seed: one is a copy of the other, or the group mixes runs."""


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def results_problem(results: Any) -> str | None:
    """What a results.json lacks for the report (its recipe's seed, its stages with steps and EM
    values, its wall time), or None when it is usable."""
    if not isinstance(results, dict):
        return f"not a JSON object but {type(results).__name__}"
    missing = [key for key in ("recipe", "stages", "wall_time_s") if key not in results]
    if missing:
        return f"missing required key(s) {', '.join(missing)}" + ("" if results else " (the file is {})")
    recipe = results["recipe"]
    if not isinstance(recipe, dict) or not isinstance(recipe.get("seed"), int) or isinstance(recipe.get("seed"), bool):
        return "recipe.seed is missing or not an integer"
    if "subsets" not in results and not isinstance(recipe.get("task"), dict):
        return "neither subsets nor recipe.task is recorded"
    if not _number(results["wall_time_s"]):
        return "wall_time_s is not a number"
    stages = results["stages"]
    if not isinstance(stages, dict) or not stages:
        return "stages is empty or not an object"
    for name, stage in stages.items():
        if (
            not isinstance(stage, dict)
            or not isinstance(stage.get("em"), dict)
            or not isinstance(stage.get("steps"), int)
        ):
            return f"stage {name!r} lacks its em values or steps"
        bad = [s for s, v in stage["em"].items() if not _number(v)]
        if bad:
            return f"stage {name!r}: em[{bad[0]!r}] is not a number"
    return None


def _read_metrics(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl; a last line cut off by a killed writer is left out (with a
    note), any other unreadable line makes the run bad."""
    if not path.exists():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise BadRun(path, f"unreadable ({error})") from None
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    rows = []
    for index, (number, line) in enumerate(numbered):
        try:
            row = json.loads(line)
        except ValueError as error:
            if index == len(numbered) - 1:
                notes.append(
                    f"{path}: skipped its last line {number}, cut off ({error}): a killed writer's partial line"
                )
                break
            raise BadRun(path, f"line {number} is not a JSON object ({error})") from None
        if not isinstance(row, dict):
            raise BadRun(path, f"line {number} is not a JSON object but {type(row).__name__}")
        rows.append(row)
    return rows


def _read_run(name: str, path: Path, overrides: dict[str, Any], notes: list[str]) -> RunRecord:
    """One run folder; BadRun (naming the file and why) if it cannot be used."""
    file = path / "results.json"
    try:
        results = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise BadRun(file, f"unreadable ({error})") from None
    except ValueError as error:
        raise BadRun(file, f"not valid JSON ({error})") from None
    problem = results_problem(results)
    if problem:
        raise BadRun(file, problem)
    rows = _read_metrics(path / "metrics.jsonl", notes)
    return RunRecord(name, path, int(results["recipe"]["seed"]), overrides, results, rows)


@dataclass
class Loaded:
    """What ``load_runs`` found: the usable runs, the manifest's runs without results, the
    skipped bad runs ({"path", "reason"}) and notes (lines left out of a metrics.jsonl)."""

    runs: list[RunRecord]
    missing: list[str]
    bad: list[dict[str, str]]
    notes: list[str]


def load_runs(root: Path) -> Loaded:
    """The finished runs under ``root`` and a line for every run of the manifest that is missing;
    bad runs are skipped and listed. An unreadable manifest is an error naming it."""
    manifest = root / "sweep.json"
    runs: list[RunRecord] = []
    missing: list[str] = []
    bad: list[dict[str, str]] = []
    notes: list[str] = []

    def read(name: str, path: Path, overrides: dict[str, Any]) -> None:
        try:
            runs.append(_read_run(name, path, overrides, notes))
        except BadRun as error:
            bad.append({"path": str(error.path), "reason": error.reason})

    if manifest.exists():
        try:
            entries = json.loads(manifest.read_text())["runs"]
            entries = [(e["name"], dict(e.get("overrides") or {}), e) for e in entries]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(
                f"{manifest} is not a readable sweep manifest ({type(error).__name__}: {error}); "
                f"move it aside to report the runs found under {root}"
            ) from None
        for name, overrides, entry in entries:
            path = root / name
            if (path / "results.json").exists():
                read(name, path, overrides)
            else:
                missing.append(f"{name}: no results.json (status {entry.get('status')}, log {entry.get('log')})")
    else:
        for results in sorted(root.rglob("results.json")):
            if results.parent.name == "trunk" and any(results.parent.parent.glob("branch*/results.json")):
                continue  # a branched run's trunk: its branches carry its stages
            read(str(results.parent.relative_to(root)), results.parent, {})
    _infer_overrides(runs)
    return Loaded(runs, missing, bad, notes)


#: Keys that tell a run's branch, not its configuration: branches of one recipe are one group.
BRANCH_KEYS = {"task.branch"}


def _infer_overrides(runs: list[RunRecord]) -> None:
    """A run's overrides are its ``--set`` values (from the manifest) plus the recipe keys (other than
    seed and paths) whose values differ between the runs, so runs of different configurations are
    never pooled, manifest or not. A key that runs recorded before it existed lack counts as equal
    when the others hold its default (``same_configuration``)."""
    if not runs:
        return
    flat = [configuration(r.results["recipe"], with_seed=False) for r in runs]
    keys = set().union(*flat)
    defaults: dict[str, Any] = {}
    if any(len(f) != len(keys) for f in flat):  # some run lacks a key: only then work out the defaults
        try:
            defaults = configuration_defaults(runs[-1].results["recipe"])
        except Exception:  # noqa: BLE001 - without defaults a missing key simply differs
            defaults = {}
    # same_configuration compares values with the defaults filled in, an equality: comparing every
    # run with the first finds every key on which any two runs differ
    differing = sorted({k for f in flat[1:] for k in same_configuration(flat[0], f, defaults)} - BRANCH_KEYS)
    for run, values in zip(runs, flat):
        for key in differing:
            if key not in run.overrides:
                run.overrides[key] = values[key] if key in values else defaults.get(key, "<absent>")


def group_runs(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """Runs with the same ``--set`` values (and configuration), in first-seen order; the key is a
    readable label. Two runs of one group with the same seed are refused (DuplicateRuns naming both):
    a copied or twice-collected run must never count as two seeds."""
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        label = ", ".join(f"{k}={v}" for k, v in run.overrides.items()) or "all runs"
        groups.setdefault(label, []).append(run)
    for label, members in groups.items():
        seen: dict[tuple[int, int | None], RunRecord] = {}
        for run in members:
            key = (run.seed, run.branch)
            if key in seen:
                what = f"seed {run.seed}" + ("" if run.branch is None else f", branch {run.branch},")
                raise DuplicateRuns(
                    f"{seen[key].path} and {run.path} are both {what} of the group '{label}' (the same "
                    "configuration): one is a copy or a rerun of the other; move one of them out of the folder so "
                    "that no run counts twice"
                )
            seen[key] = run
    return groups


def _family(row: dict[str, Any]) -> str:
    """The measurement family of a metrics.jsonl row (rows written before ``family`` existed: EM
    rows had bare metric names, the others ``<family>/<metric>``)."""
    if "family" in row:
        return row["family"]
    return (
        row["metric"].split("/", 1)[0] if "/" in row["metric"] else ("eval" if row["metric"] == "em" else "embedding")
    )


def _stage_ends(run: RunRecord) -> list[tuple[int, str]]:
    ends, total = [], 0
    for stage, entry in run.results["stages"].items():
        total += entry["steps"]
        ends.append((total, stage))
    return ends


def _subsets(results: dict[str, Any]) -> list[str]:
    """The task's subsets in display order (results written before ``subsets`` existed: the task's)."""
    return results.get("subsets") or list(make_task(results["recipe"]["task"]).subsets)


def _contrast_sets(results: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The run's task-declared contrasts (results written before contrasts existed: the task's)."""
    if "contrast_sets" in results:
        return {name: (a, b) for name, a, b in results["contrast_sets"]}
    return dict(make_task(results["recipe"]["task"]).contrasts)


def _nested_cell(values: list[tuple[RunRecord, float | None]], confidence: float) -> dict[str, Any]:
    """One table cell over seeds from each run's value (None: not measured): a seed's branches are
    averaged first (``nested_stats.nested_summary``); a plain run is its seed's only value."""
    triples = [(r.seed, 0 if r.branch is None else r.branch, v) for r, v in values if v is not None]
    return _plain(nested_summary(triples, confidence))


def gates(runs: list[RunRecord], contrasts: dict[str, tuple[str, str]], confidence: float) -> dict[str, Any]:
    """The interpretability gate (``iml_hf.reporting.gate``) of every contrast whose sides the task gives a
    no-definition level, at every stage end, and the task's base-task sets' EM beside it."""
    task = get_task_class(runs[0].results["recipe"]["task"]["name"])
    baselines = getattr(task, "definition_baselines", {})
    out: dict[str, Any] = {"contrasts": {}, "base_task": {}}
    for stage in runs[0].results["stages"]:
        units = [(r.seed, r.branch, r.results["stages"][stage]["em"]) for r in runs]
        for name, (a, b) in contrasts.items():
            sides = gated_sides(baselines, a, b)
            result = gate(units, sides, confidence) if sides else None
            if result:
                out["contrasts"].setdefault(name, {})[stage] = result
        for base in getattr(task, "base_task_sets", ()):
            if any(base in r.results["stages"][stage]["em"] for r in runs):
                out["base_task"].setdefault(stage, {})[base] = _nested_cell(
                    [(r, r.results["stages"][stage]["em"].get(base)) for r in runs], confidence
                )
    return out


def summarize(runs: list[RunRecord], confidence: float = 0.95) -> dict[str, Any]:
    """The numbers of one group of runs (same recipe and ``--set`` values, different seeds): EM per
    stage and set, every contrast at every stage end with a one-sided paired t-test, and each
    measurement's stage-end values (and, for each contrast of two measured subsets, its test)."""
    if any(r.branch is not None for r in runs):
        return summarize_branched(runs, confidence)
    first = runs[0].results
    stages = list(first["stages"])
    # results.json stores keys sorted: put the sets back in the task's order
    sets = eval_set_order(
        list(dict.fromkeys(s for stage in first["stages"].values() for s in stage["em"])), _subsets(first)
    )
    contrasts = _contrast_sets(first)
    summary: dict[str, Any] = {
        "runs": len(runs),
        "seeds": sorted(r.seed for r in runs),
        "stage_ends": _stage_ends(runs[0]),
        "contrast_sets": {name: list(pair) for name, pair in contrasts.items()},
        "em": {
            stage: {
                s: mean_ci(
                    [r.results["stages"][stage]["em"][s] for r in runs if s in r.results["stages"][stage]["em"]],
                    confidence,
                )
                for s in sets
                if s in first["stages"][stage]["em"]
            }
            for stage in stages
        },
        "contrasts": {},
        "wall_time_s": mean_ci([r.results["wall_time_s"] for r in runs], confidence),
    }
    for name, (a, b) in contrasts.items():
        per_stage: dict[str, dict[str, Any]] = {}
        for stage in stages:
            if all({a, b} <= set(r.results["stages"][stage]["em"]) for r in runs):
                ems = [(r.results["stages"][stage]["em"][a], r.results["stages"][stage]["em"][b]) for r in runs]
                per_stage[stage] = paired_greater([x for x, _ in ems], [y for _, y in ems], confidence)
                per_stage[stage]["per_run"] = {
                    r.name: None if x is None or y is None else x - y for r, (x, y) in zip(runs, ems)
                }
        if per_stage:
            summary["contrasts"][name] = per_stage
    for spec in MEASUREMENTS.values():
        for reader in spec.report:
            if not all(spec.result_key in r.results["stages"][stages[-1]] for r in runs):
                continue
            values = {
                stage: [reader.read(r.results["stages"][stage][spec.result_key]) for r in runs] for stage in stages
            }
            names = [s for s in values[stages[-1]][0]]
            table = {
                stage: {s: mean_ci([v[s] for v in values[stage] if s in v], confidence) for s in names}
                for stage in stages
            }
            tests = {}
            for name, (a, b) in contrasts.items():
                if {a, b} <= set(names):
                    tests[name] = {
                        stage: paired_greater([v[a] for v in values[stage]], [v[b] for v in values[stage]], confidence)
                        for stage in stages
                    }
            summary[spec.result_key] = {"at_stage_end": table, "contrasts": tests}
    return summary


def summarize_branched(runs: list[RunRecord], confidence: float = 0.95) -> dict[str, Any]:
    """A branched group: EM per stage and set averaged over branches within a seed and then over
    seeds, and every contrast nested (``iml_hf.reporting.nested_report``)."""
    first = runs[0].results
    stages = list(first["stages"])
    sets = eval_set_order(
        list(dict.fromkeys(s for stage in first["stages"].values() for s in stage["em"])), _subsets(first)
    )
    contrasts = _contrast_sets(first)
    seeds = sorted({r.seed for r in runs})
    em = {
        stage: {
            s: _nested_cell([(r, r.results["stages"][stage]["em"].get(s)) for r in runs], confidence)
            for s in sets
            if any(s in r.results["stages"][stage]["em"] for r in runs)
        }
        for stage in stages
    }
    nested = summarize_nested(runs, contrasts, confidence)
    measured = {}
    for spec in MEASUREMENTS.values():
        for reader in spec.report:
            if not all(spec.result_key in r.results["stages"][stages[-1]] for r in runs):
                continue
            values = {
                stage: [
                    (r, reader.read(r.results["stages"][stage][spec.result_key]))
                    for r in runs
                    if spec.result_key in r.results["stages"][stage]
                ]
                for stage in stages
            }
            names = list(values[stages[-1]][0][1])

            def nest(stage: str, pick) -> dict[str, Any]:
                return _nested_cell([(r, pick(v)) for r, v in values[stage]], confidence)  # noqa: B023

            measured[spec.result_key] = {
                "at_stage_end": {stage: {n: nest(stage, lambda v, n=n: v.get(n)) for n in names} for stage in stages},
                "contrasts": {
                    name: {stage: nest(stage, lambda v, a=a, b=b: difference(v, a, b)) for stage in stages}
                    for name, (a, b) in contrasts.items()
                    if {a, b} <= set(names)
                },
            }
    return {
        "runs": len(runs),
        "seeds": seeds,
        "branches": sorted({r.branch for r in runs}),
        "stage_ends": _stage_ends(runs[0]),
        "contrast_sets": {name: list(pair) for name, pair in contrasts.items()},
        "em": em,
        "contrasts": {name: entry["per_stage"] for name, entry in nested.items() if entry["per_stage"]},
        "nested": nested,
        "wall_time_s": mean_ci([r.results["wall_time_s"] for r in runs], confidence),
        "branch_stage_seconds": mean_ci(
            [sum(e["wall_time_s"] for e in r.results["stages"].values() if not e.get("shared_trunk")) for r in runs],
            confidence,
        ),
        **measured,
    }


def _cell(s: dict[str, float], signed: bool = False) -> str:
    """``mean [low, high]`` to three decimals (with a sign for differences and cosines)."""
    if not s or s["n"] == 0 or math.isnan(s["mean"]):
        return "-"
    spec = "+.3f" if signed else ".3f"
    interval = "" if s["n"] < 2 or math.isnan(s["ci_low"]) else f" [{s['ci_low']:{spec}}, {s['ci_high']:{spec}}]"
    return f"{s['mean']:{spec}}{interval}"


def _table(
    title: str, rows: dict[str, dict[str, dict[str, float]]], signed: bool = False, transpose: bool = False
) -> list[str]:
    """A Markdown table of ``{stage: {column: summary}}``; ``transpose`` puts stages in columns
    (for many evaluation sets)."""
    stages = list(rows)
    columns = list(dict.fromkeys(c for values in rows.values() for c in values))
    if transpose:
        lines = [f"**{title}**", "", "| set | " + " | ".join(stages) + " |", "|---" * (len(stages) + 1) + "|"]
        lines += [
            f"| {c} | " + " | ".join(_cell(rows[stage].get(c, {}), signed) for stage in stages) + " |" for c in columns
        ]
        return lines + [""]
    lines = [f"**{title}**", "", "| stage | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [
        f"| {stage} | " + " | ".join(_cell(values.get(c, {}), signed) for c in columns) + " |"
        for stage, values in rows.items()
    ]
    return lines + [""]


def _test_line(name: str, test: dict[str, float], confidence: float) -> str:
    pct = round(100 * confidence)
    return (
        f"{name}: mean {test['mean']:+.4f}, {pct}% CI [{test['ci_low']:+.4f}, {test['ci_high']:+.4f}], "
        f"one-sided paired t-test t = {test['t']:.2f}, p = {test['p_value']:.4g} (n = {test['n']})"
    )


def group_markdown(label: str, summary: dict[str, Any], confidence: float) -> list[str]:
    """The tables and test lines of one group, in Markdown."""
    pct = round(100 * confidence)
    lines = [
        f"## {label}",
        "",
        f"{summary['runs']} runs, seeds {summary['seeds']}; "
        f"mean wall time {summary['wall_time_s']['mean']:.0f} s per run.",
        "",
    ]
    lines += gate_markdown(summary, confidence)
    if "nested" in summary:
        lines[2] = (
            f"{len(summary['seeds'])} seeds x {len(summary['branches'])} branches ({summary['runs']} runs), "
            f"seeds {summary['seeds']}; every interval below is over seeds (branches averaged within a seed "
            "first); mean time of a branch's own stages "
            f"{summary['branch_stage_seconds']['mean']:.0f} s."
        )
        last = list(summary["em"])[-1]
        verdicts = {name: _gate_verdict(summary, name, last) for name in summary["nested"]}
        lines += nested_markdown(summary["nested"], summary["contrast_sets"], confidence, verdicts)
    if summary["contrasts"]:
        test = (
            "one-sided t-test over seeds of the branch-averaged difference (stages before the branch stage: "
            "the trunk's own split)"
            if "nested" in summary
            else "one-sided paired t-test of a > b"
        )
        lines += [
            f"**Contrasts** EM(a) - EM(b) at the end of each stage: mean [{pct}% CI] over seeds, {test}",
            "",
            "| contrast | stage | mean [CI] | t | p | n |",
            "|---|---|---|---|---|---|",
        ]
        for name, per_stage in summary["contrasts"].items():
            a, b = summary["contrast_sets"][name]
            for stage, test in per_stage.items():
                t = "-" if math.isnan(test["t"]) else f"{test['t']:.2f}"
                p = "-" if math.isnan(test["p_value"]) else f"{test['p_value']:.4g}"
                if _gate_verdict(summary, name, stage) == NOT_INTERPRETABLE:
                    t, p = "-", NOT_INTERPRETABLE
                lines.append(f"| {name} ({a} - {b}) | {stage} | {_cell(test, signed=True)} | {t} | {p} | {test['n']} |")
        lines.append("")
    lines += _table(
        f"Exact match at the end of each stage (mean [{pct}% CI] over seeds)", summary["em"], transpose=True
    )
    for spec in MEASUREMENTS.values():
        for reader in spec.report:
            if spec.result_key in summary:
                lines += _table(reader.title, summary[spec.result_key]["at_stage_end"], signed=True)
                for name, per_stage in summary[spec.result_key]["contrasts"].items():
                    for stage, test in per_stage.items():
                        if not math.isnan(test["t"]):
                            lines += [
                                _test_line(f"{name} ({reader.family}) at the end of {stage}", test, confidence),
                                "",
                            ]
    return lines


def _curves(runs: list[RunRecord], select) -> dict[str, Series]:
    """Per panel and series, the values at each step, one per seed (the branches of a seed are
    averaged first: seeds are the replicates)."""
    collected: dict[str, dict[str, dict[int, dict[int, list[float]]]]] = {}
    for run in runs:
        for row in run.rows:
            picked = select(row) if row.get("value") is not None else None  # null: NaN written as strict JSON
            if picked:
                panel, series = picked
                (
                    collected.setdefault(panel, {})
                    .setdefault(series, {})
                    .setdefault(row["global_step"], {})
                    .setdefault(run.seed, [])
                    .append(row["value"])
                )
    return {
        panel: {
            series: {step: [sum(v) / len(v) for v in per_seed.values()] for step, per_seed in steps.items()}
            for series, steps in by_series.items()
        }
        for panel, by_series in collected.items()
    }


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
    for index, stage in enumerate(_stage_order(runs)):
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


def _stage_order(runs: list[RunRecord]) -> list[str]:
    """The stages in training order (results.json sorts its keys; the rows carry ``stage_index``)."""
    index = {r["stage"]: r["stage_index"] for run in runs for r in run.rows if "stage" in r and "stage_index" in r}
    stages = list(runs[0].results["stages"])
    return sorted(stages, key=lambda s: (index.get(s, len(stages)), stages.index(s)))


def _per_seed(values: dict[int, list[float]]) -> list[float]:
    """One value per seed: the mean of its branches."""
    return [sum(v) / len(v) for v in values.values()]


def stage_series(
    runs: list[RunRecord], a: str | None = None, b: str | None = None
) -> dict[str, dict[str, dict[int, list[float]]]]:
    """Held-out EM per stage, set and step within the stage (``{stage: {set: {step: per-seed
    values}}}``, branches averaged within a seed); with ``a`` and ``b`` instead the difference
    EM(a) - EM(b) per stage and step (``{stage: {"contrast": {step: per-seed values}}}``)."""
    collected: dict[str, dict[str, dict[int, dict[int, list[float]]]]] = {}
    for run in runs:
        at: dict[tuple[str, int], dict[str, float]] = {}
        for r in run.rows:
            if _family(r) == "eval" and r.get("metric") == "em" and r.get("value") is not None and "stage_step" in r:
                at.setdefault((r["stage"], r["stage_step"]), {})[r["subset"]] = r["value"]
        for (stage, step), em in at.items():
            if a is None:
                for name, value in em.items():
                    (
                        collected.setdefault(stage, {})
                        .setdefault(name, {})
                        .setdefault(step, {})
                        .setdefault(run.seed, [])
                        .append(value)
                    )
            elif b is not None and (delta := difference(em, a, b)) is not None:
                (
                    collected.setdefault(stage, {})
                    .setdefault("contrast", {})
                    .setdefault(step, {})
                    .setdefault(run.seed, [])
                    .append(delta)
                )
    order = _stage_order(runs)
    return {
        stage: {
            name: {step: _per_seed(per_seed) for step, per_seed in sorted(steps.items())}
            for name, steps in collected[stage].items()
        }
        for stage in order
        if stage in collected
    }


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
    try:
        return get_task_class(runs[0].results["recipe"]["task"]["name"])
    except (KeyError, ValueError, TypeError):
        return None


def _probe_targets(runs: list[RunRecord]) -> dict[str, dict[str, dict[str, dict[str, list[float]]]]]:
    """Probe rows as ``{target: {representation: {stage: {"accuracy", "shuffled", "chance": per-seed
    values}}}}`` (branches averaged within a seed)."""
    collected: dict[tuple[str, str, str, str], dict[int, list[float]]] = {}
    for run in runs:
        for r in run.rows:
            if _family(r) != "probes" or r.get("value") is None:
                continue
            for key, value in (("accuracy", r["value"]), ("shuffled", r.get("shuffled")), ("chance", r.get("chance"))):
                if value is not None:
                    collected.setdefault(
                        (r["subset"], representation_name(r["metric"]), r["stage"], key), {}
                    ).setdefault(run.seed, []).append(value)
    out: dict[str, dict[str, dict[str, dict[str, list[float]]]]] = {}
    for (target, representation, stage, key), per_seed in collected.items():
        out.setdefault(target, {}).setdefault(representation, {}).setdefault(stage, {})[key] = _per_seed(per_seed)
    return out


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
    contrasts = _contrast_sets(runs[0].results)
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
    stages = _stage_order(runs)
    for spec in MEASUREMENTS.values():
        for reader in spec.report:
            if reader.family == "probes":
                targets = _probe_targets(runs)
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
            curves = _curves(
                runs,
                lambda r: (
                    (reader.metric or r["metric"], r["subset"])  # noqa: B023
                    if _family(r) == reader.family and (reader.metric is None or r["metric"] == reader.metric)  # noqa: B023
                    else None
                ),
            )
            if curves:
                names = list(dict.fromkeys(s for series in curves.values() for s in series))
                path = curve_figure(
                    curves,
                    _stage_ends(runs[0]),
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


def _with_gates(summary: dict[str, Any], runs: list[RunRecord], confidence: float) -> dict[str, Any]:
    summary["gate"] = gates(runs, {k: tuple(v) for k, v in summary["contrast_sets"].items()}, confidence)
    return summary


def _gate_verdict(summary: dict[str, Any], name: str, stage: str) -> str | None:
    return ((summary.get("gate") or {}).get("contrasts", {}).get(name, {}).get(stage) or {}).get("verdict")


def gate_markdown(summary: dict[str, Any], confidence: float) -> list[str]:
    """Each gated contrast at each stage end: both sides' rise over their no-definition level and
    the verdict; the base-task sets' EM beside it."""
    gated = summary.get("gate") or {}
    if not gated.get("contrasts"):
        return []
    pct = round(100 * confidence)
    lines = [
        f"**Interpretability gate**: is each side of a contrast above its no-definition level? "
        f"(rise = EM(side) - baseline, mean [{pct}% CI] over seeds; a contrast is read only if some side rose)",
        "",
        "| contrast | stage | rise of a | rise of b | verdict |",
        "|---|---|---|---|---|",
    ]
    for name, per_stage in gated["contrasts"].items():
        a, b = summary["contrast_sets"][name]
        for stage, entry in per_stage.items():
            cells = []
            for side in (a, b):
                rise = _plain(entry["rises"][side])
                base = entry["rises"][side]["baseline"]
                cells.append(f"{side} - {base}: {_cell(rise, signed=True)}")
            lines.append(f"| {name} | {stage} | {cells[0]} | {cells[1]} | {entry['verdict']} |")
    lines.append("")
    if gated.get("base_task"):
        lines += _table(
            f"Base task: exact match at the end of each stage (mean [{pct}% CI] over seeds)", gated["base_task"]
        )
    return lines


def report_provenance(argv: list[str] | None = None) -> dict[str, Any] | None:
    """The report's own provenance (``iml_hf.utils.provenance``: versions, commit, date, command), or None
    where that module is missing."""
    try:
        from iml_hf.utils.provenance import provenance
    except ImportError:
        return None
    return provenance(argv)


def _pick(record: dict[str, Any], *keys: str) -> Any:
    return next((record[k] for k in keys if record.get(k) not in (None, "", {})), None)


def provenance_line(record: dict[str, Any] | None) -> str:
    """A provenance record in one line: commit, date, the main package versions, the command."""
    if not record:
        return "not recorded"
    parts = []
    git = record.get("git")
    if not isinstance(git, dict):
        git = {}
    commit = git.get("commit") or _pick(record, "git_commit", "commit")
    if commit:
        parts.append(f"commit {str(commit)[:12]}" + (" with uncommitted changes" if git.get("dirty") else ""))
    else:
        parts.append("no git commit (not run from a git checkout)")
    date = _pick(record, "date", "time", "created")
    if date:
        parts.append(str(date))
    versions = _pick(record, "versions", "packages") or {}
    if isinstance(versions, dict) and versions:
        parts.append(", ".join(f"{k} {v}" for k, v in list(versions.items())[:6]))
    command = _pick(record, "command", "argv")
    if command:
        parts.append(f"`{command if isinstance(command, str) else ' '.join(map(str, command))}`")
    return "; ".join(parts)


def runs_provenance(runs: list[RunRecord]) -> dict[str, Any]:
    """What the runs' results.json recorded of their provenance: how many carry it and each
    distinct commit and package versions with its number of runs (runs made before results.json
    had provenance carry none)."""
    recorded = [r.results["provenance"] for r in runs if isinstance(r.results.get("provenance"), dict)]
    distinct: dict[str, dict[str, Any]] = {}
    for record in recorded:
        key = json.dumps(
            {k: record.get(k) for k in sorted(record) if k not in ("date", "command", "argv", "time")},
            sort_keys=True,
            default=str,
        )
        entry = distinct.setdefault(key, {"runs": 0, "example": record})
        entry["runs"] += 1
    return {
        "runs": len(runs),
        "recorded": len(recorded),
        "distinct": [{"runs": e["runs"], **e["example"]} for e in distinct.values()],
    }


def provenance_markdown(own: dict[str, Any] | None, runs: dict[str, Any]) -> list[str]:
    """The report's provenance and the runs' recorded provenance, a line each."""
    lines = [f"Report made with: {provenance_line(own)}."]
    if not runs["recorded"]:
        lines.append(
            f"Runs' provenance: not recorded by any of the {runs['runs']} runs (made before results.json carried it)."
        )
    else:
        missing = runs["runs"] - runs["recorded"]
        lines.append(
            f"Runs' provenance ({runs['recorded']} of {runs['runs']} runs recorded it"
            + (f"; {missing} older runs did not" if missing else "")
            + "):"
        )
        lines += [f"- {entry['runs']} run(s): {provenance_line(entry)}" for entry in runs["distinct"]]
    return lines + [""]


def build_report(
    root: Path,
    confidence: float = 0.95,
    dpi: int = DEFAULT_DPI,
    report_dir: Path | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Write summary.json, summary.md, the figures (PNG, PDF, SVG), the tables (CSV, LaTeX) and
    report.md into ``report_dir`` (default: ``root``, the folder of runs); return the summary."""
    out = Path(report_dir) if report_dir is not None else Path(root)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_runs(root)
    runs, problems = loaded.runs, loaded.missing
    if not runs:
        bad = "".join(f"\n  skipped {b['path']}: {b['reason']}" for b in loaded.bad)
        raise ValueError(f"no finished runs (results.json) under {root}" + bad)
    groups = group_runs(runs)
    own = report_provenance(argv)
    recorded = runs_provenance(runs)
    summary: dict[str, Any] = {
        "confidence": confidence,
        "groups": {},
        "missing_runs": problems,
        "bad_runs": loaded.bad,
        "notes": loaded.notes,
        "provenance": own,
        "runs_provenance": recorded,
    }
    skipped = _problem_lines(loaded)
    md = ["# Summary", ""] + skipped
    report = ["# IML report", "", f"{len(runs)} finished runs in `{root}`, {len(groups)} group(s).", ""]
    report += provenance_markdown(own, recorded)
    if problems:
        report += ["Missing runs:", ""] + [f"- {p}" for p in problems] + [""]
    report += skipped
    taken: set[str] = set()
    for index, (label, members) in enumerate(groups.items()):
        group = _with_gates(summarize(members, confidence), members, confidence)
        group["overrides"] = members[0].overrides
        summary["groups"][label] = group
        suffix = "" if len(groups) == 1 else f"_g{index}"
        section = with_table_files(
            group_markdown(label, group, confidence), out / "tables", f"g{index}_" if len(groups) > 1 else "", taken
        )
        md += section
        report += section
        for number, (path, caption) in enumerate(
            figures(members, out, suffix, label, confidence, group.get("nested"), dpi), 1
        ):
            report += [
                f"![{path.stem}]({path.name})",
                "",
                f"*Figure {index + 1}.{number}* ([PDF]({path.stem}.pdf), [SVG]({path.stem}.svg)). {caption}",
                "",
            ]
    write_json_atomic(out / "summary.json", summary)
    for name, lines in (("summary.md", md), ("report.md", report)):
        (out / name).write_text("\n".join(lines) + "\n")
    return summary


def _problem_lines(loaded: Loaded) -> list[str]:
    """Markdown lines listing the skipped bad runs and the notes (empty when there are none)."""
    lines = []
    if loaded.bad:
        lines += (
            ["Skipped runs (not in any number below):", ""]
            + [f"- `{b['path']}`: {b['reason']}" for b in loaded.bad]
            + [""]
        )
    if loaded.notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in loaded.notes] + [""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iml_hf.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="a sweep folder (with sweep.json) or any folder of runs")
    parser.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="level of every interval and band (default 0.95: 95%% t-intervals over seeds)",
    )
    parser.add_argument(
        "--dpi",
        type=int,
        default=DEFAULT_DPI,
        help=f"resolution of the PNG figures (default {DEFAULT_DPI}); PDF and SVG are vector files",
    )
    parser.add_argument(
        "--report_dir", default=None, help="write the report there instead of into OUTPUT_DIR (e.g. docs/results/NAME)"
    )
    args = parser.parse_args(argv)
    if args.dpi < 10:
        print(f"error: --dpi {args.dpi} is too small; use e.g. 200 (the default) or 300 for print", file=sys.stderr)
        return 2
    if not 0 < args.confidence < 1:
        print(f"error: --confidence {args.confidence} must lie strictly between 0 and 1 (e.g. 0.95)", file=sys.stderr)
        return 2
    root = Path(args.output_dir)
    if not root.is_dir():
        print(f"error: {root} is not a folder of runs", file=sys.stderr)
        return 2
    try:
        summary = build_report(
            root, args.confidence, args.dpi, args.report_dir, [__file__, *(sys.argv[1:] if argv is None else argv)]
        )
    except ValueError as error:  # DuplicateRuns among them
        print(f"error: {error}", file=sys.stderr)
        return 2
    for bad in summary["bad_runs"]:
        print(f"warning: skipped {bad['path']}: {bad['reason']}", file=sys.stderr)
    for note in summary["notes"]:
        print(f"note: {note}", file=sys.stderr)
    for label, group in summary["groups"].items():
        for name, entry in (group.get("nested") or {}).items():
            if "readout" in entry and _gate_verdict(group, name, list(group["em"])[-1]) == NOT_INTERPRETABLE:
                print(f"{label}: {name} read-out {entry['readout']['mean']:+.3f}: {NOT_INTERPRETABLE}")
            elif "readout" in entry:
                print(
                    f"{label}: {name} read-out {entry['readout_text']}; start {entry.get('start_text', '-')}; "
                    f"read-out - start {entry.get('corrected_text', '-')}"
                )
        for name, per_stage in group["contrasts"].items():
            stage, g = list(per_stage.items())[-1]
            if _gate_verdict(group, name, stage) == NOT_INTERPRETABLE:
                print(f"{label}: {name} at the end of {stage} {g['mean']:+.4f}: {NOT_INTERPRETABLE}")
                continue
            print(
                f"{label}: {name} at the end of {stage} {g['mean']:+.4f} [{g['ci_low']:+.4f}, {g['ci_high']:+.4f}], "
                f"one-sided paired t-test p = {g['p_value']:.4g}, n = {g['n']}"
            )
    out = Path(args.report_dir or root)
    print(f"wrote {out / 'summary.md'}, {out / 'report.md'}, figures (PNG, PDF, SVG) and tables/ (CSV, LaTeX)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
