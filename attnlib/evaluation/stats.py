"""Statistics over runs for all papers: one-way ANOVA (plain and Welch), Tukey HSD, t-tests (two-sample,
paired), median ± std, and for a benchmark grid: paired effects per cell with bootstrap intervals and Holm's
correction across cells.

Every function takes a long frame (one row per run, e.g. ``RunStore.results(study)``), the name of
a metric column and of a group column (names with dots or spaces, like ``metrics.best.auc`` or
``config.arm``, are fine). Rows whose metric or group is missing are dropped, with a log message.
The tests need at least two groups with at least two values each; otherwise they raise ValueError.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats as scipy_stats
from statsmodels.stats.anova import anova_lm
from statsmodels.stats.multicomp import pairwise_tukeyhsd
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.oneway import anova_oneway

log = logging.getLogger(__name__)


class MedianStd(NamedTuple):
    """``median_std``'s result: the numbers and the same as display strings."""

    numeric: pd.DataFrame
    display: pd.DataFrame


def one_way_anova(frame: pd.DataFrame, metric: str, group: str) -> dict[str, Any]:
    """One-way ANOVA of ``metric`` between the groups of ``group`` (the papers' test, equal variances).

    ``statsmodels`` OLS of ``metric ~ C(group)`` and ``anova_lm(typ=2)``. Returns ``F``, ``p``,
    ``df_between``, ``df_within`` and ``n`` (values per group, in sorted group order). F and p are NaN
    when no group varies (every value of each group the same): then the test has no within-group variance to
    compare with, and statsmodels returns rounding noise (scipy's ``f_oneway`` gives NaN when every value is the
    same and an infinite F when only the groups differ; neither is a finding with, e.g., 2 seeds per arm).
    """
    data = _groups(frame, metric, group)
    formula = f"Q({metric!r}) ~ C(Q({group!r}))"
    table = anova_lm(smf.ols(formula, data=data).fit(), typ=2)
    effect, residual = table.iloc[0], table.loc["Residual"]
    spread = data.groupby(group)[metric].agg(lambda v: float(np.ptp(v.to_numpy(float))))
    scale = max(1.0, float(data[metric].abs().max()))
    constant = bool((spread <= 1e-12 * scale).all())
    return {
        "F": np.nan if constant else float(effect["F"]),
        "p": np.nan if constant else float(effect["PR(>F)"]),
        "df_between": float(effect["df"]),
        "df_within": float(residual["df"]),
        "n": _counts(data, group),
    }


def welch_anova(frame: pd.DataFrame, metric: str, group: str) -> dict[str, Any]:
    """Welch's one-way ANOVA (unequal variances): ``anova_oneway(use_var="unequal")``.

    Returns ``F``, ``p``, ``df_between``, ``df_within`` (Welch's fractional denominator degrees of
    freedom) and ``n`` per group.
    """
    data = _groups(frame, metric, group)
    result = anova_oneway(data[metric].to_numpy(float), data[group].to_numpy(), use_var="unequal")
    df_between, df_within = result.df
    return {
        "F": float(result.statistic),
        "p": float(result.pvalue),
        "df_between": float(df_between),
        "df_within": float(df_within),
        "n": _counts(data, group),
    }


def tukey_hsd(frame: pd.DataFrame, metric: str, group: str, alpha: float = 0.05) -> pd.DataFrame:
    """Tukey's HSD post-hoc comparison of every pair of groups (``pairwise_tukeyhsd``).

    One row per pair: ``group1``, ``group2``, ``meandiff`` (mean of group2 minus mean of group1),
    ``p`` (family-wise adjusted), ``lower``/``upper`` (confidence interval at ``1 - alpha``) and
    ``reject``; unrounded, unlike statsmodels' summary table.
    """
    data = _groups(frame, metric, group)
    result = pairwise_tukeyhsd(data[metric].to_numpy(float), data[group].to_numpy(), alpha=alpha)
    return pd.DataFrame(
        {
            "group1": result.group_c,
            "group2": result.group_t,
            "meandiff": result.meandiffs,
            "p": result.pvalues,
            "lower": result.confint[:, 0],
            "upper": result.confint[:, 1],
            "reject": result.reject,
        }
    )


