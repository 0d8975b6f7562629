"""Tests of the synthetic EGD-CXR generator: real layout, determinism, evidence, gaze and cue."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from attnlib.data.real.egd_cxr import LABEL_COLUMNS
from attnlib.data.synthetic import cxr as sc
from attnlib.data.synthetic.cxr import SyntheticCXRConfig, generate_synthetic_egd_cxr, writer

MASTER = (
    "dicom_id,path,study_id,patient_id,stay_id,gender,anchor_age,image_top_pad,image_bottom_pad,"
    "image_left_pad,image_right_pad,dx1,dx1_icd,dx2,dx2_icd,dx3,dx3_icd,dx4,dx4_icd,dx5,dx5_icd,dx6,"
    "dx6_icd,dx7,dx7_icd,dx8,dx8_icd,dx9,dx9_icd,normal_reports,Normal,CHF,pneumonia,consolidation,"
    "enlarged_cardiac_silhouette,linear__patchy_atelectasis,lobar__segmental_collapse,"
    "not_otherwise_specified_opacity___pleural__parenchymal_opacity__,pleural_effusion_or_thickening,"
    "pulmonary_edema__hazy_opacity,normal_anatomically,elevated_hemidiaphragm,hyperaeration,"
    "vascular_redistribution,atelectasis__chx,cardiomegaly__chx,consolidation__chx,edema__chx,"
    "enlarged_cardiomediastinum__chx,fracture__chx,lung_lesion__chx,lung_opacity__chx,no_finding__chx,"
    "pleural_effusion__chx,pleural_other__chx,pneumonia__chx,pneumothorax__chx,support_devices__chx,"
    "cxr_exam_indication"
).split(",")
GAZE = (
    "SESSION_ID,MEDIA_ID,DICOM_ID,CNT,Time (in secs),TIMETICK(f=10000000),FPOGX,FPOGY,FPOGS,FPOGD,FPOGID,"
    "FPOGV,BPOGX,BPOGY,BPOGV,LPCX,LPCY,LPD,LPS,LPV,RPCX,RPCY,RPD,RPS,RPV,BKID,BKDUR,BKPMIN,LPMM,LPMMV,"
    "RPMM,RPMMV,SACCADE_MAG,SACCADE_DIR,VID_FRAME,X_ORIGINAL,Y_ORIGINAL"
).split(",")
MASKS = ("left_lung", "right_lung", "mediastanum", "aortic_knob")
SMALL = SyntheticCXRConfig(n_images=30, rows=128, cols=104, cue="marker_presence",
                           cue_correlation_train=1.0, cue_correlation_val=0.0)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return generate_synthetic_egd_cxr(tmp_path_factory.mktemp("syn") / "data", SMALL, progress=False)


@pytest.fixture(scope="module")
def no_evidence(tmp_path_factory) -> Path:
    config = SyntheticCXRConfig(**{**SMALL.to_dict(), "evidence_strength": 0.0})
    return generate_synthetic_egd_cxr(tmp_path_factory.mktemp("syn0") / "data", config, progress=False)


@pytest.fixture(scope="module")
def tables(root):
    egd = root / "egd-cxr"
    return {
        "master": pd.read_csv(egd / "master_sheet.csv", dtype={"dicom_id": str}),
        "fix": pd.read_csv(egd / "fixations.csv", dtype={"DICOM_ID": str}),
        "raw": pd.read_csv(egd / "eye_gaze.csv", dtype={"DICOM_ID": str}),
        "truth": pd.read_csv(root / "synthetic_truth.csv", dtype={"dicom_id": str}),
        "boxes": pd.read_csv(egd / "bounding_boxes.csv", dtype={"dicom_id": str}),
    }


def _mask(root: Path, dicom_id: str, name: str) -> np.ndarray:
    with Image.open(root / "egd-cxr" / "audio_segmentation_transcripts" / dicom_id / f"{name}.png") as im:
        return np.asarray(im)


def _presentation(path: Path) -> np.ndarray:
    """Pixels with bright = dense, whatever the photometric interpretation."""
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array.astype(np.int64)
    return sc.MAX_LEVEL - arr if ds.PhotometricInterpretation == "MONOCHROME1" else arr


def _boxes(text: str) -> list[dict[str, int]]:
    return json.loads(text)


def test_config_round_trip_and_validation():
    assert SyntheticCXRConfig.from_dict(json.loads(json.dumps(SMALL.to_dict()))) == SMALL
    assert SyntheticCXRConfig().cue is None
    for bad in ({"n_images": 2}, {"cue": "sticker"}, {"cue_class": "flu"}, {"fraction_rle": 1.5},
                {"fraction_jpeg2000": 0.6, "fraction_rle": 0.6}, {"split_fractions": (0.5, 0.5, 0.5)},
                {"view_seconds": (3.0, 1.0)}, {"rows": 32}):
        with pytest.raises(ValueError, match="invalid SyntheticCXRConfig"):
            SyntheticCXRConfig(**bad)
    with pytest.raises(ValueError, match="unknown SyntheticCXRConfig keys"):
        SyntheticCXRConfig.from_dict({"n_imgs": 3})


def test_layout_and_config_file(root, tables):
    egd = root / "egd-cxr"
    for name in ("master_sheet.csv", "fixations.csv", "eye_gaze.csv", "bounding_boxes.csv"):
        assert (egd / name).is_file()
    for name in ("CHF", "normals", "pneumonia"):
        ids = pd.read_csv(egd / "inclusion_exclusion_criteria_outputs" / f"{name}.csv")["dicom_id"]
        column = {"normals": "Normal"}.get(name, name)
        assert set(ids) == set(tables["master"].loc[tables["master"][column] == 1, "dicom_id"])
    saved = json.loads((root / "synthetic_config.json").read_text())
    assert saved["config"] == SMALL.to_dict() and saved["generator_version"] == sc.GENERATOR_VERSION
    assert saved["counts"]["eye_gaze_rows"] == len(tables["raw"])
    assert saved["counts"]["fixation_rows"] == len(tables["fix"])
    assert list(tables["boxes"].columns) == ["dicom_id", "bbox_name", "x1", "x2", "y1", "y2"]
    assert not list(root.parent.glob(".*partial"))
    for dicom_id in tables["master"]["dicom_id"]:
        folder = egd / "audio_segmentation_transcripts" / dicom_id
        transcript = json.loads((folder / "transcript.json").read_text())
        assert set(transcript) == {"full_text", "time_stamped_text"}
        assert all(set(p) == {"phrase", "begin_time", "end_time"} and p["begin_time"] < p["end_time"]
                   for p in transcript["time_stamped_text"])
        assert transcript["full_text"] == " ".join(p["phrase"] for p in transcript["time_stamped_text"])


def test_master_sheet(root, tables):
    m = tables["master"]
    assert list(m.columns) == MASTER and len(MASTER) == 59
    onehot = m[["Normal", "CHF", "pneumonia"]]
    assert onehot.isin([0, 1]).all().all() and (onehot.sum(axis=1) == 1).all()
    assert onehot.sum().tolist() == [10, 10, 10]
    assert m["dicom_id"].str.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}").all()
    assert m["dicom_id"].str.len().eq(44).all() and m["dicom_id"].is_unique
    for _, row in m.iterrows():
        assert re.fullmatch(rf"files/p1\d/p{row.patient_id}/s{row.study_id}/{row.dicom_id}\.dcm", row.path)
        assert str(row.patient_id).startswith(row.path[7:9])
        assert (root / "mimic-cxr" / row.path).is_file()
    assert m["anchor_age"].str.fullmatch(r"\d0 - \d0").all()
    chx = m[[c for c in MASTER if c.endswith("__chx")]]
    values = chx.to_numpy(dtype=float).ravel()
    assert len(chx.columns) == 14 and np.isnan(values).any()
    assert set(values[~np.isnan(values)]) == {1.0, 0.0, -1.0}
    assert (m["CHF"] == m["cardiomegaly__chx"].eq(1)).all()
    # 128 x 104 shown at 1080 px high: 877.5 -> 878 px wide, centred
    assert (m["image_top_pad"] == 0).all() and (m["image_bottom_pad"] == 0).all()
    assert (m["image_left_pad"] == 521).all() and (m["image_right_pad"] == 521).all()


def test_gaze_columns_calibration_and_off_image(tables):
    master_ids = set(tables["master"]["dicom_id"])
    for key in ("fix", "raw"):
        gaze = tables[key]
        assert list(gaze.columns) == GAZE and len(GAZE) == 37
        assert all(pd.api.types.is_numeric_dtype(gaze[c]) for c in GAZE if c != "DICOM_ID")
        calibration = gaze.loc[~gaze["DICOM_ID"].isin(master_ids), "DICOM_ID"]
        assert len(calibration) > 0 and calibration.str.len().eq(39).all()
        # the calibration id is a prefix of a real id: only exact matching drops it
        assert all(any(i.startswith(c) for i in master_ids) for c in set(calibration))
        assert set(gaze["DICOM_ID"]) >= master_ids
        on_images = gaze[gaze["DICOM_ID"].isin(master_ids)]
        minus_one = (on_images["X_ORIGINAL"] == -1) & (on_images["Y_ORIGINAL"] == -1)
        other_negative = (on_images[["X_ORIGINAL", "Y_ORIGINAL"]] < 0).any(axis=1) & ~minus_one
        assert minus_one.sum() > 0 and other_negative.sum() > 0
        assert (on_images["X_ORIGINAL"] < 104).all() and (on_images["Y_ORIGINAL"] < 128).all()


def test_fixations_are_the_last_raw_sample_of_each_fixation(tables):
    raw, fix = tables["raw"], tables["fix"]
    last = raw[raw["FPOGV"] == 1].groupby(["SESSION_ID", "FPOGID"]).tail(1).reset_index(drop=True)
    pd.testing.assert_frame_equal(last, fix.reset_index(drop=True))
    assert fix["FPOGD"].between(0.1, 0.8).all() and (fix["FPOGV"] == 1).all()
    assert np.allclose(fix["FPOGS"] + fix["FPOGD"] - 1 / 60, fix["Time (in secs)"], atol=2e-5)
    for _, session in raw.groupby("SESSION_ID"):
        assert (np.diff(session["CNT"]) == 1).all()
        assert np.allclose(np.diff(session["Time (in secs)"]), 1 / 60, atol=2e-5)
        assert np.allclose(np.diff(session["TIMETICK(f=10000000)"]), 1e7 / 60, atol=200)
    saccades = raw[raw["FPOGV"] == 0]
    assert len(saccades) > 0 and (saccades["FPOGD"] == 0).all()


def test_screen_fractions_match_dicom_coordinates(tables):
    raw, m = tables["raw"], tables["master"]
    left, right = int(m["image_left_pad"].iloc[0]), int(m["image_right_pad"].iloc[0])
    on = raw[(raw["X_ORIGINAL"] >= 0) & (raw["Y_ORIGINAL"] >= 0)]
    x = (on["FPOGX"] * 1920 - left) * 104 / (1920 - left - right)
    y = on["FPOGY"] * 1080 * 128 / 1080
    assert np.abs(np.floor(x) - on["X_ORIGINAL"]).max() <= 1
    assert np.abs(np.floor(y) - on["Y_ORIGINAL"]).max() <= 1


def test_dicoms(root, tables):
    truth = tables["truth"].set_index("dicom_id")
    found = {"MONOCHROME1": 0, "jpeg2000": 0, "rle": 0, "windowed": 0}
    for _, row in tables["master"].iterrows():
        ds = pydicom.dcmread(root / "mimic-cxr" / row.path)
        arr = ds.pixel_array
        assert arr.shape == (128, 104) and arr.dtype == np.uint16 and arr.max() <= 4095
        assert ds.BitsStored == 12 and ds.Modality in ("CR", "DX")
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        syntax = ds.file_meta.TransferSyntaxUID
        found["MONOCHROME1"] += ds.PhotometricInterpretation == "MONOCHROME1"
        found["jpeg2000"] += syntax == pydicom.uid.JPEG2000Lossless
        found["rle"] += syntax == pydicom.uid.RLELossless
        found["windowed"] += "WindowCenter" in ds and "WindowWidth" in ds
        assert truth.at[row.dicom_id, "photometric"] == ds.PhotometricInterpretation
        assert truth.at[row.dicom_id, "transfer_syntax"] == syntax
        pixels = _presentation(root / "mimic-cxr" / row.path)
        lungs = (_mask(root, row.dicom_id, "left_lung") | _mask(root, row.dicom_id, "right_lung")) > 0
        mediastinum = _mask(root, row.dicom_id, "mediastanum") > 0
        assert pixels[mediastinum].mean() > pixels[lungs].mean() + 1000  # bright heart, dark lungs
    # 30 images: 0.25 -> 7.5 -> 8, 0.15 -> 4.5 -> 5, 0.3 -> 9 (half rounds up)
    assert found == {"MONOCHROME1": 8, "jpeg2000": 5, "rle": 5, "windowed": 9}


def test_masks_follow_the_anatomy(root, tables):
    areas = {}
    for _, row in tables["master"].iterrows():
        masks = {name: _mask(root, row.dicom_id, name) for name in MASKS}
        for name, mask in masks.items():
            assert mask.shape == (128, 104) and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
        # radiological convention: the patient's left lung on the image's right
        assert np.nonzero(masks["left_lung"])[1].mean() > np.nonzero(masks["right_lung"])[1].mean()
        areas[row.dicom_id] = (masks["mediastanum"] > 0).sum()
    truth = tables["truth"]
    area = truth["dicom_id"].map(areas)
    assert area[truth["label"] == 1].mean() > 1.15 * area[truth["label"] == 0].mean()
    heart = tables["boxes"][tables["boxes"]["bbox_name"] == "cardiac silhouette"].set_index("dicom_id")
    heart_area = truth["dicom_id"].map((heart["x2"] - heart["x1"]) * (heart["y2"] - heart["y1"]))
    assert heart_area[truth["label"] == 1].mean() > 1.5 * heart_area[truth["label"] == 0].mean()
    assert truth.loc[truth["label"] != 1, "ctr"].between(0.40, 0.48).all()
    assert truth.loc[truth["label"] == 1, "ctr"].between(0.55, 0.62).all()
    # CTR measured from the bounding boxes: heart width / outer lung-to-lung width
    boxes = tables["boxes"].set_index(["dicom_id", "bbox_name"])
    for _, t in truth.iterrows():
        heart = boxes.loc[(t.dicom_id, "cardiac silhouette")]
        width = boxes.loc[(t.dicom_id, "left lung"), "x2"] - boxes.loc[(t.dicom_id, "right lung"), "x1"]
        assert abs((heart.x2 - heart.x1) / width - t.ctr) < 0.05


def test_evidence_is_local_and_faint(root, no_evidence, tables):
    truth = tables["truth"]
    truth0 = pd.read_csv(no_evidence / "synthetic_truth.csv", dtype={"dicom_id": str})
    assert truth0["dicom_id"].tolist() == truth["dicom_id"].tolist()
    assert truth0.loc[truth0["label"] == 1, "ctr"].between(0.40, 0.48).all()
    boxes = tables["boxes"].set_index(["dicom_id", "bbox_name"])
    for (_, row), (_, t) in zip(tables["master"].iterrows(), truth.iterrows(), strict=True):
        diff = (_presentation(root / "mimic-cxr" / row.path)
                - _presentation(no_evidence / "mimic-cxr" / row.path))
        changed = diff != 0
        if t.label == 0:
            assert not changed.any()
        elif t.label == 2:
            lungs = (_mask(root, row.dicom_id, "left_lung") | _mask(root, row.dicom_id, "right_lung")) > 0
            in_boxes = np.zeros_like(changed)
            for b in _boxes(t.opacity_boxes):
                in_boxes[b["y1"]:b["y2"], b["x1"]:b["x2"]] = True
                assert lungs[(b["y1"] + b["y2"]) // 2, (b["x1"] + b["x2"]) // 2]
            assert 1 <= t.n_opacities <= 3 and changed.any()
            assert (diff >= 0).all() and not (changed & ~lungs).any() and not (changed & ~in_boxes).any()
            assert diff.max() < 0.2 * 4095  # faint
            assert diff[in_boxes].mean() > 5 * diff.mean()  # local, not a global shift
        else:
            heart = boxes.loc[(row.dicom_id, "cardiac silhouette")]
            near = np.zeros_like(changed)
            near[max(heart.y1 - 3, 0):heart.y2 + 3, max(heart.x1 - 3, 0):heart.x2 + 3] = True
            assert changed.any() and not (changed & ~near).any()
            assert abs(diff.mean()) < 0.02 * 4095
    assert (truth.loc[truth["label"] != 2, "n_opacities"] == 0).all()


def test_gaze_dwells_on_the_evidence(root, tables):
    fix, truth = tables["fix"], tables["truth"].set_index("dicom_id")
    on = fix[fix["DICOM_ID"].isin(truth.index) & (fix["X_ORIGINAL"] >= 0) & (fix["Y_ORIGINAL"] >= 0)]
    heart_share, box_share, box_area = {0: [], 1: [], 2: []}, [], []
    for dicom_id, pts in on.groupby("DICOM_ID"):
        label = truth.at[dicom_id, "label"]
        xs, ys, dwell = pts["X_ORIGINAL"].to_numpy(), pts["Y_ORIGINAL"].to_numpy(), pts["FPOGD"].to_numpy()
        inside = _mask(root, dicom_id, "mediastanum")[ys, xs] > 0
        heart_share[label].append(dwell[inside].sum() / dwell.sum())
        if label == 2:
            in_boxes = np.zeros(len(pts), dtype=bool)
            area = np.zeros((128, 104), dtype=bool)
            for b in _boxes(truth.at[dicom_id, "opacity_boxes"]):
                in_boxes |= (xs >= b["x1"]) & (xs < b["x2"]) & (ys >= b["y1"]) & (ys < b["y2"])
                area[b["y1"]:b["y2"], b["x1"]:b["x2"]] = True
            box_share.append(dwell[in_boxes].sum() / dwell.sum())
            box_area.append(area.mean())
    assert np.mean(heart_share[1]) > np.mean(heart_share[0]) + 0.1
    assert np.mean(box_share) > 0.3 and np.mean(box_share) > 3 * np.mean(box_area)


def test_presence_cue_follows_the_configured_correlation(root, tables):
    truth = tables["truth"]
    target = truth["label"] == LABEL_COLUMNS.index("pneumonia")
    train, val = truth["split"] == "train", truth["split"] == "val"
    assert (truth.loc[train, "cue_present"] == target[train]).all()  # p = 1
    assert (truth.loc[val, "cue_present"] != target[val]).all()  # p = 0
    for (_, row), (_, t) in zip(tables["master"].iterrows(), truth.iterrows(), strict=True):
        pixels = _presentation(root / "mimic-cxr" / row.path)
        tag = pixels[4:9, 95:100]  # top right: 5 px square, 4 px from the edges
        if t.cue_present:
            assert (t.cue_x, t.cue_y) == (97, 6) and (tag == round(0.95 * 4095)).all()
        else:
            assert pd.isna(t.cue_x) and tag.max() < 0.8 * 4095


def test_position_cue_statistics(tmp_path):
    config = SyntheticCXRConfig(n_images=240, rows=64, cols=64, cue="marker_position",
                                cue_correlation_train=0.8,
                                view_seconds=(0.5, 0.5), fraction_jpeg2000=0.0, fraction_rle=0.0)
    root = generate_synthetic_egd_cxr(tmp_path / "data", config, progress=False)
    truth = pd.read_csv(root / "synthetic_truth.csv")
    agree = truth["cue_position"] == truth["label"]
    assert truth["cue_position"].between(0, 2).all() and (truth["cue_present"] == 1).all()
    assert 0.72 < agree[truth["split"] == "train"].mean() < 0.88
    assert 0.1 < agree[truth["split"] == "test"].mean() < 0.6  # independent: about 1/3
    assert set(zip(truth["cue_x"], truth["cue_y"], strict=True)) == {(4, 4), (59, 4), (4, 59)}


def test_same_config_is_deterministic_and_a_rerun_is_a_no_op(root, tmp_path, monkeypatch):
    again = generate_synthetic_egd_cxr(tmp_path / "again", SMALL, progress=False)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (root / rel).read_bytes() == (again / rel).read_bytes(), rel

    def boom(*args, **kwargs):
        raise AssertionError("regenerated")

    monkeypatch.setattr(writer, "_write_dataset", boom)
    stamp = (again / "synthetic_config.json").stat().st_mtime_ns
    assert generate_synthetic_egd_cxr(again, SMALL, progress=False) == again
    assert (again / "synthetic_config.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match=re.escape(str(again)) + ".*seed"):
        generate_synthetic_egd_cxr(again, SyntheticCXRConfig(**{**SMALL.to_dict(), "seed": 1}),
                                   progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a synthetic EGD-CXR folder"):
        generate_synthetic_egd_cxr(tmp_path / "other", SMALL, progress=False)


def test_failed_generation_leaves_no_folder(tmp_path, monkeypatch):
    calls = []
    real = writer._write_png

    def flaky(path, mask):
        calls.append(path)
        if len(calls) > 6:
            raise RuntimeError("disk full")
        real(path, mask)

    monkeypatch.setattr(writer, "_write_png", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_synthetic_egd_cxr(tmp_path / "data", SyntheticCXRConfig(n_images=3, rows=64, cols=64),
                                   progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_real_loader_reads_it(root, tables):
    from attnlib.data.real.egd_cxr import EGDCXR, EGDCXRPaths
    from attnlib.data.real.egd_cxr_verify import verify_egd_cxr

    paths = EGDCXRPaths.from_root(root)
    assert all(p.severity == "warning" for p in verify_egd_cxr(paths, deep=True))
    ds = EGDCXR(paths, split="train", cache=None)
    truth = tables["truth"].set_index("dicom_id")
    assert len(ds) == (truth["split"] == "train").sum()
    assert (ds.labels == truth.loc[ds.metadata["dicom_id"], "label"].to_numpy()).all()
    item = ds[0]
    assert tuple(item["img"].shape) == (1, 64, 52) and tuple(item["masks"].shape) == (4, 64, 52)
    assert float(item["hmap"].max()) == pytest.approx(1.0)
