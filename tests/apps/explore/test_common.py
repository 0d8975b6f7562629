"""Shared exploration summaries: class balance and Cramér's V of a cue against the label."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attnlib.apps.explore.common import class_balance, cue_association
from attnlib.data.real.egd_cxr import EGDCXR
from attnlib.data.synthetic.structured import StructuredConfig, StructuredDataset, generate_structured


def test_class_balance_counts(layout):
    table = class_balance(EGDCXR(layout, cache=None))
    assert table.loc["total", "total"] == 6
    assert table.loc[["normal", "cardiomegaly", "pneumonia"], "total"].tolist() == [2, 2, 2]


def test_cramers_v_against_hand_values():
    # train: cue = label exactly (V = 1); test: a balanced, independent design (V = 0)
    train = pd.DataFrame({"split": "train", "label": [0, 1, 2] * 4, "cue_position": [0, 1, 2] * 4})
    test = pd.DataFrame({"split": "test", "label": np.repeat([0, 1, 2], 3), "cue_position": [0, 1, 2] * 3})
    result = cue_association(pd.concat([train, test]).assign(cue_present=False))
    assert result.loc["train", "cramers_v"] == pytest.approx(1.0)
    assert result.loc["test", "cramers_v"] == pytest.approx(0.0, abs=1e-12)
    assert result.loc["test", "chi2_p"] == pytest.approx(1.0)
    assert result.index.tolist() == ["train", "test"]


def test_structured_cue_association(tmp_path):
    config = StructuredConfig(n_images=60, size=32, region_size=8, cue=True, cue_correlation_train=1.0)
    ds = StructuredDataset(generate_structured(tmp_path / "cue", config, progress=False))
    result = cue_association(ds.metadata, "cue")
    assert result.loc["train", "cramers_v"] == pytest.approx(1.0)
    assert result.loc["test", "cramers_v"] < 1.0
