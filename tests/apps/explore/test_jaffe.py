"""JAFFE exploration on its layout sample: ratings and labels, balance against the pose, kept and skipped files."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from attnlib.apps.explore.jaffe import jaffe_balance, jaffe_file_counts, jaffe_ratings, jaffe_samples
from attnlib.data.real.jaffe import JAFFE, LABEL_NAMES, RATING_COLUMNS
from attnlib.data.real.layout_samples import write_jaffe_sample


@pytest.fixture
def jaffe_ds(tmp_path):
    root = write_jaffe_sample(tmp_path / "jaffe", unrated_image=True, badly_named_image=True)
    return JAFFE(root, cache=None)


def test_jaffe_ratings_balance_and_files(jaffe_ds):
    ratings = jaffe_ratings(jaffe_ds)
    argmax = ratings[list(RATING_COLUMNS)].to_numpy().argmax(axis=1)
    assert ratings["label"].tolist() == [LABEL_NAMES[k] for k in argmax]
    assert ratings.at["NM.SU2.99", "label"] == "surprise" and ratings.at["NM.SU2.99", "margin"] == 0.0
    assert ratings.at["KA.AN1.39", "margin"] == pytest.approx(4.20 - 3.10)
    assert pd.isna(ratings.at["NA.NE1.202", "pose_agrees"]) and ratings.at["KA.AN1.39", "pose_agrees"]
    balance = jaffe_balance(jaffe_ds)
    assert balance["total"].drop("total").tolist() == np.bincount(jaffe_ds.labels, minlength=6).tolist()
    assert balance.loc["happiness", "NE"] == 1 and balance.loc["total", "total"] == len(jaffe_ds) == 12
    assert jaffe_file_counts(jaffe_ds).to_dict() == {
        "tiffs_named_per_pattern": 13, "skipped_without_ratings": 1, "ignored_named_otherwise": 1, "kept": 12,
        "ratings_rows_without_image": 1}
    fig = jaffe_samples(jaffe_ds, per_class=1)
    first = fig.axes[0]
    i = jaffe_ds.metadata["id"].tolist().index(first.get_title().split()[0])
    np.testing.assert_array_equal(np.asarray(first.images[0].get_array()), jaffe_ds.image(i))
    plt.close("all")
