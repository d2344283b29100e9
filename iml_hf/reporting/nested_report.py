"""The report of a branched design: seeds (the unit of replication) x stage-2 branches.

Every number is nested: a contrast's branch values are averaged within a seed, then an interval
and a one-sided test run across seeds (``iml_hf.reporting.nested_stats``). Beside each contrast of the
branch stage: its value at the stage's start on the same branch's split (the design's own noise:
nothing of the branch stage has been trained yet), the baseline-corrected value (end minus start,
per branch), the variance components (between seeds, between branches within a seed), and how
many seeds would give 80% power at the observed effect and spread. The headline is read at the
recipe's ``evaluation.readout_step`` (declared before any run; null: the stage's end), and the
contrast over the whole stage is drawn from every evaluation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from iml_hf.reporting.nested_stats import (
    baseline_corrected,
    format_nested,
    nested_summary,
    seeds_for_power,
    variance_components,
)
from iml_hf.reporting.runs import RunRecord
from iml_hf.reporting.stats import difference


def as_cell(summary: dict[str, Any]) -> dict[str, Any]:
    """A nested summary in the report's cell form (``mean``, ``ci_low``, ``ci_high``, ``n``, ``t``,
    ``p_value``; NaN where undefined) plus the nested fields."""
    nan = math.nan
    return {
        **summary,
        "mean": nan if summary["mean"] is None else summary["mean"],
        "ci_low": nan if summary["ci_low"] is None else summary["ci_low"],
        "ci_high": nan if summary["ci_high"] is None else summary["ci_high"],
        "t": nan if summary["t"] is None else summary["t"],
        "p_value": nan if summary["p_value"] is None else summary["p_value"],
        "n": summary["n_seeds"],
    }


def nested_cell(values: list[tuple[RunRecord, float | None]], confidence: float) -> dict[str, Any]:
    """One table cell over seeds from each run's value (None: not measured): a seed's branches are
    averaged first (``nested_stats.nested_summary``); a plain run is its seed's only value."""
    triples = [(r.seed, 0 if r.branch is None else r.branch, v) for r, v in values if v is not None]
    return as_cell(nested_summary(triples, confidence))


def _branch(run: RunRecord) -> int:
    """The branch of a run in a branched group, where every run is a branch (``group_summary.summarize``)."""
    assert run.branch is not None, f"{run.path} is a plain run among branches"
    return run.branch


def branch_stages(run: RunRecord) -> list[str]:
    """The stages a branch trained itself (not copied from its trunk)."""
    return [name for name, entry in run.results["stages"].items() if not entry.get("shared_trunk")]


def readout_values(run: RunRecord, a: str, b: str) -> float | None:
    """EM(a) - EM(b) at the declared read-out step of the last stage (None: not recorded)."""
    step = (run.results["recipe"].get("evaluation") or {}).get("readout_step")
    last = list(run.results["stages"])[-1]
    if step is None:
        em = run.results["stages"][last]["em"]
        return difference(em, a, b)
    index = len(run.results["stages"]) - 1
    found = {
        r["subset"]: r["value"]
        for r in run.rows
        if r.get("family") == "eval"
        and r.get("metric") == "em"
        and r["stage_index"] == index
        and r["stage_step"] == step
    }
    return difference(found, a, b)


def stage_curve(runs: list[RunRecord], a: str, b: str, stage_index: int) -> dict[int, dict[int, dict[int, float]]]:
    """{stage step: {seed: {branch: EM(a) - EM(b)}}} over every evaluation of stage ``stage_index``."""
    curve: dict[int, dict[int, dict[int, float]]] = {}
    for run in runs:
        at: dict[int, dict[str, float]] = {}
        for r in run.rows:
            if r.get("family") == "eval" and r.get("metric") == "em" and r["stage_index"] == stage_index:
                at.setdefault(r["stage_step"], {})[r["subset"]] = r["value"]
        for step, em in at.items():
            if (value := difference(em, a, b)) is not None:
                curve.setdefault(step, {}).setdefault(run.seed, {})[_branch(run)] = value
    return dict(sorted(curve.items()))


