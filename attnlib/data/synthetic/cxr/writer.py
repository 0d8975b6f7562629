"""Writing the dataset: DICOMs, mask PNGs and tables into a staging folder renamed when complete."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid

from attnlib.core.progress import tqdm
from attnlib.data.real.egd_cxr import (
    CHEXPERT_COLUMNS,
    GAZE_COLUMNS,
    LABEL_COLUMNS,
    MASK_FILES,
    MASTER_SHEET_COLUMNS,
)
from attnlib.data.splits import SPLIT_NAMES, balanced_split, save_split
from attnlib.data.synthetic.cxr.anatomy import _bbox, _render
from attnlib.data.synthetic.cxr.config import (
    GENERATOR_VERSION,
    MARKER_POSITIONS,
    MAX_LEVEL,
    SyntheticCXRConfig,
    _rng,
)
from attnlib.data.synthetic.cxr.gaze import GAZE_HZ, _expand, _gaze_samples, _plan_gaze, _Screen
from attnlib.data.synthetic.cxr.tables import _cue, _formats, _master_rows, _transcript
from attnlib.data.synthetic.generated import generate_folder

log = logging.getLogger(__name__)

#: Files of ``inclusion_exclusion_criteria_outputs/``, per class.
INCLUSION_FILES = {"Normal": "normals.csv", "CHF": "CHF.csv", "pneumonia": "pneumonia.csv"}
TRUTH_FILE = "synthetic_truth.csv"
#: Columns of ``synthetic_truth.csv`` (described in the package docstring).
TRUTH_COLUMNS = (
    "dicom_id",
    "label",
    "split",
    "photometric",
    "transfer_syntax",
    "windowed",
    "ctr",
    "n_opacities",
    "opacity_boxes",
    "cue_present",
    "cue_x",
    "cue_y",
    "cue_position",
)


def _write_dicom(path: Path, pixels: np.ndarray, row: dict[str, Any], fmt: dict[str, Any], seed: int) -> None:
    """Write the image as a DICOM with the chosen photometric interpretation, syntax and window."""
    stored = MAX_LEVEL - pixels if fmt["photometric"] == "MONOCHROME1" else pixels
    sop_class = "1.2.840.10008.5.1.4.1.1.1" if fmt["modality"] == "CR" else "1.2.840.10008.5.1.4.1.1.1.1"
    uid = {k: generate_uid(entropy_srcs=[str(seed), row["dicom_id"], k]) for k in ("study", "series", "sop")}
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid["sop"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uid["sop"]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid["study"], uid["series"]
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined = fmt["modality"], fmt["view"], "CHEST"
    ds.PatientID, ds.PatientSex, ds.StudyID = str(row["patient_id"]), row["gender"], str(row["study_id"])[:16]
    ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = fmt["date"], 1, 1
    spacing = round(425.0 / pixels.shape[0], 4)
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, fmt["photometric"]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if fmt["windowed"]:
        lo, hi = np.percentile(stored, [0.5, 99.5])
        ds.WindowCenter, ds.WindowWidth = (
            round(float(lo + hi) / 2, 1),
            round(max(1.0, 1.2 * float(hi - lo)), 1),
        )
    ds.PixelData = stored.astype(np.uint16).tobytes()
    if fmt["transfer_syntax"] == JPEG2000Lossless:
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    elif fmt["transfer_syntax"] == RLELossless:
        ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def _write_png(path: Path, mask: np.ndarray) -> None:
    """Write a boolean mask as an 8-bit PNG (0 / 255)."""
    Image.fromarray(mask.astype(np.uint8) * 255).save(path, format="PNG", compress_level=1)


def _write_dataset(root: Path, config: SyntheticCXRConfig, progress: bool) -> dict[str, Any]:
    """Write every file of the dataset under ``root``; returns the counts for the config file."""
    n = config.n_images
    labels = _rng(config.seed, "labels").permutation(np.arange(n) % 3)
    screen = _Screen.fit(config.rows, config.cols)
    master = _master_rows(labels, config, screen)
    ids = [r["dicom_id"] for r in master]
    split = balanced_split(ids, labels.tolist(), config.split_seed, config.split_fractions)
    formats = _formats(n, config)
    egd, mimic = root / "egd-cxr", root / "mimic-cxr"
    transcripts = egd / "audio_segmentation_transcripts"
    gaze: dict[str, dict[str, np.ndarray]] = {}
    truth, boxes = [], []
    for i in tqdm(range(n), desc="synthetic EGD-CXR", disable=not progress, leave=False):
        row, label, fmt = master[i], int(labels[i]), formats[i]
        cue_position = _cue(label, split.at[i, "split"], config, i)
        drawn = _render(i, label, cue_position, config)
        _write_dicom(mimic / row["path"], drawn.pixels, row, fmt, config.seed)
        folder = transcripts / row["dicom_id"]
        folder.mkdir(parents=True)
        for name, mask in drawn.masks.items():
            _write_png(folder / MASK_FILES[name], mask)
        gaze_rng = _rng(config.seed, "gaze", i)
        view_s = gaze_rng.uniform(*config.view_seconds)
        gaze[row["dicom_id"]] = _expand(_plan_gaze(label, drawn, screen, view_s, gaze_rng), screen, gaze_rng)
        seconds = len(gaze[row["dicom_id"]]["bx"]) / GAZE_HZ
        (folder / "transcript.json").write_text(json.dumps(_transcript(label, drawn, seconds), indent=1))
        for bbox_name, mask in (
            ("right lung", drawn.masks["right_lung"]),
            ("left lung", drawn.masks["left_lung"]),
            ("cardiac silhouette", drawn.heart),
        ):
            boxes.append({"dicom_id": row["dicom_id"], "bbox_name": bbox_name, **_bbox(mask)})
        truth.append(
            {
                "dicom_id": row["dicom_id"],
                "label": label,
                "split": split.at[i, "split"],
                "photometric": fmt["photometric"],
                "transfer_syntax": str(fmt["transfer_syntax"]),
                "windowed": int(fmt["windowed"]),
                "ctr": round(drawn.ctr, 4),
                "n_opacities": len(drawn.opacities),
                "opacity_boxes": json.dumps(drawn.opacity_boxes),
                "cue_present": int(cue_position is not None),
                "cue_x": drawn.cue_xy[0] if drawn.cue_xy else None,
                "cue_y": drawn.cue_xy[1] if drawn.cue_xy else None,
                "cue_position": MARKER_POSITIONS.index(cue_position)
                if config.cue == "marker_position" and cue_position
                else -1,
            }
        )

    samples = _gaze_samples(ids, gaze, screen, config.seed)
    fixations = samples[samples["_last"]]
    samples[list(GAZE_COLUMNS)].to_csv(egd / "eye_gaze.csv", index=False)
    fixations[list(GAZE_COLUMNS)].to_csv(egd / "fixations.csv", index=False)

    sheet = pd.DataFrame(master, columns=list(MASTER_SHEET_COLUMNS))
    for col in CHEXPERT_COLUMNS:
        sheet[col] = pd.array(sheet[col].tolist(), dtype="Int64")
    sheet.to_csv(egd / "master_sheet.csv", index=False)
    pd.DataFrame(boxes, columns=["dicom_id", "bbox_name", "x1", "x2", "y1", "y2"]).to_csv(
        egd / "bounding_boxes.csv", index=False
    )
    inclusion = egd / "inclusion_exclusion_criteria_outputs"
    inclusion.mkdir()
    for k, cls in enumerate(LABEL_COLUMNS):
        pd.DataFrame({"dicom_id": [d for d, lab in zip(ids, labels, strict=True) if lab == k]}).to_csv(
            inclusion / INCLUSION_FILES[cls], index=False
        )
    truth_frame = pd.DataFrame(truth, columns=list(TRUTH_COLUMNS))
    for col in ("cue_x", "cue_y"):
        truth_frame[col] = pd.array(truth_frame[col].tolist(), dtype="Int64")
    truth_frame.to_csv(root / TRUTH_FILE, index=False)
    save_split(split, root / "split.csv")
    return {
        "images": n,
        "per_class": {cls: int((labels == k).sum()) for k, cls in enumerate(LABEL_COLUMNS)},
        "per_split": {name: int((split["split"] == name).sum()) for name in SPLIT_NAMES},
        "sessions": int(samples["SESSION_ID"].nunique()),
        "eye_gaze_rows": len(samples),
        "fixation_rows": len(fixations),
        "monochrome1": sum(f["photometric"] == "MONOCHROME1" for f in formats),
        "jpeg2000": sum(f["transfer_syntax"] == JPEG2000Lossless for f in formats),
        "rle": sum(f["transfer_syntax"] == RLELossless for f in formats),
        "windowed": sum(f["windowed"] for f in formats),
    }


def generate_synthetic_egd_cxr(
    out: Path, config: SyntheticCXRConfig = SyntheticCXRConfig(), *, progress: bool = True
) -> Path:
    """Write the synthetic EGD-CXR for ``config`` to ``out`` (layout: module docstring); returns ``out``.

    Deterministic: the same config gives byte-identical tables and identical pixels. If ``out``
    already holds the same config's output it is returned untouched; a folder with anything
    else raises ``FileExistsError`` naming it. The data are written to a temporary sibling folder,
    renamed to ``out`` when complete (removed on error). ``progress`` shows a tqdm bar.
    """
    return generate_folder(
        out, kind="synthetic EGD-CXR", config=config.to_dict(), version=GENERATOR_VERSION,
        write=lambda staging: _write_dataset(staging, config, progress),
    )


def read_truth(root: str | Path) -> pd.DataFrame | None:
    """The generator's per-image ground truth (:data:`TRUTH_FILE` in ``root``), or None for a real dataset."""
    path = Path(root) / TRUTH_FILE
    return pd.read_csv(path) if path.is_file() else None
