"""The interpretability gate: a reliability contrast is read only where definitions were learned.

IML is a difference in how much tagged definitions are internalized. Where neither side of a
contrast rose above its no-definition level, the contrast compares two chance-level numbers and
says nothing about IML either way. A task declares, per defined subset, that level
(``definition_baselines``: a subset never defined, such as entity ``no_qd_baseline``, or a chance
value such as set inclusion's 0.5) and the sets that show whether the base task was learned at all
(``base_task_sets``); the report and the model card read them, never task names.

A side *rose* when the lower end of its rise's interval (EM(side) - baseline) is above 0; a contrast
with no side that rose is "not interpretable" (our rule, issue 20). The verdict says "definitions
not shown to be learned" rather than "not learned": an interval that includes 0 can also mean a
baseline too small to show a rise (one run's 20 ``q`` questions, say).
"""

from __future__ import annotations

from typing import Any

NOT_INTERPRETABLE = "not interpretable: definitions not shown to be learned"
INTERPRETABLE = "interpretable: a side rose above its no-definition level"


def gated_sides(task_baselines: dict[str, Any], a: str, b: str) -> dict[str, Any] | None:
    """{side: baseline} for a contrast both of whose sides have a declared baseline, else None."""
    if a in task_baselines and b in task_baselines:
        return {a: task_baselines[a], b: task_baselines[b]}
    return None


def rise_values(em: dict[str, float], side: str, baseline: Any) -> float | None:
    """EM(side) - its baseline (a set's EM or a chance value), or None where one is missing."""
    if em.get(side) is None:  # missing, or null (NaN in strict JSON)
        return None
    if isinstance(baseline, str):
        return em[side] - em[baseline] if em.get(baseline) is not None else None
    return em[side] - float(baseline)


def verdict(rises: dict[str, dict[str, Any]]) -> str:
    """``INTERPRETABLE`` if some side's rise has its interval's lower end above 0."""

    def rose(summary: dict[str, Any]) -> bool:
        low = summary.get("ci_low")
        return low is not None and low == low and low > 0  # NaN: not shown to rise

    return INTERPRETABLE if any(rose(s) for s in rises.values()) else NOT_INTERPRETABLE


def gate(
    units: list[tuple[int, int | None, dict[str, float]]], sides: dict[str, Any], confidence: float = 0.95
) -> dict[str, Any] | None:
    """The gate of one contrast from each run's EM table (``(seed, branch, em)``; branch None for a
    plain run): each side's rise over its baseline, branches averaged within a seed and the
    interval over seeds (``nested_stats.nested_summary``), and the verdict. None where a side or its
    baseline set was not evaluated."""
    from iml_hf.reporting.nested_stats import nested_summary

    rises = {}
    for side, baseline in sides.items():
        values = [
            (seed, 0 if branch is None else branch, rise)
            for seed, branch, em in units
            if (rise := rise_values(em, side, baseline)) is not None
        ]
        if not values:
            return None
        rises[side] = {**nested_summary(values, confidence), "baseline": baseline}
    return {"rises": rises, "verdict": verdict(rises)}
