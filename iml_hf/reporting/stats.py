"""Small statistics shared by the callbacks, the report and the model card: means with t-based
confidence intervals, Wilson intervals of proportions and Newcombe intervals of their differences."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from scipy import stats


def difference(values: Mapping[str, float | None], a: str, b: str) -> float | None:
    """``values[a] - values[b]``, or None where either is missing or null (strict JSON writes an
    undefined value, NaN, as null)."""
    x, y = values.get(a), values.get(b)
    return None if x is None or y is None else x - y


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean of the finite values with a two-sided t-distribution confidence interval.

    Returns ``{"mean", "ci_low", "ci_high", "n"}``; with fewer than two values the interval is NaN.
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    mean = float(x.mean())
    if len(x) < 2 or np.all(x == x[0]):
        low = high = mean if len(x) >= 2 else math.nan
    else:
        interval = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
        low, high = float(interval.low), float(interval.high)
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": int(len(x))}


def paired_greater(a: Iterable[float], b: Iterable[float], confidence: float = 0.95) -> dict[str, float]:
    """One-sided paired t-test of ``a > b`` (scipy ``ttest_rel``) with the mean difference and its
    two-sided ``confidence`` interval; NaN where fewer than two complete pairs exist."""
    x, y = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)  # None (null) reads as NaN
    paired = np.isfinite(x) & np.isfinite(y)  # a pair with a value missing is left out
    x, y = x[paired], y[paired]
    summary = mean_ci(x - y, confidence)
    if len(x) < 2 or np.all(x - y == (x - y)[0]):
        return {**summary, "t": math.nan, "p_value": math.nan}
    test = stats.ttest_rel(x, y, alternative="greater")
    return {**summary, "t": float(test.statistic), "p_value": float(test.pvalue)}


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (scipy's ``binomtest(...).proportion_ci``)."""
    ci = stats.binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def difference_interval(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10) of p_a - p_b for two independent
    proportions, built from the two Wilson intervals; it stays inside [-1, 1] and behaves at 0 and 1."""
    p_a, p_b = successes_a / trials_a, successes_b / trials_b
    low_a, high_a = wilson_interval(successes_a, trials_a, confidence)
    low_b, high_b = wilson_interval(successes_b, trials_b, confidence)
    difference = p_a - p_b
    return (
        difference - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2),
        difference + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2),
    )
