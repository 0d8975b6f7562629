"""EGD-CXR exploration: dwell per organ by hand, and the synthetic generator's cue in its ground truth."""

from __future__ import annotations

import pytest
from conftest import IDS

from attnlib.apps.explore.common import cue_association
from attnlib.apps.explore.egd_cxr import gaze_statistics
from attnlib.data.real.egd_cxr import EGDCXR, EGDCXRPaths
from attnlib.data.synthetic.cxr import read_truth
from attnlib.data.synthetic.defaults import synthetic_egd_cxr


def test_dwell_shares_by_hand(layout):
    ds = EGDCXR(layout, cache=None)
    stats = gaze_statistics(ds).set_index("dicom_id")
    # every image: fixation (8, 30) for 0.9 s below the mediastinum mask (top half), (20, 10) for 0.1 s inside it
    row = stats.loc[IDS[0]]
    assert row["fixations"] == 2 and row["dwell_s"] == pytest.approx(1.0)
    assert row["dwell_share/mediastinum"] == pytest.approx(0.1)
    assert row["dwell_share/outside organs"] == pytest.approx(0.9)
    assert row["dwell_share/left_lung"] == 0


def test_synthetic_position_cue_is_strong_in_train_and_absent_in_test(tmp_path):
    root = synthetic_egd_cxr("smoke", root=tmp_path, n_images=150, rows=64, cols=64, cue="marker_position",
                             cue_correlation_train=0.9, cue_correlation_val=0.9)
    result = cue_association(read_truth(root))
    assert result.loc["train", "cramers_v"] > 0.7 and result.loc["train", "chi2_p"] < 1e-10
    assert result.loc["test", "chi2_p"] > 0.01  # 30 test images, cue independent of the label
    gaze = gaze_statistics(EGDCXR(EGDCXRPaths.from_root(root), cache=None))
    med = gaze.groupby("class")["dwell_share/mediastinum"].mean()
    assert med["cardiomegaly"] > med["normal"] > med["pneumonia"]


def test_read_truth_is_none_for_real_data(tmp_path):
    assert read_truth(tmp_path) is None
