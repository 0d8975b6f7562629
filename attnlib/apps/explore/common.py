"""Summaries the exploration notebooks share: images per class and split, a cue's association with the label.

:class:`Labelled` is what the summaries need of a dataset, :func:`class_balance` counts its images per class
and split, and :func:`cue_association` measures how strongly a synthetic cue goes with the label in each split
(EGD-CXR's generator truth, the structured set's corner mark, the ClickMe-like set's context square).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency
from scipy.stats.contingency import association


class Labelled(Protocol):
    """What the summaries need of a dataset: attnlib's contract (items with ``img``) plus labels."""

    labels: np.ndarray
    label_names: list[str]
    metadata: pd.DataFrame

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, object]: ...


def class_balance(ds: Labelled) -> pd.DataFrame:
    """Images per class (rows) and split (columns, from ``metadata["split"]``), with totals."""
    table = pd.crosstab(
        pd.Categorical.from_codes(ds.labels, ds.label_names, validate=False),
        ds.metadata["split"].to_numpy(),
        margins=True,
        margins_name="total",
    )
    table.index.name, table.columns.name = "class", "split"
    return table


def cue_association(truth: pd.DataFrame, cue_col: str | None = None) -> pd.DataFrame:
    """How strongly the synthetic cue goes with the label in each split (synthetic data only).

    ``truth`` has columns ``split``, ``label`` and the cue: the EGD-CXR generator's
    ``synthetic_truth.csv`` (``cue_col`` None: ``cue_position`` if used, else ``cue_present``) or the
    structured set's labels (``cue_col="cue"``). Per split: the number of images, Cramér's V between
    cue and label (0 = independent, 1 = the cue gives the label away; NaN without a cue) and the
    p-value of the chi-square test of independence (no continuity correction).
    """
    if cue_col is None:
        cue_col = "cue_position" if truth["cue_position"].ge(0).any() else "cue_present"
    rows = []
    for split in [s for s in ("train", "val", "test") if s in set(truth["split"])]:
        part = truth[truth["split"] == split]
        table = pd.crosstab(part["label"], part[cue_col]).to_numpy()
        if min(table.shape) < 2:
            v = p = np.nan
        else:
            v = association(table, method="cramer", correction=False)
            p = chi2_contingency(table, correction=False).pvalue
        rows.append({"split": split, "images": len(part), "cue": cue_col, "cramers_v": v, "chi2_p": p})
    return pd.DataFrame(rows).set_index("split")
