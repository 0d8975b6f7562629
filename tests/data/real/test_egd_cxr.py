"""The EGD-CXR loader on a hand-made copy of the real layout, with exactly known content."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import COLS, IDS, ROWS

from attnlib.data.cache import ArrayCache
from attnlib.data.real.egd_cxr import (
    EGDCXR,
    EGDCXRFormatError,
    EGDCXRPaths,
    EGDCXRSettings,
    read_gaze,
    read_master_sheet,
)
from attnlib.data.real.gaze import gaze_heatmap
from attnlib.data.synthetic.defaults import synthetic_egd_cxr
from attnlib.evaluation.metrics import cam_in_mask

#: The public code's recipe scaled to the 40 x 32 fixture: B = 10 (kernel 11, sigma 2, +-5 px), the DICOM
#: padded to 48 x 40 (4 px before it) and read every 8 px: rows -1 4 12 20 28 36, columns -1 4 12 20 28.
PUBLIC = {
    "blur_std_px": 10.0,
    "blur_units": "opencv_kernel",
    "resample": "public_corner",
    "corner_pad": (48, 40),
    "corner_stride": 8,
}


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
    with caplog.at_level(logging.INFO, logger="attnlib.data.real.egd_cxr"):
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


def test_default_settings_are_the_papers():
    settings = EGDCXRSettings()
    assert (settings.blur_units, settings.resample) == ("std", "area")


def test_public_recipe_item(layout, tmp_path):
    ds = EGDCXR(layout, settings=EGDCXRSettings(**PUBLIC), cache=ArrayCache(tmp_path / "c"))
    i = ds.metadata.index[ds.metadata["dicom_id"] == IDS[0]][0]
    item = ds[i]
    assert item["img"].shape == (1, ROWS // 2, COLS // 2) and item["hmap"].shape == (1, 6, 5)
    # fixation (8, 30), weight 0.9: row 28 (2 px off) x columns 4 and 12 (4 px off each);
    # fixation (20, 10), weight 0.1: row 12 (2 px off) x column 20 (on it): 0.1 k(2) k(0) / (0.9 k(2) k(4)) = e^2 / 9
    want = np.zeros((6, 5), np.float32)
    want[4, 1] = want[4, 2] = 1.0
    want[2, 3] = np.exp(2.0) / 9  # 0.821006
    np.testing.assert_allclose(item["hmap"][0].numpy(), want, atol=1e-6)
    # the mediastinum covers DICOM rows 0-19 and every column: sampled rows 4 and 12, columns 4 to 28
    assert item["masks"].shape == (4, 6, 5)
    mediastinum = np.zeros((6, 5), np.float32)
    mediastinum[1:3, 1:] = 1
    np.testing.assert_array_equal(item["masks"][2].numpy(), mediastinum)
    assert item["masks"][[0, 1, 3]].eq(0).all()
    # Eq. 12 takes masks on omega's grid as they are: a cardiomegaly peak at (1, 2) is inside the heart
    omega = torch.zeros(1, 3, 6, 5)
    omega[0, 1, 1, 2] = 1.0
    assert cam_in_mask(omega, torch.tensor([1]), item["masks"][None]).item() == 1.0


def test_public_pad_from_the_grid(layout):
    explicit = EGDCXR(layout, settings=EGDCXRSettings(**PUBLIC, masks=False), cache=None)
    derived = explicit.with_settings(corner_pad=None, hmap_size=(6, 5))  # pad = 6 x 5 cells of 8 px
    np.testing.assert_array_equal(explicit[0]["hmap"].numpy(), derived[0]["hmap"].numpy())
    with pytest.raises(ValueError, match="gives a 6x5 grid, not the requested 5x5"):
        explicit.with_settings(hmap_size=(5, 5))[0]


def test_mask_resampling_enters_the_cache_key(layout, tmp_path):
    cache = ArrayCache(tmp_path / "cache")
    area = EGDCXR(layout, settings=EGDCXRSettings(masks=False), cache=cache)
    public = area.with_settings(resample="public_corner", corner_pad=(48, 40), corner_stride=8)
    nearest = area.masks(0, (6, 5))  # the top half: rows 0-2
    sampled = public.masks(0, (6, 5))  # rows 4 and 12 of the DICOM: grid rows 1-2
    assert (cache.hits, cache.misses) == (0, 8)
    assert nearest[2, :, 0].tolist() == [1, 1, 1, 0, 0, 0] and sampled[2, :, 0].tolist() == [0] * 6
    assert sampled[2, :, 1].tolist() == [0, 1, 1, 0, 0, 0]
    np.testing.assert_array_equal(public.masks(0, (6, 5)), sampled)
    assert (cache.hits, cache.misses) == (4, 8)
    assert area.fingerprint != public.fingerprint


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"blur_units": "sigma"}, "blur_units must be one of"),
        ({"resample": "nearest"}, "resample must be one of"),
        ({"corner_stride": 0}, "must be positive"),
    ],
)
def test_bad_recipe_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EGDCXRSettings(**kwargs)
