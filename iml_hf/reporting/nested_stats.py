"""Nested (seed > branch) statistics: the seed is the unit of replication, so branches are averaged
within each seed before any test; plus ANOVA variance components, baseline correction and the number
of seeds a one-sample t-test needs. Pure numpy/scipy; every returned dict is JSON-safe (NaN -> None)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import stats

from iml_hf.utils.io import json_safe  # noqa: F401  (re-exported: every returned dict goes through it)

# {seed: {branch: value}} or [(seed, branch, value), ...]
NestedValues = Mapping[int, Mapping[int, float]] | Iterable[tuple[int, int, float]]

MAX_SEEDS = 10000


def _float(value: Any) -> float:
    """A float, with None read as NaN (a missing measurement)."""
    return math.nan if value is None else float(value)


def as_nested(values: NestedValues) -> dict[int, dict[int, float]]:
    """Normalise either input form to ``{seed: {branch: value}}`` (all entries kept, NaN included)."""
    out: dict[int, dict[int, float]] = {}
    if isinstance(values, Mapping):
        for seed, branches in values.items():
            out[int(seed)] = {int(b): _float(v) for b, v in branches.items()}
        return out
    for seed, branch, value in values:
        row = out.setdefault(int(seed), {})
        if int(branch) in row:
            raise ValueError(f"duplicate (seed, branch) = ({seed}, {branch})")
        row[int(branch)] = _float(value)
    return out


def _finite_groups(values: NestedValues) -> dict[int, np.ndarray]:
    """Per seed, the array of its finite values, sorted by branch; seeds with none are dropped."""
    groups = {}
    for seed, branches in sorted(as_nested(values).items()):
        x = np.asarray([v for _, v in sorted(branches.items()) if math.isfinite(v)], dtype=float)
        if len(x):
            groups[seed] = x
    return groups


def nested_summary(values: NestedValues, confidence: float = 0.95) -> dict[str, Any]:
    """Mean of the per-seed branch means with a two-sided t interval and a one-sided one-sample
    t-test (H1: mean > 0) across seeds, because seeds, not branches, are independent replicates.

    Keys: mean, ci_low, ci_high, confidence, t, p_value, alternative ("greater"), se, sd_seed_means,
    n_seeds, n_values, branches_min, branches_max, seed_means ({seed: mean}). With one seed the
    interval, t, p and SD are None; with zero spread across seeds t and p are None and the interval is
    the mean itself; with no finite value everything numeric is None and n_seeds is 0."""
    groups = _finite_groups(values)
    means = np.asarray([g.mean() for g in groups.values()], dtype=float)
    n = len(means)
    out: dict[str, Any] = {
        "mean": math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "confidence": confidence,
        "t": math.nan,
        "p_value": math.nan,
        "alternative": "greater",
        "se": math.nan,
        "sd_seed_means": math.nan,
        "n_seeds": n,
        "n_values": int(sum(len(g) for g in groups.values())),
        "branches_min": min((len(g) for g in groups.values()), default=0),
        "branches_max": max((len(g) for g in groups.values()), default=0),
        "seed_means": {seed: float(m) for seed, m in zip(groups, means)},
    }
    if n:
        out["mean"] = float(means.mean())
    if n >= 2:
        sd = float(means.std(ddof=1))
        se = sd / math.sqrt(n)
        out.update(sd_seed_means=sd, se=se)
        if se > 0:
            half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * se
            t = out["mean"] / se
            out.update(ci_low=out["mean"] - half, ci_high=out["mean"] + half, t=t, p_value=float(stats.t.sf(t, n - 1)))
        else:
            out.update(ci_low=out["mean"], ci_high=out["mean"])
    return json_safe(out)


def variance_components(values: NestedValues) -> dict[str, Any]:
    """Method-of-moments (one-way random-effects ANOVA) between-seed and within-seed (between-branch)
    variances and the intraclass correlation, to see whether more seeds or more branches would help.

    Unbalanced designs use n0 = (N - sum n_i^2 / N) / (S - 1). Keys: n_seeds, n_values, n0,
    grand_mean (mean over all values), df_between, df_within, ms_between, ms_within, f_stat,
    f_p_value (H1: between-seed variance > 0), var_between_raw, var_between (truncated at 0),
    between_truncated (True when the raw estimate was negative), var_within, icc. Quantities that
    need two seeds, or a seed with two branches, are None when those are missing."""
    groups = list(_finite_groups(values).values())
    s = len(groups)
    sizes = np.asarray([len(g) for g in groups], dtype=float)
    n_total = int(sizes.sum())
    out: dict[str, Any] = {
        "n_seeds": s,
        "n_values": n_total,
        "n0": math.nan,
        "grand_mean": math.nan,
        "df_between": s - 1 if s else None,
        "df_within": n_total - s if s else None,
        "ms_between": math.nan,
        "ms_within": math.nan,
        "f_stat": math.nan,
        "f_p_value": math.nan,
        "var_between_raw": math.nan,
        "var_between": math.nan,
        "between_truncated": False,
        "var_within": math.nan,
        "icc": math.nan,
    }
    if not s:
        return json_safe(out)
    all_values = np.concatenate(groups)
    grand = float(all_values.mean())
    means = np.asarray([g.mean() for g in groups])
    out["grand_mean"] = grand
    if n_total > s:
        ms_within = float(sum(((g - g.mean()) ** 2).sum() for g in groups)) / (n_total - s)
        out.update(ms_within=ms_within, var_within=ms_within)
    if s >= 2:
        ms_between = float((sizes * (means - grand) ** 2).sum()) / (s - 1)
        n0 = (n_total - float((sizes**2).sum()) / n_total) / (s - 1)
        out.update(ms_between=ms_between, n0=n0)
        if n_total > s:
            raw = (ms_between - out["ms_within"]) / n0
            between = max(raw, 0.0)
            total = between + out["ms_within"]
            out.update(
                var_between_raw=raw,
                var_between=between,
                between_truncated=raw < 0,
                icc=between / total if total > 0 else math.nan,
            )
            if out["ms_within"] > 0:
                f = ms_between / out["ms_within"]
                out.update(f_stat=f, f_p_value=float(stats.f.sf(f, s - 1, n_total - s)))
    return json_safe(out)


def baseline_differences(values: NestedValues, baselines: NestedValues) -> dict[int, dict[int, float]]:
    """value - baseline per (seed, branch), kept only where both are finite, so each branch is
    compared with its own split before the IML stage."""
    base = as_nested(baselines)
    out: dict[int, dict[int, float]] = {}
    for seed, branches in sorted(as_nested(values).items()):
        for branch, value in sorted(branches.items()):
            b = base.get(seed, {}).get(branch, math.nan)
            if math.isfinite(value) and math.isfinite(b):
                out.setdefault(seed, {})[branch] = value - b
    return out


def baseline_corrected(values: NestedValues, baselines: NestedValues, confidence: float = 0.95) -> dict[str, Any]:
    """Baseline-corrected contrast: differences per (seed, branch) first, then the nested summary.

    Keys: differences ({seed: {branch: value - baseline}}), summary (nested_summary of them),
    n_unpaired (finite values or baselines without a finite partner, left out)."""
    diffs = baseline_differences(values, baselines)
    finite = {(s, b) for s, row in as_nested(values).items() for b, v in row.items() if math.isfinite(v)}
    finite_base = {(s, b) for s, row in as_nested(baselines).items() for b, v in row.items() if math.isfinite(v)}
    return {"differences": diffs, "summary": nested_summary(diffs, confidence), "n_unpaired": len(finite ^ finite_base)}


def t_test_power(n: int, effect: float, sd: float, alpha: float = 0.05, one_sided: bool = True) -> float:
    """Exact power of a one-sample t-test on n seed means (noncentral t), for planning seeds."""
    df, nc = n - 1, effect / sd * math.sqrt(n)
    if one_sided:
        return float(stats.nct.sf(stats.t.ppf(1 - alpha, df), df, nc))
    crit = stats.t.ppf(1 - alpha / 2, df)
    # P(T < -crit) as P(T' > crit) with T' ~ nct(df, -nc): scipy's nct.cdf returns NaN far in the tail
    return float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc))


def seeds_for_power(
    effect: float, sd: float, power: float = 0.8, alpha: float = 0.05, one_sided: bool = True
) -> int | None:
    """Smallest n >= 2 seeds at which a one-sample t-test of the seed means reaches ``power`` for a
    true mean ``effect`` and seed-mean SD ``sd``; None for effect <= 0, a bad SD or n > 10000."""
    if not (0 < power < 1 and 0 < alpha < 1):
        raise ValueError(f"power and alpha must lie in (0, 1), got {power}, {alpha}")
    if not (math.isfinite(effect) and effect > 0 and math.isfinite(sd) and sd > 0):
        return None
    if t_test_power(MAX_SEEDS, effect, sd, alpha, one_sided) < power:
        return None
    low, high = 2, MAX_SEEDS  # power rises with n: binary search for the first n that reaches it
    while low < high:
        mid = (low + high) // 2
        if t_test_power(mid, effect, sd, alpha, one_sided) >= power:
            high = mid
        else:
            low = mid + 1
    return low


def format_nested(summary: Mapping[str, Any]) -> str:
    """One line such as ``+0.021 [+0.004, +0.038], p = 0.008 (one-sided), 10 seeds x 4 branches``."""
    if summary.get("mean") is None:
        return "no finite values"
    text = f"{summary['mean']:+.3f}"
    if summary.get("ci_low") is not None and summary.get("ci_high") is not None:
        text += f" [{summary['ci_low']:+.3f}, {summary['ci_high']:+.3f}]"
    p = summary.get("p_value")
    if p is not None:
        text += ", p < 0.001" if p < 0.001 else f", p = {p:.3f}"
        text += " (one-sided)"
    n, lo, hi = summary["n_seeds"], summary["branches_min"], summary["branches_max"]
    branches = f"{lo}" if lo == hi else f"{lo}-{hi}"
    return f"{text}, {n} seed{'s' if n != 1 else ''} x {branches} branch{'es' if (lo, hi) != (1, 1) else ''}"