def summarize_contrast(runs: list[RunRecord], a: str, b: str, confidence: float) -> dict[str, Any]:
    """One contrast of a branched group: at every stage end (nested), and for the branch stage its
    start, the baseline-corrected value, the read-out, variance components, power and the curve."""
    stages = list(runs[0].results["stages"])
    own = branch_stages(runs[0])
    out: dict[str, Any] = {"per_stage": {}}
    for stage in stages:
        values: dict[int, dict[int, float]] = {}
        for run in runs:
            em = run.results["stages"][stage]["em"]
            if (value := difference(em, a, b)) is not None:
                values.setdefault(run.seed, {})[_branch(run)] = value
        if values:
            out["per_stage"][stage] = as_cell(nested_summary(values, confidence))
    if not own:
        return out
    first = own[0]
    start: dict[int, dict[int, float]] = {}
    readout: dict[int, dict[int, float]] = {}
    for run in runs:
        em0 = run.results["stages"][first].get("em_start") or {}
        if (begin := difference(em0, a, b)) is not None:
            start.setdefault(run.seed, {})[_branch(run)] = begin
        value = readout_values(run, a, b)
        if value is not None:
            readout.setdefault(run.seed, {})[_branch(run)] = value
    if not readout:
        return out
    headline = nested_summary(readout, confidence)
    out["readout"] = as_cell(headline)
    out["readout_step"] = (runs[0].results["recipe"].get("evaluation") or {}).get("readout_step")
    out["readout_text"] = format_nested(headline)
    out["variance"] = variance_components(readout)
    out["power_seeds"] = _power(headline)
    if start:
        corrected = baseline_corrected(readout, start, confidence)
        start_summary = nested_summary(start, confidence)
        out["start"] = as_cell(start_summary)
        out["start_text"] = format_nested(start_summary)
        out["corrected"] = as_cell(corrected["summary"])
        out["corrected_text"] = format_nested(corrected["summary"])
        out["corrected_variance"] = variance_components(corrected["differences"])
        out["corrected_power_seeds"] = _power(corrected["summary"])
    index = stages.index(own[-1])
    out["curve"] = {
        step: as_cell(nested_summary(values, confidence)) for step, values in stage_curve(runs, a, b, index).items()
    }
    return out


def _power(summary: dict[str, Any]) -> int | None:
    if summary["mean"] is None or summary["sd_seed_means"] is None:
        return None
    return seeds_for_power(summary["mean"], summary["sd_seed_means"])


def summarize_nested(runs: list[RunRecord], contrasts: dict[str, tuple[str, str]], confidence: float) -> dict[str, Any]:
    """Every contrast of a branched group (``summarize_contrast``), keyed by name."""
    return {name: summarize_contrast(runs, a, b, confidence) for name, (a, b) in contrasts.items()}


def _fmt(x: float | None, spec: str = "+.3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def nested_markdown(
    summary: dict[str, Any],
    contrast_sets: dict[str, list[str]],
    confidence: float,
    verdicts: dict[str, str | None] | None = None,
) -> list[str]:
    """The nested contrast table: start, read-out, corrected, variance components and power; a
    contrast the interpretability gate (``iml_hf.reporting.gate``) refuses shows its mean and the verdict
    instead of an interval and p."""
    from iml_hf.reporting.gate import NOT_INTERPRETABLE

    verdicts = verdicts or {}
    pct = round(100 * confidence)
    lines = [
        f"**Contrasts of the branch stage (nested: branches averaged within a seed, then mean [{pct}% t-interval] "
        "and one-sided t-test over seeds)**",
        "",
        "| contrast | start of stage (same split) | read-out | read-out - start | SD between seeds | "
        "SD between branches | seeds for 80% power (corrected) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in summary.items():
        if "readout" not in entry:
            continue
        a, b = contrast_sets[name]
        variance = entry["variance"]
        sd_between = None if variance["var_between"] is None else math.sqrt(variance["var_between"])
        sd_within = None if variance["var_within"] is None else math.sqrt(variance["var_within"])
        readout, corrected = entry["readout_text"], entry.get("corrected_text", "-")
        if verdicts.get(name) == NOT_INTERPRETABLE:
            readout = f"{_fmt(entry['readout']['mean'])}: {NOT_INTERPRETABLE}"
            corrected = f"{_fmt(entry['corrected']['mean'])}: {NOT_INTERPRETABLE}" if "corrected" in entry else "-"
        lines.append(
            f"| {name} ({a} - {b}) | {entry.get('start_text', '-')} | {readout} | "
            f"{corrected} | {_fmt(sd_between, '.3f')} | {_fmt(sd_within, '.3f')} | "
            f"{entry.get('corrected_power_seeds') or '-'} |"
        )
    step = next((e.get("readout_step") for e in summary.values() if "readout" in e), None)
    lines += [
        "",
        f"Read-out: {'the end of the stage' if step is None else f'step {step} of the stage'}, "
        "declared in the recipe (`evaluation.readout_step`) before any run. The start value is the same "
        "contrast measured on each branch's own split before the stage's first step (the design's noise); "
        "read-out - start subtracts it per branch. Power: seeds a one-sided t-test at alpha 0.05 needs for "
        "80% power at the observed mean and SD of seed means ('-': effect <= 0).",
        "",
    ]
    return lines


def contrast_curve_figure(
    summary: dict[str, Any],
    contrast_sets: dict[str, list[str]],
    path: Path,
    title: str,
    confidence: float,
    dpi: int | None = None,
) -> Path | None:
    """The branch stage's contrasts at every evaluation: nested mean and t-band over seeds, the
    zero line, and the read-out step marked; one legend right of the panels."""
    from iml_hf.reporting.plots import DEFAULT_DPI, plt, save_figure

    entries = {name: e for name, e in summary.items() if e.get("curve")}
    if not entries:
        return None
    columns = min(len(entries), 3)
    rows = -(-len(entries) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.9 * columns, 3.0 * rows), squeeze=False)
    for ax in list(axes.flat)[len(entries) :]:
        ax.axis("off")
    pct = round(100 * confidence)
    n_text = ""
    for ax, (name, entry) in zip(axes.flat, entries.items()):
        steps = [int(s) for s in entry["curve"]]
        mean = [entry["curve"][s]["mean"] for s in entry["curve"]]
        low = [entry["curve"][s]["ci_low"] for s in entry["curve"]]
        high = [entry["curve"][s]["ci_high"] for s in entry["curve"]]
        ax.plot(steps, mean, marker="o", ms=3.5, color="#333333", label="mean over seeds")
        ax.fill_between(steps, low, high, color="#333333", alpha=0.15, lw=0, label=f"{pct}% t-interval over seeds")
        ax.axhline(0, color="black", lw=0.8)
        readout = entry.get("readout_step") or steps[-1]
        ax.axvline(readout, color="#c0392b", ls="--", lw=1, label="declared read-out")
        readout_summary = entry["readout"]
        n_text = (
            f"n = {readout_summary['n']} seeds x {readout_summary.get('branches_max', 1)} branches"
            if readout_summary.get("branches_max", 1) > 1
            else f"n = {readout_summary['n']} seeds"
        )
        a, b = contrast_sets[name]
        ax.set_title(f"{name}\nEM({a}) - EM({b})")
        ax.set_ylabel("difference in EM")
        ax.set_xlabel("step of the branch stage")
        ax.grid(alpha=0.25)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(f"{title}\n{n_text}; bands: {pct}% t-intervals over seeds")
    fig.tight_layout()
    return save_figure(fig, path, dpi or DEFAULT_DPI)