def t_test(
    frame: pd.DataFrame, metric: str, group: str, a: Hashable, b: Hashable, equal_var: bool = False
) -> dict[str, Any]:
    """Two-sample t-test of ``metric`` between groups ``a`` and ``b`` (``scipy.stats.ttest_ind``).

    Welch's test by default; ``equal_var=True`` gives Student's. Returns ``t`` (positive when ``a``'s
    mean is larger), ``p`` (two-sided), ``df``, ``mean_a``, ``mean_b``, ``n_a``, ``n_b``.
    """
    data = _groups(frame, metric, group)
    present = set(data[group])
    for name in (a, b):
        if name not in present:
            raise ValueError(
                f"no {metric!r} values for {group!r} = {name!r}; groups: {sorted(present, key=str)}"
            )
    x = data.loc[data[group] == a, metric].to_numpy(float)
    y = data.loc[data[group] == b, metric].to_numpy(float)
    result = scipy_stats.ttest_ind(x, y, equal_var=equal_var)
    return {
        "t": float(result.statistic),
        "p": float(result.pvalue),
        "df": float(result.df),
        "mean_a": float(x.mean()),
        "mean_b": float(y.mean()),
        "n_a": len(x),
        "n_b": len(y),
    }


def paired_t_test(frame: pd.DataFrame, metric: str, group: str, a: Hashable, b: Hashable, pair: str) -> dict[str, Any]:
    """Paired t-test of ``metric`` between groups ``a`` and ``b`` matched on ``pair`` (``scipy.stats.ttest_rel``),
    e.g. the same seed or fold before and after fine-tuning.

    Pairs missing either value are dropped. Returns ``t`` (positive when ``a``'s mean is larger), ``p``
    (two-sided), ``df``, ``mean_a``, ``mean_b``, ``n`` (pairs); ValueError with fewer than 2 pairs.
    """
    missing = [c for c in (metric, group, pair) if c not in frame.columns]
    if missing:
        raise KeyError(f"frame lacks columns {missing}")
    wide = frame[frame[group].isin([a, b])].pivot_table(index=pair, columns=group, values=metric, aggfunc="first")
    if a not in wide.columns or b not in wide.columns:
        raise ValueError(f"no {metric!r} values for {group!r} = {a!r} or {b!r}; groups: {sorted(set(frame[group]), key=str)}")
    both = wide[[a, b]].dropna().astype(float)
    if len(both) < 2:
        raise ValueError(f"{metric!r}: a paired t-test of {a!r} vs {b!r} needs at least 2 pairs, got {len(both)}")
    differences = both[a] - both[b]
    if np.ptp(differences) <= 1e-12 * max(1.0, float(np.abs(differences).max())):  # no variance (to round-off): no test
        return {"t": float("nan"), "p": float("nan"), "df": float(len(both) - 1),
                "mean_a": float(both[a].mean()), "mean_b": float(both[b].mean()), "n": len(both)}
    result = scipy_stats.ttest_rel(both[a], both[b])
    return {"t": float(result.statistic), "p": float(result.pvalue), "df": float(result.df),
            "mean_a": float(both[a].mean()), "mean_b": float(both[b].mean()), "n": len(both)}


def median_std(frame: pd.DataFrame, metrics: Sequence[str], group: str, digits: int = 3) -> MedianStd:
    """Per group, the median and the sample standard deviation (ddof=1) of each metric (Table 2 style).

    ``numeric``: index = groups, columns (metric, ``"median"`` / ``"std"`` / ``"n"``), where ``n``
    counts the metric's non-missing values; ``display``: one column per metric with strings like
    ``"0.781 ± 0.012"`` at ``digits`` decimals. A group with a single value has std NaN (shown "nan").
    """
    missing = [c for c in (*metrics, group) if c not in frame.columns]
    if missing:
        raise KeyError(f"frame lacks columns {missing}")
    grouped = frame.groupby(group)[list(metrics)]
    parts = {"median": grouped.median(), "std": grouped.std(ddof=1), "n": grouped.count()}
    numeric = pd.concat(parts, axis=1)
    numeric = numeric.swaplevel(axis=1)[[(m, s) for m in metrics for s in ("median", "std", "n")]]
    display = pd.DataFrame(
        {
            m: [
                f"{med:.{digits}f} ± {sd:.{digits}f}"
                for med, sd in zip(numeric[m, "median"], numeric[m, "std"], strict=True)
            ]
            for m in metrics
        },
        index=numeric.index,
    )
    return MedianStd(numeric, display)


