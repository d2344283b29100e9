"""Turn a sweep (or any folder of runs) into the IML numbers and figures.

    python -m iml_hf.report runs/sweep [--confidence 0.95]

Reads every run's ``results.json`` and ``metrics.jsonl`` (grouped by the sweep's ``--set`` values
when ``sweep.json`` is there) and writes into the folder: ``summary.json`` and ``summary.md`` (per
stage and subset the mean EM with a t-interval over seeds; the IML gap with its interval and a
one-sided paired t-test; gradient alignment and embedding cosines when the runs have them), PNG
figures, and ``report.md`` that shows them all.
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

from iml_hf.pipeline import write_json_atomic
from iml_hf.plots import Series, curve_figure, save_heatmap
from iml_hf.recipe import configuration
from iml_hf.stats import mean_ci, paired_greater
from iml_hf.tasks import make_task


@dataclass
class RunRecord:
    """One finished run: where it is, its seed and ``--set`` values, its results and metric rows."""

    name: str
    path: Path
    seed: int
    overrides: dict[str, Any]
    results: dict[str, Any]
    rows: list[dict[str, Any]] = field(repr=False)


def _read_run(name: str, path: Path, overrides: dict[str, Any]) -> RunRecord:
    results = json.loads((path / "results.json").read_text())
    metrics = path / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    return RunRecord(name, path, int(results["recipe"]["seed"]), overrides, results, rows)


def load_runs(root: Path) -> tuple[list[RunRecord], list[str]]:
    """The finished runs under ``root`` and a line for every run of the manifest that is missing."""
    manifest = root / "sweep.json"
    runs, problems = [], []
    if manifest.exists():
        for entry in json.loads(manifest.read_text())["runs"]:
            path = root / entry["name"]
            if (path / "results.json").exists():
                runs.append(_read_run(entry["name"], path, entry["overrides"]))
            else:
                problems.append(f"{entry['name']}: no results.json (status {entry['status']}, log {entry['log']})")
    else:
        for results in sorted(root.rglob("results.json")):
            runs.append(_read_run(str(results.parent.relative_to(root)), results.parent, {}))
        _infer_overrides(runs)
    return runs, problems


def _infer_overrides(runs: list[RunRecord]) -> None:
    """Without a manifest: a run's overrides are the recipe keys (other than seed and paths) whose
    values differ between the runs, so runs of different configurations are never pooled."""
    flat = [{k: json.dumps(v, sort_keys=True) for k, v in configuration(r.results["recipe"], with_seed=False).items()}
            for r in runs]
    keys = sorted({k for f in flat for k in f if len({g.get(k) for g in flat}) > 1})
    for run, values in zip(runs, flat):
        run.overrides = {k: json.loads(values[k]) if k in values else None for k in keys}


def group_runs(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """Runs with the same ``--set`` values, in first-seen order; the key is a readable label."""
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        label = ", ".join(f"{k}={v}" for k, v in run.overrides.items()) or "all runs"
        groups.setdefault(label, []).append(run)
    return groups


def _stage_ends(run: RunRecord) -> list[tuple[int, str]]:
    ends, total = [], 0
    for stage, entry in run.results["stages"].items():
        total += entry["steps"]
        ends.append((total, stage))
    return ends


def summarize(runs: list[RunRecord], confidence: float = 0.95) -> dict[str, Any]:
    """The numbers of one group of runs (same recipe and ``--set`` values, different seeds)."""
    first = runs[0].results
    stages = list(first["stages"])
    task = make_task(first["recipe"]["task"])
    subsets = [s for s in task.subsets if s in first["final_em"]] + [s for s in first["final_em"] if s not in task.subsets]
    gap = task.gap_subsets if task.gap_subsets and set(task.gap_subsets) <= set(first["final_em"]) else None
    summary: dict[str, Any] = {
        "runs": len(runs),
        "seeds": sorted(r.seed for r in runs),
        "stage_ends": _stage_ends(runs[0]),
        "gap_subsets": list(gap) if gap else None,
        "em": {
            stage: {s: mean_ci([r.results["stages"][stage]["em"][s] for r in runs], confidence) for s in subsets}
            for stage in stages
        },
        "wall_time_s": mean_ci([r.results["wall_time_s"] for r in runs], confidence),
    }
    if gap:
        summary["iml_gap"] = paired_greater(*([r.results["final_em"][s] for r in runs] for s in gap), confidence)
        summary["iml_gap"]["per_run"] = {r.name: r.results["final_em"][gap[0]] - r.results["final_em"][gap[1]] for r in runs}
    for key, read in (
        ("grad_align", lambda entry, s: entry["pairs"][s]["all"]["mean"]),
        ("embedding", lambda entry, s: entry[s]["embed_cos"]),
    ):
        if all(key in r.results["stages"][stages[-1]] for r in runs):
            table, contrasts = {}, {}
            last = runs[0].results["stages"][stages[-1]][key]
            names = [s for s in subsets if s in (last["pairs"] if key == "grad_align" else last)]
            for stage in stages:
                values = {s: [read(r.results["stages"][stage][key], s) for r in runs] for s in names}
                table[stage] = {s: mean_ci(v, confidence) for s, v in values.items()}
                if gap and set(gap) <= set(values):
                    contrasts[stage] = paired_greater(values[gap[0]], values[gap[1]], confidence)
            summary[key] = {"at_stage_end": table, f"{gap[0]}_vs_{gap[1]}" if gap else "contrast": contrasts}
    return summary


def _cell(s: dict[str, float], signed: bool = False) -> str:
    """``mean [low, high]`` to three decimals (with a sign for differences and cosines)."""
    if not s or s["n"] == 0 or math.isnan(s["mean"]):
        return "-"
    spec = "+.3f" if signed else ".3f"
    interval = "" if s["n"] < 2 or math.isnan(s["ci_low"]) else f" [{s['ci_low']:{spec}}, {s['ci_high']:{spec}}]"
    return f"{s['mean']:{spec}}{interval}"


def _table(title: str, rows: dict[str, dict[str, dict[str, float]]], signed: bool = False) -> list[str]:
    columns = list(next(iter(rows.values())))
    lines = [f"**{title}**", "", "| stage | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {stage} | " + " | ".join(_cell(values[c], signed) for c in columns) + " |"
              for stage, values in rows.items()]
    return lines + [""]


def _test_line(name: str, test: dict[str, float], confidence: float) -> str:
    pct = round(100 * confidence)
    return (f"{name}: mean {test['mean']:+.4f}, {pct}% CI [{test['ci_low']:+.4f}, {test['ci_high']:+.4f}], "
            f"one-sided paired t-test t = {test['t']:.2f}, p = {test['p_value']:.4g} (n = {test['n']})")


def group_markdown(label: str, summary: dict[str, Any], confidence: float) -> list[str]:
    """The tables and test lines of one group, in Markdown."""
    lines = [f"## {label}", "", f"{summary['runs']} runs, seeds {summary['seeds']}; "
             f"mean wall time {summary['wall_time_s']['mean']:.0f} s per run.", ""]
    gap = summary.get("gap_subsets")
    if "iml_gap" in summary:
        lines += [_test_line(f"**IML gap** EM({gap[0]}) - EM({gap[1]}) at the end", summary["iml_gap"], confidence), ""]
    lines += _table(f"Exact match at the end of each stage (mean [{round(100 * confidence)}% CI] over seeds)", summary["em"])
    for key, title in (("grad_align", "Gradient alignment (definition-question cosine, all parameters) at the end of each stage"),
                       ("embedding", "Number-alias embedding cosine at the end of each stage")):
        if key in summary:
            lines += _table(title, summary[key]["at_stage_end"], signed=True)
            for stage, test in summary[key].get(f"{gap[0]}_vs_{gap[1]}", {}).items() if gap else []:
                if not math.isnan(test["t"]):
                    lines += [_test_line(f"{gap[0]} - {gap[1]} at the end of {stage}", test, confidence), ""]
    return lines


def _curves(runs: list[RunRecord], select) -> dict[str, Series]:
    panels: dict[str, Series] = {}
    for run in runs:
        for row in run.rows:
            picked = select(row)
            if picked:
                panel, series = picked
                panels.setdefault(panel, {}).setdefault(series, {}).setdefault(row["global_step"], []).append(row["value"])
    return panels


def _mean_heatmaps(runs: list[RunRecord], out: Path, suffix: str) -> list[Path]:
    """Per stage, the mean over runs of each run's last embedding matrix of that stage. Only runs
    whose rows mean the same (bucket, number) are averaged: with ``bucket_by: number`` the buckets'
    numbers change with the seed, and then only the first run's layout is shown."""
    folders = [r.path / "embeddings" for r in runs if (r.path / "embeddings" / "labels.json").exists()]
    if not folders:
        return []
    labels = [json.loads((f / "labels.json").read_text()) for f in folders]
    layout = [list(zip(lab["buckets"], lab.get("row_numbers", [None] * len(lab["buckets"])))) for lab in labels]
    same = [f for f, rows in zip(folders, layout) if rows == layout[0]]
    written = []
    for index, stage in enumerate(runs[0].results["stages"]):
        matrices = []
        for folder in same:
            files = sorted(folder.glob(f"{index}-{stage}-step*.npy"), key=lambda p: int(p.stem.rsplit("step", 1)[1]))
            if files:
                matrices.append(np.load(files[-1]))
        if matrices:
            path = out / f"embeddings_{index}-{stage}{suffix}.png"
            runs_note = f"mean over {len(matrices)} runs" if len(same) == len(folders) else (
                f"mean over the {len(matrices)} of {len(folders)} runs with the same row layout")
            save_heatmap(np.mean(matrices, axis=0), labels[0]["buckets"], path,
                         f"input-embedding cosines at the end of {stage}, {runs_note}")
            written.append(path)
    return written


