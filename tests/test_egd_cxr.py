"""The EGD-CXR loader on a hand-made copy of the real layout, with exactly known content."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from attnlib.data.cache import ArrayCache
from attnlib.data.egd_cxr import (
    EGDCXR,
    EGDCXRFormatError,
    EGDCXRPaths,
    EGDCXRSettings,
    read_gaze,
    read_master_sheet,
)
from attnlib.data.gaze import gaze_heatmap

GAZE_COLUMNS = (
    "SESSION_ID,MEDIA_ID,DICOM_ID,CNT,Time (in secs),TIMETICK(f=10000000),FPOGX,FPOGY,FPOGS,FPOGD,FPOGID,"
    "FPOGV,BPOGX,BPOGY,BPOGV,LPCX,LPCY,LPD,LPS,LPV,RPCX,RPCY,RPD,RPS,RPV,BKID,BKDUR,BKPMIN,LPMM,LPMMV,"
    "RPMM,RPMMV,SACCADE_MAG,SACCADE_DIR,VID_FRAME,X_ORIGINAL,Y_ORIGINAL"
).split(",")
ROWS, COLS = 40, 32
IDS = [f"{i:08x}-0000000{i}-11111111-22222222-33333333" for i in range(1, 7)]
ONEHOT = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
# (x, y, duration) per image; the first image's gaze sits at (8, 30) with most weight
GAZE = {i: [(8.0, 30.0, 0.9), (20.0, 10.0, 0.1)] for i in range(6)}


def _write_dicom(path, pixels):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _gaze_row(dicom_id, cnt, t, x, y, dur):
    row = dict.fromkeys(GAZE_COLUMNS, 0.0)
    row.update({"SESSION_ID": 1, "MEDIA_ID": 1, "DICOM_ID": dicom_id, "CNT": cnt, "Time (in secs)": t,
                "FPOGD": dur, "FPOGS": t - dur, "X_ORIGINAL": x, "Y_ORIGINAL": y})
    return row


@pytest.fixture
def layout(tmp_path):
    """Six images (two per class), their masks, DICOMs and a fixations table with calibration rows."""
    egd, mimic = tmp_path / "egd-cxr", tmp_path / "mimic-cxr"
    rows, gaze = [], []
    for i, (dicom_id, onehot) in enumerate(zip(IDS, ONEHOT, strict=True)):
        rel = f"files/p10/p1000000{i}/s5000000{i}/{dicom_id}.dcm"
        rows.append({"dicom_id": dicom_id, "path": rel, "study_id": 50000000 + i, "patient_id": 10000000 + i,
                     "stay_id": "", "Normal": onehot[0], "CHF": onehot[1], "pneumonia": onehot[2]})
        _write_dicom(mimic / rel, np.arange(ROWS * COLS).reshape(ROWS, COLS) % 4096)
        folder = egd / "audio_segmentation_transcripts" / dicom_id
        folder.mkdir(parents=True)
        for name in ("left_lung", "right_lung", "mediastanum", "aortic_knob"):
            mask = np.zeros((ROWS, COLS), np.uint8)
            mask[: ROWS // 2] = 255 if name == "mediastanum" else 0
            Image.fromarray(mask).save(folder / f"{name}.png")
        for j, (x, y, dur) in enumerate(GAZE[i]):
            gaze.append(_gaze_row(dicom_id, j, 1.0 + j, x, y, dur))
        gaze.append(_gaze_row(dicom_id, 9, 5.0, -1, -1, 0.3))  # off the image
        gaze.append(_gaze_row(dicom_id, 10, 5.5, 12, -7, 0.3))  # other negative value: off the image too
    # calibration screens: ids 5 characters shorter, one of them a prefix of a real id
    gaze.append(_gaze_row(IDS[0][:-5], 0, 0.1, 5, 5, 0.2))
    gaze.append(_gaze_row("cal01-33333333-44444444-55555555-6666", 0, 0.2, 6, 6, 0.2))
    pd.DataFrame(rows).to_csv(egd / "master_sheet.csv", index=False)
    pd.DataFrame(gaze, columns=GAZE_COLUMNS).to_csv(egd / "fixations.csv", index=False)
    return EGDCXRPaths.from_root(tmp_path)


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