def _groups(frame: pd.DataFrame, metric: str, group: str) -> pd.DataFrame:
    """The ``metric`` and ``group`` columns without missing values; checks there is something to test."""
    missing = [c for c in (metric, group) if c not in frame.columns]
    if missing:
        raise KeyError(f"frame lacks columns {missing}")
    data = frame[[metric, group]].dropna()
    if len(data) < len(frame):
        log.info("%s by %s: dropped %d row(s) with a missing value", metric, group, len(frame) - len(data))
    data = data.astype({metric: float})
    counts = data.groupby(group).size()
    if len(counts) < 2:
        raise ValueError(
            f"{metric!r} by {group!r}: a test needs at least 2 groups, "
            f"got {len(counts)} ({list(counts.index)})"
        )
    small = counts[counts < 2]
    if len(small):
        raise ValueError(
            f"{metric!r} by {group!r}: every group needs at least 2 values; "
            + ", ".join(f"{g!r} has {n}" for g, n in small.items())
        )
    return data


def _counts(data: pd.DataFrame, group: str) -> dict[Hashable, int]:
    """Number of values per group, in sorted group order, as plain Python ints."""
    sizes = data.groupby(group).size()
    return {(g.item() if isinstance(g, np.generic) else g): int(n) for g, n in sizes.items()}


def paired_tests(
    frame: pd.DataFrame, metric: str, group: str, pairs: Sequence[tuple[str, str]], pair: str = "replicate"
) -> pd.DataFrame:
    """Paired t-tests (matched on ``pair``, e.g. the seed) of ``metric`` for each (a, b) in ``pairs``, plus the
    one-way ANOVA over all groups of ``frame``; one row per test."""
    rows = [
        {
            "comparison": f"{a} vs {b}",
            "metric": metric,
            "test": "paired t",
            **paired_t_test(frame, metric, group, a, b, pair=pair),
        }
        for a, b in pairs
    ]
    anova = one_way_anova(frame, metric, group)
    rows.append(
        {
            "comparison": f"all {frame[group].nunique()} {group}s",
            "metric": metric,
            "test": "one-way ANOVA",
            "p": anova["p"],
            "F": anova["F"],
        }
    )
    return pd.DataFrame(rows)


#: What every verdict computed under the smoke profile says first.
SMOKE_CAVEAT = (
    "Smoke profile: these numbers test the code, not the method (a few images, a few epochs); "
    "nothing below is a finding about the paper."
)


def with_profile_caveat(verdict: str, profile: str | None) -> str:
    """``verdict`` as a report prints it: after :data:`SMOKE_CAVEAT` when ``profile`` is ``smoke``."""
    return f"{SMOKE_CAVEAT}\n{verdict}" if profile == "smoke" else verdict


def significance(test: Mapping[str, Any], alpha: float, higher: bool) -> str:
    """Words for a two-group test result (``mean_a``, ``mean_b``, ``p``): an improvement or a deterioration
    of a over b at p < alpha (``higher``: larger is better), not significant, or no test (p is NaN: too
    few values)."""
    if not np.isfinite(test["p"]):
        return "no test: too few values or no variation"
    better = test["mean_a"] > test["mean_b"] if higher else test["mean_a"] < test["mean_b"]
    if test["p"] < alpha:
        return f"{'an improvement' if better else 'a deterioration'} at p < {alpha}"
    return f"not significant at p < {alpha}"


