"""iml_hf.reporting.nested_stats: hand-computed nested summaries and ANOVA components, unbalanced and missing
data, agreement with statsmodels (MixedLM REML, OLS ANOVA, TTestPower), baseline correction, JSON."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from iml_hf.reporting.nested_stats import (
    as_nested,
    baseline_corrected,
    baseline_differences,
    format_nested,
    nested_summary,
    seeds_for_power,
    t_test_power,
    variance_components,
)

# 3 seeds x 2 branches: seed means 0.2, 0.1, 0.4; within each seed the branches are mean +- 0.1
HAND = {0: {0: 0.1, 1: 0.3}, 1: {0: 0.0, 1: 0.2}, 2: {0: 0.3, 1: 0.5}}


def test_hand_computed_summary():
    s = nested_summary(HAND)
    assert s["seed_means"] == pytest.approx({0: 0.2, 1: 0.1, 2: 0.4})
    mean = 0.7 / 3
    sd = math.sqrt(((0.2 - mean) ** 2 + (0.1 - mean) ** 2 + (0.4 - mean) ** 2) / 2)  # = sqrt(7/300)
    assert sd == pytest.approx(math.sqrt(7 / 300))
    se = sd / math.sqrt(3)
    t975_df2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2)
    t = mean / se
    p = 0.5 * (1 - t / math.sqrt(t * t + 2))  # closed-form upper tail of Student t with 2 df
    assert s["mean"] == pytest.approx(mean, abs=1e-12)
    assert s["sd_seed_means"] == pytest.approx(sd, abs=1e-12)
    assert s["se"] == pytest.approx(se, abs=1e-12)
    assert s["ci_low"] == pytest.approx(mean - t975_df2 * se, abs=1e-9)
    assert s["ci_high"] == pytest.approx(mean + t975_df2 * se, abs=1e-9)
    assert s["t"] == pytest.approx(t, rel=1e-12)
    assert s["p_value"] == pytest.approx(p, rel=1e-9)
    assert (s["n_seeds"], s["n_values"], s["branches_min"], s["branches_max"]) == (3, 6, 2, 2)
    assert s["alternative"] == "greater" and s["confidence"] == 0.95
    # a wider confidence level widens the interval; the list-of-triples form gives the same answer
    wide = nested_summary(HAND, confidence=0.99)
    assert wide["ci_high"] - wide["ci_low"] > s["ci_high"] - s["ci_low"]
    triples = [(seed, b, v) for seed, row in HAND.items() for b, v in row.items()]
    assert nested_summary(triples) == s
    assert format_nested(s) == "+0.233 [-0.146, +0.613], p = 0.059 (one-sided), 3 seeds x 2 branches"


def test_hand_computed_variance_components():
    v = variance_components(HAND)
    # SSW = 3 seeds * 2 * 0.1^2 = 0.06 on 6 - 3 = 3 df; SSB = 2 * sum (seed mean - 7/30)^2 = 14/150 on 2 df
    assert v["ms_within"] == pytest.approx(0.02, abs=1e-12)
    assert v["ms_between"] == pytest.approx(7 / 150, abs=1e-12)
    assert v["n0"] == pytest.approx(2.0)
    assert v["var_within"] == pytest.approx(0.02, abs=1e-12)
    assert v["var_between"] == pytest.approx((7 / 150 - 0.02) / 2, abs=1e-12)  # = 1/75
    assert v["icc"] == pytest.approx(0.4, abs=1e-12)
    assert v["between_truncated"] is False
    assert (v["df_between"], v["df_within"]) == (2, 3)
    assert v["f_stat"] == pytest.approx((7 / 150) / 0.02)


def test_negative_between_variance_is_truncated():
    v = variance_components({0: {0: 0.0, 1: 1.0}, 1: {0: 1.0, 1: 0.0}})  # equal seed means, MSB = 0
    assert v["var_between_raw"] == pytest.approx(-0.25)
    assert v["var_between"] == 0.0 and v["between_truncated"] is True and v["icc"] == 0.0


def test_unbalanced_design():
    data = {0: {3: 1.0}, 1: {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0}, 2: {0: 2.0, 1: 4.0}}
    s = nested_summary(data)
    assert s["mean"] == pytest.approx((1.0 + 1.5 + 3.0) / 3)  # seeds weigh equally, not values
    assert (s["n_seeds"], s["n_values"], s["branches_min"], s["branches_max"]) == (3, 7, 1, 4)
    assert format_nested(s).endswith("3 seeds x 1-4 branches")
    v = variance_components(data)
    grand = 13 / 7
    msb = (1 * (1.0 - grand) ** 2 + 4 * (1.5 - grand) ** 2 + 2 * (3.0 - grand) ** 2) / 2
    msw = (5.0 + 2.0) / 4  # seed 1: 2.25 + 0.25 + 0.25 + 2.25; seed 2: 1 + 1
    n0 = (7 - (1 + 16 + 4) / 7) / 2
    assert v["n0"] == pytest.approx(n0) and n0 == pytest.approx(2.0)
    assert v["ms_between"] == pytest.approx(msb) and v["ms_within"] == pytest.approx(msw)
    assert v["var_between_raw"] == pytest.approx((msb - msw) / n0)
    assert v["grand_mean"] == pytest.approx(grand)
    # the mean squares agree with statsmodels' one-way ANOVA table of an OLS fit
    pd = pytest.importorskip("pandas")
    smf = pytest.importorskip("statsmodels.formula.api")
    from statsmodels.stats.anova import anova_lm

    frame = pd.DataFrame([(seed, y) for seed, row in data.items() for y in row.values()], columns=["seed", "y"])
    table = anova_lm(smf.ols("y ~ C(seed)", frame).fit())
    assert v["ms_between"] == pytest.approx(table.loc["C(seed)", "mean_sq"], rel=1e-10)
    assert v["ms_within"] == pytest.approx(table.loc["Residual", "mean_sq"], rel=1e-10)
    assert v["f_p_value"] == pytest.approx(table.loc["C(seed)", "PR(>F)"], rel=1e-8)


def test_nan_ignored_and_single_seed():
    data = {0: {0: 0.1, 1: math.nan}, 1: {0: math.nan, 1: None}, 2: {0: 0.3, 1: 0.5}}
    s = nested_summary(data)
    assert s["n_seeds"] == 2 and s["n_values"] == 3 and 1 not in s["seed_means"]
    assert s["seed_means"] == pytest.approx({0: 0.1, 2: 0.4})
    assert s["mean"] == pytest.approx(0.25) and s["branches_min"] == 1
    one = nested_summary({7: {0: 0.02, 1: 0.04, 2: math.inf}})
    assert one["mean"] == pytest.approx(0.03) and one["n_seeds"] == 1
    assert one["ci_low"] is None and one["ci_high"] is None and one["p_value"] is None
    assert one["sd_seed_means"] is None
    assert format_nested(one) == "+0.030, 1 seed x 2 branches"
    v = variance_components({7: {0: 0.02, 1: 0.04}})
    assert v["var_within"] == pytest.approx(2e-4) and v["var_between"] is None and v["icc"] is None
    empty = nested_summary({0: {0: math.nan}})
    assert empty["mean"] is None and empty["n_seeds"] == 0 and format_nested(empty) == "no finite values"
    flat = nested_summary({0: {0: 0.1}, 1: {0: 0.1}})  # no spread: the t-test is undefined
    assert flat["ci_low"] == flat["ci_high"] == pytest.approx(0.1) and flat["p_value"] is None
    with pytest.raises(ValueError, match="duplicate"):
        as_nested([(0, 0, 1.0), (0, 0, 2.0)])


def test_mixedlm_agreement_balanced():
    mixed = pytest.importorskip("statsmodels.regression.mixed_linear_model")
    rng = np.random.default_rng(0)
    n_seeds, n_branches = 10, 4
    y = 0.01 + rng.normal(0, 0.02, n_seeds)[:, None] + rng.normal(0, 0.04, (n_seeds, n_branches))
    data = {s: {b: float(y[s, b]) for b in range(n_branches)} for s in range(n_seeds)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mixed.MixedLM(y.ravel(), np.ones((y.size, 1)), groups=np.repeat(np.arange(n_seeds), n_branches)).fit(
            reml=True
        )
    s, v = nested_summary(data), variance_components(data)
    assert fit.converged and v["between_truncated"] is False
    assert float(fit.fe_params[0]) == pytest.approx(s["mean"], abs=1e-12)
    # REML = ANOVA on balanced data when positive; the optimiser lands within ~2e-4 relative of the
    # closed form on seeds 0-7 (1.7e-6 on this one), hence rel 1e-3
    assert float(np.asarray(fit.cov_re)[0, 0]) == pytest.approx(v["var_between"], rel=1e-3)
    assert float(fit.scale) == pytest.approx(v["var_within"], rel=1e-3)
    # and the fixed-effect SE is the SE of the seed means (both are sqrt(MSB / N))
    assert float(fit.bse[0]) == pytest.approx(s["se"], rel=1e-3)


@pytest.mark.parametrize(
    "effect, sd, power, alpha, one_sided",
    [
        (0.02, 0.03, 0.8, 0.05, True),
        (0.5, 1.0, 0.8, 0.05, True),
        (0.1, 1.0, 0.9, 0.05, True),
        (1.0, 1.0, 0.8, 0.05, False),
        (0.3, 1.0, 0.8, 0.01, False),
        (3.0, 1.0, 0.8, 0.05, True),
    ],
)
def test_seeds_for_power_matches_statsmodels(effect, sd, power, alpha, one_sided):
    sm_power = pytest.importorskip("statsmodels.stats.power")
    n = seeds_for_power(effect, sd, power, alpha, one_sided)
    expected = sm_power.TTestPower().solve_power(
        effect_size=effect / sd, alpha=alpha, power=power, alternative="larger" if one_sided else "two-sided"
    )
    assert n == max(2, math.ceil(expected - 1e-9))
    for m in (2, 5, n):  # the power curve itself, both tails when two-sided
        assert t_test_power(m, effect, sd, alpha, one_sided) == pytest.approx(
            sm_power.TTestPower().power(effect / sd, m, alpha, alternative="larger" if one_sided else "two-sided"),
            rel=1e-6,
        )
    assert t_test_power(n, effect, sd, alpha, one_sided) >= power
    if n > 2:
        assert t_test_power(n - 1, effect, sd, alpha, one_sided) < power


def test_seeds_for_power_none():
    assert seeds_for_power(0.0, 1.0) is None and seeds_for_power(-0.1, 1.0) is None
    assert seeds_for_power(0.1, 0.0) is None and seeds_for_power(0.1, math.nan) is None
    assert seeds_for_power(0.1, math.inf) is None
    assert seeds_for_power(1e-4, 1.0) is None  # needs ~6e8 seeds, beyond the cap
    # two-sided power far in the lower tail stays finite (scipy's nct.cdf gives NaN there)
    assert t_test_power(100, 1.0, 1.0, one_sided=False) == pytest.approx(1.0)
    assert t_test_power(10, 1e-9, 1.0, one_sided=False) == pytest.approx(0.05)  # both tails at no effect
    with pytest.raises(ValueError):
        seeds_for_power(0.1, 1.0, power=1.0)


def test_baseline_corrected_pairs_before_averaging():
    values = {0: {0: 1.0, 1: 2.0}, 1: {0: 1.0, 1: 3.0}}
    baselines = {0: {0: 0.5, 1: math.nan}, 1: {0: 1.0, 1: 1.0}, 2: {0: 0.0}}
    assert baseline_differences(values, baselines) == {0: {0: 0.5}, 1: {0: 0.0, 1: 2.0}}
    out = baseline_corrected(values, baselines)
    assert out["summary"]["seed_means"] == pytest.approx({0: 0.5, 1: 1.0})
    assert out["summary"]["mean"] == pytest.approx(0.75)
    # subtracting the seed means instead would give (1.5 - 0.5 + 2.0 - 1.0) / 2 = 1.0
    diff_of_means = nested_summary(values)["mean"] - nested_summary(baselines)["mean"]
    assert diff_of_means != pytest.approx(0.75)
    assert out["n_unpaired"] == 2  # seed 0 branch 1 has no baseline; seed 2 has no value


def test_json_safe_outputs():
    cases = [
        HAND,
        {0: {0: 0.1}},
        {0: {0: math.nan}},
        {},
        {0: {0: 0.1}, 1: {0: 0.1}},
        {0: {0: 0.1, 1: math.inf}, 1: {0: 0.3, 1: -math.inf}},
    ]
    for data in cases:
        for result in (nested_summary(data), variance_components(data), baseline_corrected(data, data)):
            text = json.dumps(result, allow_nan=False)
            assert json.loads(text).keys() == result.keys()
    single = nested_summary({0: {0: 0.1}})
    assert all(v is None or isinstance(v, (int, float, str, dict)) for v in single.values())
    assert isinstance(single["n_seeds"], int) and isinstance(nested_summary(HAND)["mean"], float)
