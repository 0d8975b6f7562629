"""IDRiD exploration on its layout sample: counts and balance from the CSVs, crop lines, the right-eye flip."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from attnlib.apps.explore.idrid import (
    flip_figure,
    idrid_balance,
    idrid_samples,
    idrid_split_counts,
    laterality_check,
    laterality_counts,
)
from attnlib.data.real.idrid import IDRiD, IDRiDSettings, crop_bounds, image_dir, read_fundus
from attnlib.data.real.layout_samples import write_idrid_sample


@pytest.fixture
def idrid_root(tmp_path):
    return write_idrid_sample(tmp_path / "IDRiD", row_without_image=True, image_without_row=True)


def _panels(axes) -> list[np.ndarray]:
    return [np.asarray(ax.images[0].get_array()) for ax in axes]


def test_idrid_counts_and_balance_from_the_csvs(idrid_root):
    counts = idrid_split_counts(idrid_root)
    assert counts.loc["train"].to_dict() == {"csv_rows": 7, "images": 7, "csv_rows_without_image": 1,
                                             "images_without_row": 1, "kept": 6}
    assert counts.loc["test", "kept"] == 3
    balance = idrid_balance(idrid_root)
    for task in ("retinopathy", "macular_edema"):
        for split in ("train", "test"):
            loader = IDRiD(idrid_root, split, task, cache=None).class_counts
            assert balance.loc[task, split].to_dict() == loader
    assert balance.loc["retinopathy", "total"].tolist() == [2, 2, 2, 2, 1]  # DR0-DR4 read from the data
    assert balance.loc["macular_edema"].index.tolist() == ["ME0", "ME1", "ME2"]


def test_idrid_samples_draw_the_crop_lines(idrid_root):
    ds = IDRiD(idrid_root, cache=None)
    fig = idrid_samples(ds, per_class=1, width=214)
    ax = fig.axes[0]
    x0, x1 = crop_bounds(214)
    assert sorted(line.get_xdata()[0] for line in ax.lines) == [x0, x1]
    uncropped = read_fundus(ds.metadata.at[0, "path"], crop=False, size=(142, 214))
    np.testing.assert_array_equal(_panels([ax])[0], uncropped.transpose(1, 2, 0))
    plt.close("all")


def test_laterality_check_and_flip_figure(idrid_root):
    table = laterality_check(idrid_root)
    assert table.loc[~table["agree"], ["split", "id"]].values.tolist() == [["train", "IDRiD_004"]]
    counts = laterality_counts(table)
    assert counts.loc["train"].to_dict() == {"images": 7, "paper_right": 1, "auto_right": 2,
                                             "disagreements": 1, "unreadable": 0}
    ds = IDRiD(idrid_root, settings=IDRiDSettings(standardize=False), cache=None)
    fig = flip_figure(ds, table, n=3)
    # IDRiD_004 first: the paper keeps it, the optic-disc check flips it
    stored, paper, auto = _panels(fig.axes[:3])
    assert "DISAGREE" in fig.axes[0].get_title()
    np.testing.assert_array_equal(paper, stored)
    np.testing.assert_array_equal(auto, stored[:, ::-1])
    stored, paper, auto = _panels(fig.axes[3:6])  # IDRiD_001: a right eye both ways
    np.testing.assert_array_equal(paper, stored[:, ::-1])
    np.testing.assert_array_equal(auto, paper)
    assert [ax.get_title().split()[0] for ax in fig.axes[::3]] == ["IDRiD_004", "IDRiD_001", "IDRiD_002"]
    plt.close("all")


def test_laterality_check_lists_unreadable_images_and_goes_on(idrid_root):
    corrupt = image_dir(idrid_root, "train") / "IDRiD_002.jpg"  # sorts before IDRiD_004, the disagreement
    corrupt.write_bytes(b"\xff\xd8not a jpeg")
    table = laterality_check(idrid_root)
    shown = table[~table["agree"]]  # what the notebook displays
    assert shown[["split", "id"]].values.tolist() == [["train", "IDRiD_002"], ["train", "IDRiD_004"]]
    assert shown["problem"].iloc[0].startswith(f"{corrupt}: unreadable image")
    assert pd.isna(shown["problem"].iloc[1])
    counts = laterality_counts(table)
    assert counts.loc["train"].to_dict() == {"images": 7, "paper_right": 1, "auto_right": 2,
                                             "disagreements": 1, "unreadable": 1}
    fig = flip_figure(IDRiD(idrid_root, cache=None), table, n=3)  # the unreadable image left out
    assert [ax.get_title().split()[0] for ax in fig.axes[::3]] == ["IDRiD_004", "IDRiD_001", "IDRiD_003"]
    plt.close("all")
