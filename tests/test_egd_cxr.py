"""The EGD-CXR loader on a hand-made copy of the real layout, with exactly known content."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from conftest import COLS, IDS, ROWS

from attnlib.data.cache import ArrayCache
from attnlib.data.defaults import synthetic_egd_cxr
from attnlib.data.egd_cxr import (
    EGDCXR,
    EGDCXRFormatError,
    EGDCXRPaths,
    EGDCXRSettings,
    read_gaze,
    read_master_sheet,
)
from attnlib.data.gaze import gaze_heatmap


def test_master_sheet_labels(layout):
    sheet = read_master_sheet(layout.master_sheet)
    assert sheet["label"].tolist() == [0, 1, 2, 0, 1, 2]


def test_master_sheet_not_one_hot_names_file_and_id(layout):
    sheet = pd.read_csv(layout.master_sheet)
    sheet.loc[2, "CHF"] = 1
    sheet.to_csv(layout.master_sheet, index=False)
    with pytest.raises(EGDCXRFormatError, match=rf"master_sheet.csv: 1 rows are not one-hot.*{IDS[2]}"):
        read_master_sheet(layout.master_sheet)


def test_gaze_drops_calibration_and_offimage_rows_and_logs_counts(layout, caplog):
    with caplog.at_level(logging.INFO, logger="attnlib.data.egd_cxr"):
        gaze = read_gaze(layout.gaze_table("fixations"), IDS)
    assert len(gaze) == 12  # 2 on-image fixations per image
    assert set(gaze["dicom_id"]) == set(IDS)
    assert (gaze[["x", "y"]] >= 0).all().all()
    assert "fixations.csv: 26 rows; dropped 2 calibration rows" in caplog.text
    assert "and 12 off-image rows" in caplog.text


def test_missing_gaze_column_is_named(layout):
    table = pd.read_csv(layout.gaze_table("fixations")).drop(columns=["X_ORIGINAL"])
    table.to_csv(layout.gaze_table("fixations"), index=False)
    with pytest.raises(EGDCXRFormatError, match=r"fixations.csv: missing columns \['X_ORIGINAL'\]"):
        read_gaze(layout.gaze_table("fixations"), IDS)


def test_item_contract_and_values(layout, tmp_path):
    ds = EGDCXR(layout, settings=EGDCXRSettings(scale=0.5, blur_std_px=4.0), cache=ArrayCache(tmp_path / "c"))
    assert len(ds) == 6 and ds.label_names == ["normal", "cardiomegaly", "pneumonia"]
    item = ds[0]
    assert item["id"] == IDS[0] and item["lab"] == int(ds.labels[0])
    assert item["img"].shape == (1, ROWS // 2, COLS // 2)
    assert 0.0 <= float(item["img"].min()) and float(item["img"].max()) == pytest.approx(1.0)
    assert item["masks"].shape == (4, ROWS // 2, COLS // 2)
    # mediastinum (third mask, file mediastanum.png) covers the top half
    assert item["masks"][2, : ROWS // 4].eq(1).all() and item["masks"][2, ROWS // 4 :].eq(0).all()
    # heat map: Algorithm 1 on the image's two fixations, duration-weighted, at the image size
    want = gaze_heatmap([8, 20], [30, 10], (ROWS, COLS), weights=[0.9, 0.1], blur_std_px=4.0, out_shape=(20, 16))
    i = ds.metadata.index[ds.metadata["dicom_id"] == IDS[0]][0]
    np.testing.assert_allclose(ds[i]["hmap"][0].numpy(), want, atol=1e-6)
    assert np.unravel_index(want.argmax(), want.shape) == (15, 4)


def test_count_weighting_option(layout):
    ds = EGDCXR(layout, settings=EGDCXRSettings(gaze_weight="count", blur_std_px=4.0, masks=False), cache=None)
    heat = ds.heatmap(0, (ROWS, COLS))
    assert heat[30, 8] == pytest.approx(heat[10, 20], rel=1e-3)  # equal weights: equal peaks


def test_splits_are_views_and_balanced(layout):
    ds = EGDCXR(layout, cache=None, settings=EGDCXRSettings(masks=False))
    parts = {name: ds.select(name) for name in ("train", "val", "test")}
    assert sum(len(p) for p in parts.values()) == 6
    assert sorted(parts["train"].labels) == [0, 1, 2]  # round(0.7 * 2) = 1 per class
    assert set(parts["train"].metadata["dicom_id"]).isdisjoint(parts["test"].metadata["dicom_id"])
    assert parts["train"].fingerprint != parts["test"].fingerprint


def test_split_file_is_used(layout, tmp_path):
    split = tmp_path / "split.csv"  # beside egd-cxr/: picked up automatically
    pd.DataFrame({"id": IDS, "label": [0, 1, 2, 0, 1, 2], "split": ["train"] * 3 + ["val", "test", "test"]}).to_csv(
        split, index=False
    )
    ds = EGDCXR(layout, split="test", cache=None)
    assert ds.metadata["dicom_id"].tolist() == IDS[4:]


def test_missing_mask_names_the_file(layout):
    (layout.egd_root / "audio_segmentation_transcripts" / IDS[0] / "mediastanum.png").unlink()
    ds = EGDCXR(layout, cache=None)
    i = ds.metadata.index[ds.metadata["dicom_id"] == IDS[0]][0]
    with pytest.raises(EGDCXRFormatError, match=rf"{IDS[0]}/mediastanum.png: mask not found"):
        ds[i]


def test_image_without_gaze_is_an_error(layout):
    table = pd.read_csv(layout.gaze_table("fixations"))
    table[table["DICOM_ID"] != IDS[3]].to_csv(layout.gaze_table("fixations"), index=False)
    with pytest.raises(EGDCXRFormatError, match=rf"fixations.csv: no gaze on the image for 1 images.*{IDS[3]}"):
        EGDCXR(layout, cache=None)


def test_gaze_in_wrong_units_is_an_error(layout):
    table = pd.read_csv(layout.gaze_table("fixations"))
    table.loc[table["X_ORIGINAL"] > 0, "X_ORIGINAL"] *= 100
    table.to_csv(layout.gaze_table("fixations"), index=False)
    ds = EGDCXR(layout, cache=None)
    with pytest.raises(EGDCXRFormatError, match="gaze points of .* lie outside its 40x32 DICOM"):
        ds.heatmap(0)


def test_cache_hit_on_second_epoch(layout, tmp_path):
    cache = ArrayCache(tmp_path / "cache")
    ds = EGDCXR(layout, cache=cache, settings=EGDCXRSettings(masks=False))
    first = [ds[i]["img"] for i in range(len(ds))]
    assert (cache.hits, cache.misses) == (0, 6)
    second = [ds[i]["img"] for i in range(len(ds))]
    assert (cache.hits, cache.misses) == (6, 6)
    for a, b in zip(first, second, strict=True):
        assert a.equal(b)


def test_fingerprint_tells_synthetic_variants_apart(tmp_path):
    plain = synthetic_egd_cxr("smoke", root=tmp_path, n_images=6, rows=64, cols=64)
    cued = synthetic_egd_cxr("smoke", root=tmp_path, n_images=6, rows=64, cols=64, cue="marker_presence")
    a, b = (EGDCXR(EGDCXRPaths.from_root(r), cache=None) for r in (plain, cued))
    assert a.metadata["dicom_id"].tolist() == b.metadata["dicom_id"].tolist()  # same ids and labels...
    assert a.fingerprint != b.fingerprint  # ...but other pixels: never the same run-store identity
    assert a.fingerprint == EGDCXR(EGDCXRPaths.from_root(plain), cache=None).fingerprint
