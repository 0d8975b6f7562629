"""Tables over a study's stored runs: one row per arm, the spread over seeds, both checkpoints."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from attnlib.stats import median_std

CHECKPOINTS = ("best", "last")


def seed_table(results: pd.DataFrame, metrics: Sequence[str] = ("accuracy", "auc")) -> pd.DataFrame:
    """One row per run (arm, seed) with the selected epochs and test metrics of both checkpoints.

    ``results`` is ``RunStore.results(study)``; ``best`` = the best-validation-loss weights,
    ``last`` = the last epoch's weights.
    """
    columns = {"config.arm": "arm", "seed": "seed", "metrics.best_epoch": "best_epoch", "metrics.last_epoch": "last_epoch"}
    for ckpt in CHECKPOINTS:
        for metric in metrics:
            columns[f"metrics.{ckpt}.{metric}"] = f"{metric} ({ckpt})"
    missing = [c for c in columns if c not in results.columns]
    if missing:
        raise KeyError(f"results lack columns {missing}")
    return results[list(columns)].rename(columns=columns).sort_values(["arm", "seed"]).reset_index(drop=True)


def arm_summary(results: pd.DataFrame, metrics: Sequence[str] = ("accuracy", "auc")) -> pd.DataFrame:
    """Per arm: number of seeds, then median and standard deviation of each metric per checkpoint."""
    table = seed_table(results, metrics)
    value_columns = [c for c in table.columns if c not in ("arm", "seed")]
    summary = median_std(table, value_columns, "arm").numeric.drop(columns="n", level=1)
    summary.insert(0, ("seeds", "n"), table.groupby("arm").size())
    return summary