def outcome_words(test: Mapping[str, Any], alpha: float, higher: bool, name: str = "p") -> str:
    """``"<significance>, <name> = <p>"`` for a two-group test result; no p when there was no test."""
    words = significance(test, alpha, higher)
    return f"{words}, {name} = {test['p']:.3g}" if np.isfinite(test["p"]) else words


def describe_change(test: Mapping[str, Any], label: str, alpha: float, higher: bool, name: str = "p") -> str:
    """``"<label> <mean_b> -> <mean_a> (<significance>, <name> = <p>)"`` for a two-group test result."""
    return f"{label} {test['mean_b']:.3f} -> {test['mean_a']:.3f} ({outcome_words(test, alpha, higher, name)})"


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (``multipletests(method="holm")``) of one family of tests.

    NaN entries (no test) stay NaN and do not count in the family's size.
    """
    p = np.asarray(p_values, dtype=float).ravel()
    adjusted = np.full(p.shape, np.nan)
    tested = np.isfinite(p)
    if tested.any():
        adjusted[tested] = multipletests(p[tested], method="holm")[1]
    return adjusted


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (``scipy.stats.bootstrap``, ``method="percentile"``,
    resampling drawn by ``numpy.random.default_rng(seed)``).

    NaN values are dropped; (NaN, NaN) with fewer than 2 values or when they are all the same (to round-off),
    where every resample has the same mean and the interval says nothing.
    """
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if len(x) < 2 or np.ptp(x) <= 1e-12 * max(1.0, float(np.abs(x).max())):
        return math.nan, math.nan
    result = scipy_stats.bootstrap(
        (x,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


EFFECT_COLUMNS = ("n", "mean_reference", "mean_arm", "effect", "ci_low", "ci_high", "t", "p", "p_holm")


def paired_effects(
    frame: pd.DataFrame, *, value: str, arm: str, reference: str, pair: str, cells: Sequence[str]
) -> pd.DataFrame:
    """Each arm against ``reference`` in every cell of a grid, paired on ``pair`` (e.g. the seed).

    A cell is one combination of the ``cells`` columns (e.g. dataset and regime). For each cell and each arm other
    than ``reference`` present in it, over the pairs with both values: ``n`` (pairs), ``mean_reference``,
    ``mean_arm``, ``effect`` (the mean paired difference, arm - reference), ``ci_low`` / ``ci_high``
    (:func:`bootstrap_ci` of the differences), ``t`` and ``p`` (two-sided :func:`paired_t_test`, t > 0 when the
    arm is higher; NaN with fewer than 2 pairs or constant differences) and ``p_holm``: :func:`holm` over every
    row of the result (one family: the whole grid). One row per (cell, arm): the ``cells`` columns, ``arm``
    (the column of that name), then :data:`EFFECT_COLUMNS`.
    """
    missing = [c for c in (value, arm, pair, *cells) if c not in frame.columns]
    if missing:
        raise KeyError(f"frame lacks columns {missing}")
    rows = []
    for key, part in frame.groupby(list(cells), sort=True, dropna=False):
        wide = part.pivot_table(index=pair, columns=arm, values=value, aggfunc="first")
        if reference not in wide.columns:
            log.info("cell %s has no %r runs: no effects", key, reference)
            continue
        for name in (c for c in wide.columns if c != reference):
            both = wide[[name, reference]].dropna().astype(float)
            differences = (both[name] - both[reference]).to_numpy()
            test = (paired_t_test(part, value, arm, name, reference, pair=pair) if len(both) >= 2
                    else {"t": math.nan, "p": math.nan})
            rows.append({
                **dict(zip(cells, key, strict=True)),
                arm: name, "n": len(both),
                "mean_reference": float(both[reference].mean()) if len(both) else math.nan,
                "mean_arm": float(both[name].mean()) if len(both) else math.nan,
                "effect": float(differences.mean()) if len(both) else math.nan,
                **dict(zip(("ci_low", "ci_high"), bootstrap_ci(differences), strict=True)),
                "t": test["t"], "p": test["p"],
            })
    effects = pd.DataFrame(rows, columns=[*cells, arm, *EFFECT_COLUMNS[:-1]])
    effects["p_holm"] = holm(effects["p"].to_numpy(float))
    return effects