def seed_summary(branches: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One seed's branches (``{branch: results}``): per branch-stage contrast, each branch's start,
    end and end - start, their means over branches and the SD between branches (the split noise a
    single-split run carries). No interval: one seed is one replicate; a sweep gives the interval."""
    first = next(iter(branches.values()))
    own = [name for name, entry in first["stages"].items() if not entry.get("shared_trunk")]
    out: dict[str, Any] = {"branches": sorted(branches), "stage": own[0], "contrasts": {}}
    for name, a, b in first.get("contrast_sets", []):
        rows = {}
        for index, results in sorted(branches.items()):
            start = results["stages"][own[0]].get("contrasts_start", {}).get(name)
            end = results["stages"][own[-1]].get("contrasts", {}).get(name)
            if start is not None and end is not None:
                rows[index] = {"start": start, "end": end, "corrected": end - start}
        if rows:
            column = {k: [r[k] for r in rows.values()] for k in ("start", "end", "corrected")}
            out["contrasts"][name] = {
                "sets": [a, b],
                "per_branch": rows,
                "mean": {k: sum(v) / len(v) for k, v in column.items()},
                "sd_between_branches": {k: _sd(v) for k, v in column.items()},
            }
    return out


def _sd(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def seed_markdown(summary: dict[str, Any], seed: int) -> str:
    """The README of a branched run's folder: its branches' contrasts and what they can and cannot say."""
    lines = [
        f"# Seed {seed}: {len(summary['branches'])} branches of {summary['stage']}",
        "",
        "Each branch trains the branch stage from the same trunk weights on a re-split of the task's "
        "exchangeable subsets; branches 2k and 2k+1 exchange the two halves of one split. Start: the "
        "contrast on the branch's split before the stage's first step (split noise, nothing trained yet).",
        "",
        "| contrast | branch | start | end | end - start |",
        "|---|---|---|---|---|",
    ]
    for name, entry in summary["contrasts"].items():
        a, b = entry["sets"]
        for index, row in entry["per_branch"].items():
            lines.append(
                f"| {name} ({a} - {b}) | {index} | {row['start']:+.3f} | {row['end']:+.3f} | {row['corrected']:+.3f} |"
            )
        mean, sd = entry["mean"], entry["sd_between_branches"]
        lines.append(
            f"| {name} | mean (SD between branches) | {mean['start']:+.3f} ({_fmt(sd['start'], '.3f')}) | "
            f"{mean['end']:+.3f} ({_fmt(sd['end'], '.3f')}) | {mean['corrected']:+.3f} "
            f"({_fmt(sd['corrected'], '.3f')}) |"
        )
    lines += [
        "",
        "One seed is one replicate: for an interval and a test, run seeds with `python -m iml_hf.sweep "
        "RECIPE --seeds N --output_dir DIR --branches=K` and `python -m iml_hf.report DIR`.",
        "",
    ]
    return "\n".join(lines)