def figures(runs: list[RunRecord], out: Path, suffix: str, label: str, confidence: float) -> list[Path]:
    """EM curves, alignment curves, embedding-cosine curves and mean heatmaps of one group."""
    ends = _stage_ends(runs[0])
    written = []
    em = _curves(runs, lambda r: ("exact match", r["subset"]) if r["metric"] == "em" else None)
    if em:
        written.append(curve_figure(em, ends, out / f"em_curves{suffix}.png", f"Held-out exact match per subset ({label})", "exact match", confidence))
    align = _curves(runs, lambda r: (r["metric"].split("/", 1)[1], r["subset"]) if r["metric"].startswith("grad_align/") else None)
    if align:
        written.append(curve_figure(align, ends, out / f"grad_alignment{suffix}.png",
                                    f"Definition-question gradient cosine per parameter group ({label})", "cosine", confidence))
    embed = _curves(runs, lambda r: ("number-alias embedding cosine", r["subset"]) if r["metric"] == "embed_cos" else None)
    if embed:
        written.append(curve_figure(embed, ends, out / f"embedding_cosine{suffix}.png",
                                    f"Cosine of each alias's embedding with its number's ({label})", "cosine", confidence))
    return written + _mean_heatmaps(runs, out, suffix)


def build_report(root: Path, confidence: float = 0.95) -> dict[str, Any]:
    """Write summary.json, summary.md, the figures and report.md into ``root``; return the summary."""
    runs, problems = load_runs(root)
    if not runs:
        raise ValueError(f"no finished runs (results.json) under {root}")
    groups = group_runs(runs)
    summary = {"confidence": confidence, "groups": {}, "missing_runs": problems}
    md = ["# Summary", ""]
    report = ["# IML report", "", f"{len(runs)} finished runs in `{root}`, {len(groups)} group(s).", ""]
    if problems:
        report += ["Missing runs:", ""] + [f"- {p}" for p in problems] + [""]
    for index, (label, members) in enumerate(groups.items()):
        group = summarize(members, confidence)
        group["overrides"] = members[0].overrides
        summary["groups"][label] = group
        section = group_markdown(label, group, confidence)
        md += section
        suffix = "" if len(groups) == 1 else f"_g{index}"
        report += section + [f"![{p.stem}]({p.name})" for p in figures(members, root, suffix, label, confidence)] + [""]
    write_json_atomic(root / "summary.json", summary)
    for name, lines in (("summary.md", md), ("report.md", report)):
        (root / name).write_text("\n".join(lines) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iml_hf.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="a sweep folder (with sweep.json) or any folder of runs")
    parser.add_argument("--confidence", type=float, default=0.95)
    args = parser.parse_args(argv)
    root = Path(args.output_dir)
    if not root.is_dir():
        print(f"error: {root} is not a folder of runs", file=sys.stderr)
        return 2
    try:
        summary = build_report(root, args.confidence)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for label, group in summary["groups"].items():
        if "iml_gap" in group:
            g = group["iml_gap"]
            print(f"{label}: IML gap {g['mean']:+.4f} [{g['ci_low']:+.4f}, {g['ci_high']:+.4f}], "
                  f"one-sided paired t-test p = {g['p_value']:.4g}, n = {g['n']}")
    print(f"wrote {root / 'summary.md'}, {root / 'report.md'} and figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
