"""Exploration summaries: class balance, dwell per organ, cue association."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import IDS

from attnlib.data.defaults import synthetic_egd_cxr
from attnlib.data.egd_cxr import EGDCXR, EGDCXRPaths
from attnlib.explore import class_balance, cue_association, gaze_statistics, read_truth


def test_dwell_shares_by_hand(layout):
    ds = EGDCXR(layout, cache=None)
    stats = gaze_statistics(ds).set_index("dicom_id")
    # every image: fixation (8, 30) for 0.9 s below the mediastinum mask (top half), (20, 10) for 0.1 s inside it
    row = stats.loc[IDS[0]]
    assert row["fixations"] == 2 and row["dwell_s"] == pytest.approx(1.0)
    assert row["dwell_share/mediastinum"] == pytest.approx(0.1)
    assert row["dwell_share/outside organs"] == pytest.approx(0.9)
    assert row["dwell_share/left_lung"] == 0


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


def test_synthetic_position_cue_is_strong_in_train_and_absent_in_test(tmp_path):
    root = synthetic_egd_cxr("smoke", root=tmp_path, n_images=150, rows=64, cols=64, cue="marker_position",
                             cue_correlation_train=0.9, cue_correlation_val=0.9)
    result = cue_association(read_truth(root))
    assert result.loc["train", "cramers_v"] > 0.7 and result.loc["train", "chi2_p"] < 1e-10
    assert result.loc["test", "chi2_p"] > 0.01  # 30 test images, cue independent of the label
    gaze = gaze_statistics(EGDCXR(EGDCXRPaths.from_root(root), cache=None))
    med = gaze.groupby("class")["dwell_share/mediastinum"].mean()
    assert med["cardiomegaly"] > med["normal"] > med["pneumonia"]

