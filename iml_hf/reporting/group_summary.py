"""The numbers of one group of runs (same configuration, different seeds): what summary.json holds per group.

EM per stage and evaluation set with a t-interval over seeds, every contrast the task declares at
every stage end with a one-sided paired t-test, each measurement's stage-end values through its
``iml_hf.measure.registry`` report reader, and the interpretability gate (``iml_hf.reporting.gate``).
A branched group is summarized nested: branches averaged within a seed, then over seeds
(``iml_hf.reporting.nested_report``).
"""

from __future__ import annotations

from typing import Any

from iml_hf.measure.registry import MEASUREMENTS
from iml_hf.reporting.gate import gate, gated_sides
from iml_hf.reporting.nested_report import nested_cell, summarize_nested
from iml_hf.reporting.runs import RunRecord, contrast_sets, stage_ends, subset_order
from iml_hf.reporting.stats import difference, mean_ci, paired_greater
from iml_hf.tasks import eval_set_order, get_task_class


def summarize_group(runs: list[RunRecord], confidence: float) -> dict[str, Any]:
    """The group's entry of summary.json: its numbers (``summarize``), the gate of its contrasts and
    its ``--set`` values."""
    summary = summarize(runs, confidence)
    summary["gate"] = gates(runs, {k: tuple(v) for k, v in summary["contrast_sets"].items()}, confidence)
    summary["overrides"] = runs[0].overrides
    return summary


def gate_verdict(summary: dict[str, Any], name: str, stage: str) -> str | None:
    """The gate's verdict on contrast ``name`` at the end of ``stage`` (None: not gated)."""
    return ((summary.get("gate") or {}).get("contrasts", {}).get(name, {}).get(stage) or {}).get("verdict")


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
                out["base_task"].setdefault(stage, {})[base] = nested_cell(
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
        list(dict.fromkeys(s for stage in first["stages"].values() for s in stage["em"])), subset_order(first)
    )
    contrasts = contrast_sets(first)
    summary: dict[str, Any] = {
        "runs": len(runs),
        "seeds": sorted(r.seed for r in runs),
        "stage_ends": stage_ends(runs[0]),
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
        list(dict.fromkeys(s for stage in first["stages"].values() for s in stage["em"])), subset_order(first)
    )
    contrasts = contrast_sets(first)
    seeds = sorted({r.seed for r in runs})
    em = {
        stage: {
            s: nested_cell([(r, r.results["stages"][stage]["em"].get(s)) for r in runs], confidence)
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
                return nested_cell([(r, pick(v)) for r, v in values[stage]], confidence)  # noqa: B023

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
        "stage_ends": stage_ends(runs[0]),
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
