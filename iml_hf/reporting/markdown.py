"""The report's Markdown: report.md's opening, each group's tables and test lines (the gate's, the
contrasts', EM's and each measurement's), the skipped runs and notes, and the figures' lines.

``summary.md`` holds the tables; ``report.md`` adds the provenance and the figures. Every table is
also written as CSV and LaTeX from these lines (``iml_hf.reporting.tables``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from iml_hf.measure.registry import MEASUREMENTS
from iml_hf.reporting.gate import NOT_INTERPRETABLE
from iml_hf.reporting.group_summary import gate_verdict
from iml_hf.reporting.nested_report import as_cell, nested_markdown
from iml_hf.reporting.runs import Loaded


def report_head(root: Path, loaded: Loaded, groups: int, provenance: list[str]) -> list[str]:
    """report.md's opening: how many runs and groups, the provenance lines, the missing and skipped runs."""
    lines = ["# IML report", "", f"{len(loaded.runs)} finished runs in `{root}`, {groups} group(s).", ""]
    lines += provenance
    if loaded.missing:
        lines += ["Missing runs:", ""] + [f"- {p}" for p in loaded.missing] + [""]
    return lines + problem_markdown(loaded)


def problem_markdown(loaded: Loaded) -> list[str]:
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
    """A paired test in one line: mean, interval, t, p and n."""
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
        verdicts = {name: gate_verdict(summary, name, last) for name in summary["nested"]}
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
                if gate_verdict(summary, name, stage) == NOT_INTERPRETABLE:
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
                rise = as_cell(entry["rises"][side])
                base = entry["rises"][side]["baseline"]
                cells.append(f"{side} - {base}: {_cell(rise, signed=True)}")
            lines.append(f"| {name} | {stage} | {cells[0]} | {cells[1]} | {entry['verdict']} |")
    lines.append("")
    if gated.get("base_task"):
        lines += _table(
            f"Base task: exact match at the end of each stage (mean [{pct}% CI] over seeds)", gated["base_task"]
        )
    return lines


def figure_markdown(group: int, drawn: list[tuple[Path, str]]) -> list[str]:
    """report.md's lines showing one group's figures (numbered ``group.n``, with their PDF and SVG linked)."""
    lines: list[str] = []
    for number, (path, caption) in enumerate(drawn, 1):
        lines += [
            f"![{path.stem}]({path.name})",
            "",
            f"*Figure {group}.{number}* ([PDF]({path.stem}.pdf), [SVG]({path.stem}.svg)). {caption}",
            "",
        ]
    return lines
