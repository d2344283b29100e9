"""Values over training read from the runs' metrics.jsonl rows, one per seed (a seed's branches are
averaged first: seeds are the replicates): EM per stage and set, a contrast per stage, each
measurement's curves and the probes' accuracies; what the report's figures draw."""

from __future__ import annotations

from iml_hf.reporting.plots import Series, representation_name
from iml_hf.reporting.runs import RunRecord, row_family, stage_order
from iml_hf.reporting.stats import difference


def row_curves(runs: list[RunRecord], select) -> dict[str, Series]:
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
            if row_family(r) == "eval" and r.get("metric") == "em" and r.get("value") is not None and "stage_step" in r:
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
    order = stage_order(runs)
    return {
        stage: {
            name: {step: _per_seed(per_seed) for step, per_seed in sorted(steps.items())}
            for name, steps in collected[stage].items()
        }
        for stage in order
        if stage in collected
    }


def probe_targets(runs: list[RunRecord]) -> dict[str, dict[str, dict[str, dict[str, list[float]]]]]:
    """Probe rows as ``{target: {representation: {stage: {"accuracy", "shuffled", "chance": per-seed
    values}}}}`` (branches averaged within a seed)."""
    collected: dict[tuple[str, str, str, str], dict[int, list[float]]] = {}
    for run in runs:
        for r in run.rows:
            if row_family(r) != "probes" or r.get("value") is None:
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
