"""attnlib.evaluation.stats against scipy, a hand-written Welch formula and hand-computed medians."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from statsmodels.stats.multitest import multipletests

from attnlib.evaluation.stats import (
    SMOKE_CAVEAT,
    bootstrap_ci,
    describe_change,
    holm,
    median_std,
    one_way_anova,
    paired_effects,
    paired_t_test,
    t_test,
    tukey_hsd,
    welch_anova,
    with_profile_caveat,
)

METRIC, GROUP = "metrics.best.auc", "config arm"  # a dot and a space, as in RunStore.results frames
SAMPLES = {
    "baseline": [0.71, 0.73, 0.72, 0.70, 0.74],
    "gg-cam": [0.78, 0.80, 0.76, 0.81, 0.79, 0.83],
    "public code": [0.69, 0.75, 0.72, 0.77],
}


def _frame(samples: dict[str, list[float]] = SAMPLES) -> pd.DataFrame:
    rows = [(g, v) for g, values in samples.items() for v in values]
    return pd.DataFrame(rows, columns=[GROUP, METRIC])


def _welch_by_hand(samples: list[np.ndarray]) -> tuple[float, float, float, float]:
    """Welch (1951): weights w_i = n_i / s_i^2 around the weighted mean; returns F, df1, df2, p."""
    k = len(samples)
    n = np.array([len(x) for x in samples], dtype=float)
    means = np.array([x.mean() for x in samples])
    w = n / np.array([x.var(ddof=1) for x in samples])
    grand = (w * means).sum() / w.sum()
    between = (w * (means - grand) ** 2).sum() / (k - 1)
    lam = ((1 - w / w.sum()) ** 2 / (n - 1)).sum()
    f = between / (1 + 2 * (k - 2) / (k**2 - 1) * lam)
    df2 = (k**2 - 1) / (3 * lam)
    return f, k - 1, df2, scipy_stats.f.sf(f, k - 1, df2)


def test_one_way_anova_equals_scipy():
    result = one_way_anova(_frame(), METRIC, GROUP)
    expected = scipy_stats.f_oneway(*SAMPLES.values())
    assert result["F"] == pytest.approx(expected.statistic, rel=1e-10)
    assert result["p"] == pytest.approx(expected.pvalue, rel=1e-10)
    assert (result["df_between"], result["df_within"]) == (2, 15 - 3)
    assert result["n"] == {"baseline": 5, "gg-cam": 6, "public code": 4}


def test_welch_anova_equals_hand_formula():
    result = welch_anova(_frame(), METRIC, GROUP)
    f, df1, df2, p = _welch_by_hand([np.array(v) for v in SAMPLES.values()])
    assert result["F"] == pytest.approx(f, rel=1e-10)
    assert result["df_between"] == df1 and result["df_within"] == pytest.approx(df2, rel=1e-10)
    assert result["p"] == pytest.approx(p, rel=1e-10)
    assert result["F"] != pytest.approx(one_way_anova(_frame(), METRIC, GROUP)["F"], rel=1e-3)


def test_tukey_hsd_equals_scipy():
    table = tukey_hsd(_frame(), METRIC, GROUP)
    names = list(SAMPLES)
    assert list(table.columns) == ["group1", "group2", "meandiff", "p", "lower", "upper", "reject"]
    assert table[["group1", "group2"]].values.tolist() == [
        ["baseline", "gg-cam"],
        ["baseline", "public code"],
        ["gg-cam", "public code"],
    ]
    expected = scipy_stats.tukey_hsd(*SAMPLES.values())
    ci = expected.confidence_interval(0.95)
    for row in table.itertuples():
        i, j = names.index(row.group1), names.index(row.group2)
        assert row.meandiff == pytest.approx(np.mean(SAMPLES[row.group2]) - np.mean(SAMPLES[row.group1]))
        assert row.p == pytest.approx(expected.pvalue[i, j], rel=1e-8)
        assert (row.lower, row.upper) == pytest.approx((-ci.high[i, j], -ci.low[i, j]), rel=1e-4)
        assert row.reject == (row.p < 0.05)
    assert table.reject.tolist() == [True, False, True]


@pytest.mark.parametrize("equal_var", [False, True])
def test_t_test_equals_scipy(equal_var):
    result = t_test(_frame(), METRIC, GROUP, "gg-cam", "baseline", equal_var=equal_var)
    expected = scipy_stats.ttest_ind(SAMPLES["gg-cam"], SAMPLES["baseline"], equal_var=equal_var)
    assert result["t"] == pytest.approx(expected.statistic, rel=1e-12) and result["t"] > 0
    assert result["p"] == pytest.approx(expected.pvalue, rel=1e-12)
    assert result["df"] == pytest.approx(expected.df, rel=1e-12)
    assert (result["n_a"], result["n_b"]) == (6, 5)
    assert result["mean_a"] == pytest.approx(np.mean(SAMPLES["gg-cam"]))
    if equal_var:
        assert result["df"] == 9



def test_paired_t_test_equals_scipy_and_matches_pairs():
    before = [0.70, 0.72, 0.65, 0.80, 0.75]
    after = [0.74, 0.71, 0.70, 0.86, 0.77]
    frame = pd.DataFrame({"seed": [*range(5), *range(5)][::-1], "arm": ["before"] * 5 + ["after"] * 5,
                          "acc": [*before[::-1], *after[::-1]]})
    frame = frame.sample(frac=1, random_state=0)  # row order must not matter: pairs are matched on seed
    result = paired_t_test(frame, "acc", "arm", "after", "before", pair="seed")
    expected = scipy_stats.ttest_rel(after, before)
    assert result["t"] == pytest.approx(expected.statistic, rel=1e-12) and result["t"] > 0
    assert result["p"] == pytest.approx(expected.pvalue, rel=1e-12)
    assert result["df"] == 4 and result["n"] == 5
    diff = np.subtract(after, before)  # by hand: t = mean(d) / (sd(d) / sqrt(n))
    assert result["t"] == pytest.approx(diff.mean() / (diff.std(ddof=1) / math.sqrt(5)))
    with pytest.raises(ValueError, match="at least 2 pairs"):
        paired_t_test(frame[frame["seed"] < 1], "acc", "arm", "after", "before", pair="seed")


def test_median_std_by_hand():
    frame = _frame().assign(recall=lambda f: np.where(f[GROUP] == "baseline", 1.0, 0.5))
    frame.loc[0, "recall"] = np.nan  # missing values are skipped, and counted out of n
    out = median_std(frame, [METRIC, "recall"], GROUP)
    numeric, display = out
    assert numeric.index.tolist() == ["baseline", "gg-cam", "public code"]
    assert numeric.loc["baseline", (METRIC, "median")] == pytest.approx(0.72)
    # gg-cam: median of 6 values = (0.79 + 0.80) / 2; std: mean 0.795, squared deviations sum 0.00295
    assert numeric.loc["gg-cam", (METRIC, "median")] == pytest.approx(0.795)
    assert numeric.loc["gg-cam", (METRIC, "std")] == pytest.approx(math.sqrt(0.00295 / 5))
    assert numeric.loc["baseline", (METRIC, "std")] == pytest.approx(math.sqrt(0.001 / 4))
    assert numeric.loc["baseline", ("recall", "n")] == 4 and numeric.loc["baseline", (METRIC, "n")] == 5
    assert display.loc["gg-cam", METRIC] == f"0.795 ± {math.sqrt(0.00295 / 5):.3f}" == "0.795 ± 0.024"
    assert display.loc["baseline", "recall"] == "1.000 ± 0.000"
    assert out.display is display and list(display.columns) == [METRIC, "recall"]


def test_single_value_group_has_nan_std_in_the_summary():
    out = median_std(_frame({"a": [0.5], "b": [0.1, 0.3]}), [METRIC], GROUP, digits=2)
    assert out.display[METRIC].tolist() == ["0.50 ± nan", "0.20 ± 0.14"]


@pytest.mark.parametrize("test", [one_way_anova, welch_anova, tukey_hsd])
def test_errors_name_the_metric_and_group(test):
    with pytest.raises(ValueError, match=r"'metrics.best.auc' by 'config arm'.*2 groups, got 1"):
        test(_frame({"a": [0.1, 0.2, 0.3]}), METRIC, GROUP)
    with pytest.raises(ValueError, match=r"'metrics.best.auc' by 'config arm'.*'b' has 1"):
        test(_frame({"a": [0.1, 0.2], "b": [0.3]}), METRIC, GROUP)
    with pytest.raises(KeyError, match="nope"):
        test(_frame(), "nope", GROUP)


def test_missing_values_are_dropped_before_testing():
    frame = _frame()
    frame.loc[len(frame)] = ["baseline", np.nan]
    assert one_way_anova(frame, METRIC, GROUP) == one_way_anova(_frame(), METRIC, GROUP)
    with pytest.raises(ValueError, match="'b' has 1"):
        welch_anova(_frame({"a": [0.1, 0.2], "b": [0.3, np.nan]}), METRIC, GROUP)


def test_t_test_unknown_group():
    with pytest.raises(ValueError, match=r"'config arm' = 'other'"):
        t_test(_frame(), METRIC, GROUP, "baseline", "other")


def test_describe_change_words_and_missing_tests():
    test = {"mean_a": 0.8, "mean_b": 0.7, "p": 0.01}
    assert describe_change(test, "accuracy", 0.05, higher=True) == (
        "accuracy 0.700 -> 0.800 (an improvement at p < 0.05, p = 0.01)"
    )
    assert "a deterioration" in describe_change(test, "error", 0.05, higher=False)
    single = describe_change({"mean_a": 0.8, "mean_b": 0.7, "p": float("nan")}, "accuracy", 0.05, higher=True)
    assert single == "accuracy 0.700 -> 0.800 (no test: too few values or no variation)"
    assert "nan" not in single


def test_smoke_verdicts_say_they_test_the_code():
    assert with_profile_caveat("X improved.", "smoke") == f"{SMOKE_CAVEAT}\nX improved."
    assert "test the code, not the method" in SMOKE_CAVEAT
    assert with_profile_caveat("X improved.", "quick") == "X improved."
    assert with_profile_caveat("X improved.", None) == "X improved."


def test_one_way_anova_of_identical_values_is_nan_like_scipy():
    frame = pd.DataFrame({"g": ["a"] * 3 + ["b"] * 3, "x": [1.0] * 6})
    result = one_way_anova(frame, "x", "g")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = scipy_stats.f_oneway([1.0] * 3, [1.0] * 3)
    assert np.isnan(result["F"]) and np.isnan(result["p"]) and np.isnan(expected.pvalue)
    assert (result["df_between"], result["df_within"]) == (1.0, 4.0)


def test_one_way_anova_without_variation_within_the_groups_is_no_test():
    # 2 seeds per arm, each arm constant (e.g. Eq. 12 on a tiny test set: 0, 0 vs 1, 1): scipy gives an
    # infinite F, statsmodels p ~ 1e-32 from round-off; the test has no within-group variance, so no test
    frame = pd.DataFrame({"g": ["a", "a", "b", "b"], "x": [0.0, 0.0, 1.0, 1.0]})
    result = one_way_anova(frame, "x", "g")
    assert np.isnan(result["F"]) and np.isnan(result["p"])
    varied = one_way_anova(frame.assign(x=[0.0, 0.1, 1.0, 1.0]), "x", "g")  # one group varies: a real test
    expected = scipy_stats.f_oneway([0.0, 0.1], [1.0, 1.0])
    assert varied["F"] == pytest.approx(expected.statistic) and varied["p"] == pytest.approx(expected.pvalue)


def test_paired_t_test_of_constant_differences_is_nan_without_a_warning():
    frame = pd.DataFrame({"g": ["a", "b"] * 3, "seed": [0, 0, 1, 1, 2, 2], "x": [0.5, 0.4, 0.6, 0.5, 0.7, 0.6]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = paired_t_test(frame, "x", "g", "a", "b", "seed")
    assert np.isnan(result["t"]) and np.isnan(result["p"]) and result["n"] == 3
    assert result["mean_a"] == pytest.approx(0.6) and result["mean_b"] == pytest.approx(0.5)


def test_holm_matches_statsmodels_and_a_hand_computed_example():
    p = np.array([0.001, 0.2, 0.013, 0.04, 0.5, 0.011])
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1])
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04; running maximum: 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])


def test_holm_leaves_nan_out_of_the_family():
    adjusted = holm([0.01, np.nan, 0.04, 0.03])
    assert np.isnan(adjusted[1])
    np.testing.assert_allclose(adjusted[[0, 2, 3]], [0.03, 0.06, 0.06])  # a family of 3, not 4
    assert np.isnan(holm([np.nan, np.nan])).all()


def test_bootstrap_ci_is_the_percentile_interval_of_resampled_means():
    values = np.array([0.12, -0.05, 0.31, 0.08, 0.22, 0.02])
    rng = np.random.default_rng(7)
    means = values[rng.integers(0, len(values), (999, len(values)))].mean(axis=1)
    expected = np.percentile(means, [5, 95])  # 90 % interval
    np.testing.assert_allclose(bootstrap_ci(values, confidence=0.9, n_resamples=999, seed=7), expected)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high


@pytest.mark.parametrize("values", [[0.3], [], [0.2, 0.2, 0.2]])
def test_bootstrap_ci_is_nan_without_spread(values):
    assert all(math.isnan(v) for v in bootstrap_ci(values))


def _grid() -> pd.DataFrame:
    """Two cells (dataset x regime), a baseline and two arms over 5 seeds; rrr lacks seed 4 in cell (a, few),
    gg has a single seed in cell (b, many) and a constant shift in cell (a, few)."""
    rng = np.random.default_rng(3)
    rows = []
    for dataset, regime in (("a", "few"), ("b", "many")):
        base = rng.uniform(0.6, 0.8, 5)
        for seed in range(5):
            rows.append((dataset, regime, "baseline", seed, base[seed]))
            if not (dataset == "a" and seed == 4):
                rows.append((dataset, regime, "rrr", seed, base[seed] + rng.normal(0.03, 0.02)))
            if dataset == "a":
                rows.append((dataset, regime, "gg", seed, base[seed] + 0.05))
            elif seed == 0:
                rows.append((dataset, regime, "gg", seed, base[seed] + 0.1))
    return pd.DataFrame(rows, columns=["dataset", "regime", "config.arm", "seed", "acc"])


def test_paired_effects_match_scipy_and_statsmodels():
    frame = _grid()
    effects = paired_effects(frame, value="acc", arm="config.arm", reference="baseline", pair="seed",
                             cells=["dataset", "regime"])
    assert list(effects.columns[:3]) == ["dataset", "regime", "config.arm"]
    assert len(effects) == 4
    for _, row in effects.iterrows():
        part = frame[frame["dataset"] == row["dataset"]]
        wide = part.pivot(index="seed", columns="config.arm", values="acc")[[row["config.arm"], "baseline"]].dropna()
        differences = wide[row["config.arm"]] - wide["baseline"]
        assert row["n"] == len(wide)
        assert row["effect"] == pytest.approx(differences.mean())
        assert row["mean_arm"] == pytest.approx(wide[row["config.arm"]].mean())
        assert row["mean_reference"] == pytest.approx(wide["baseline"].mean())
        if row["config.arm"] == "rrr":
            expected = scipy_stats.ttest_rel(wide["rrr"], wide["baseline"])
            assert (row["t"], row["p"]) == pytest.approx((expected.statistic, expected.pvalue))
            interval = scipy_stats.bootstrap((differences.to_numpy(),), np.mean, method="percentile",
                                             rng=np.random.default_rng(0)).confidence_interval
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((interval.low, interval.high))
    by = effects.set_index(["dataset", "config.arm"])
    assert by.loc[("a", "rrr"), "n"] == 4
    assert by.loc[("a", "gg"), "effect"] == pytest.approx(0.05)
    assert np.isnan(by.loc[("a", "gg"), "p"])  # constant differences: no test
    assert by.loc[("b", "gg"), "n"] == 1 and np.isnan(by.loc[("b", "gg"), "p"])  # one pair: no test
    assert np.isnan(by.loc[("b", "gg"), ["ci_low", "ci_high", "p_holm"]].to_numpy(float)).all()
    tested = effects["p"].notna()
    assert tested.sum() == 2
    np.testing.assert_allclose(effects.loc[tested, "p_holm"], multipletests(effects.loc[tested, "p"], method="holm")[1])
