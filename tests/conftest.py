"""Shared fixtures: a hand-made copy of the EGD-CXR layout with exactly known content."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from attnlib.data.real.egd_cxr import EGDCXRPaths

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
