"""Label-balanced 70/10/20 splits and split files."""

import numpy as np
import pandas as pd
import pytest

from attnlib.data.splits import balanced_split, load_split, save_split


def _ids(n):
    return [f"img{i:04d}" for i in range(n)]


def test_per_class_counts_are_rounded_fractions():
    labels = [0] * 360 + [1] * 361 + [2] * 362
    frame = balanced_split(_ids(len(labels)), labels, seed=0)
    counts = frame.groupby(["label", "split"]).size().unstack()
    # round(0.7 n), round(0.8 n) - round(0.7 n), rest
    assert counts.loc[0].to_dict() == {"train": 252, "val": 36, "test": 72}
    assert counts.loc[1].to_dict() == {"train": 253, "val": 36, "test": 72}
    assert counts.loc[2].to_dict() == {"train": 253, "val": 37, "test": 72}
    assert frame["id"].tolist() == _ids(len(labels))  # input order kept


def test_deterministic_by_seed_and_disjoint():
    labels = np.repeat([0, 1, 2], 50)
    a = balanced_split(_ids(150), labels, seed=3)
    b = balanced_split(_ids(150), labels, seed=3)
    c = balanced_split(_ids(150), labels, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a["split"].equals(c["split"])
    assert a["split"].isin(["train", "val", "test"]).all()


def test_round_trip_and_mismatch(tmp_path):
    frame = balanced_split(_ids(30), [0, 1, 2] * 10, seed=0)
    path = save_split(frame, tmp_path / "split.csv")
    back = load_split(path, ids=_ids(30))
    assert back["split"].tolist() == frame["split"].tolist()
    with pytest.raises(ValueError, match="split.csv.*1 ids without a split"):
        load_split(path, ids=[*_ids(30), "extra"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fractions": (0.5, 0.5, 0.5)}, "sum"),
        ({"labels": [0, 1]}, "labels"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = {"ids": _ids(3), "labels": [0, 1, 2], "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        balanced_split(**args)


def test_unknown_split_name(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("id,label,split\na,0,train\nb,1,holdout\n")
    with pytest.raises(ValueError, match="s.csv: unknown split names"):
        load_split(path)
