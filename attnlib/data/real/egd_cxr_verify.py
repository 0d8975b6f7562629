"""Checks of a local EGD-CXR copy (master sheet, gaze tables, masks, MIMIC-CXR DICOMs) against its manifest."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from attnlib.data.real.dicom import DicomReadError, dicom_metadata, read_dicom
from attnlib.data.real.egd_cxr import LABEL_COLUMNS, MASK_FILES, EGDCXRPaths
from attnlib.data.real.manifest import Problem, load_manifest, not_decoded

log = logging.getLogger(__name__)


def verify_egd_cxr(
    paths: EGDCXRPaths, *, deep: bool = False, manifest: dict[str, Any] | None = None
) -> list[Problem]:
    """Check a local EGD-CXR copy against its manifest; returns every problem found (empty = clean).

    Checks the master sheet (columns, one-hot labels, count), both gaze tables (the 37 columns,
    images without gaze, calibration rows), the four masks and the DICOM of every image. With
    ``deep``, every DICOM is decoded and each mask's size compared with its DICOM's; without it a
    note counts the DICOMs not decoded.
    """
    manifest = manifest or load_manifest("egd-cxr")
    files = manifest["files"]
    problems: list[Problem] = []
    sheet_path = paths.master_sheet
    if not sheet_path.is_file():
        return [Problem("error", sheet_path, "master sheet not found: nothing else can be checked")]
    sheet = pd.read_csv(sheet_path, dtype={"dicom_id": str, "path": str})
    spec = files["master_sheet.csv"]
    missing = [c for c in spec["required_columns"] if c not in sheet.columns]
    if missing:
        problems.append(Problem("error", sheet_path, f"missing columns {missing}"))
    if len(sheet.columns) != spec["n_columns"]:
        problems.append(
            Problem("warning", sheet_path, f"{len(sheet.columns)} columns, expected {spec['n_columns']}")
        )
    if len(sheet) != manifest["expected_counts"]["images"]:
        problems.append(
            Problem(
                "warning",
                sheet_path,
                f"{len(sheet)} images, the release has {manifest['expected_counts']['images']}",
            )
        )
    if all(c in sheet.columns for c in LABEL_COLUMNS):
        onehot = sheet[list(LABEL_COLUMNS)].apply(pd.to_numeric, errors="coerce")
        bad = ~(onehot.isin([0, 1]).all(axis=1) & (onehot.sum(axis=1) == 1))
        for dicom_id in sheet.loc[bad, "dicom_id"]:
            problems.append(
                Problem("error", sheet_path, f"{dicom_id}: labels are not one-hot over {list(LABEL_COLUMNS)}")
            )
    ids = set(sheet["dicom_id"]) if "dicom_id" in sheet.columns else set()
    for name in ("fixations.csv", "eye_gaze.csv"):
        problems += _verify_gaze(paths.egd_root / name, files[name]["columns"], ids)
    if "path" not in sheet.columns:
        return problems
    present = 0
    for dicom_id, rel in zip(sheet["dicom_id"], sheet["path"], strict=True):
        problems += _verify_image(paths, dicom_id, rel, deep)
        present += (paths.mimic_root / rel).is_file()
    return problems + ([] if deep else not_decoded(paths.egd_root, present, "DICOMs"))


def _verify_gaze(path: Path, columns: list[str], ids: set[str]) -> list[Problem]:
    if not path.is_file():
        return [Problem("error", path, "gaze table not found")]
    header = list(pd.read_csv(path, nrows=0).columns)
    problems = []
    if header != columns:
        missing = [c for c in columns if c not in header]
        extra = [c for c in header if c not in columns]
        problems.append(Problem("error", path, f"columns differ: missing {missing}, unexpected {extra}"))
    if "DICOM_ID" not in header:
        return problems
    seen: set[str] = set()
    calibration = 0
    for chunk in pd.read_csv(path, usecols=["DICOM_ID"], dtype=str, chunksize=500_000):
        known = chunk["DICOM_ID"].isin(ids)
        calibration += int((~known).sum())
        seen.update(chunk.loc[known, "DICOM_ID"])
    log.info("%s: %d calibration rows (DICOM_ID not in the master sheet)", path.name, calibration)
    for dicom_id in sorted(ids - seen):
        problems.append(Problem("error", path, f"{dicom_id}: no gaze for this image"))
    return problems


def _verify_image(paths: EGDCXRPaths, dicom_id: str, rel: str, deep: bool) -> list[Problem]:
    problems = []
    mask_paths = [paths.mask(dicom_id, name) for name in MASK_FILES]
    problems += [Problem("error", p, "mask not found") for p in mask_paths if not p.is_file()]
    dicom = paths.mimic_root / rel
    if not dicom.is_file():
        return [*problems, Problem("error", dicom, f"DICOM of {dicom_id} not found")]
    if deep:
        try:
            read_dicom(dicom, scale=None)
            meta = dicom_metadata(dicom)
        except DicomReadError as err:
            return [*problems, Problem("error", dicom, str(err).removeprefix(f"{dicom}: "))]
        for p in mask_paths:
            if p.is_file():
                with Image.open(p) as im:
                    if (im.height, im.width) != (meta["Rows"], meta["Columns"]):
                        problems.append(
                            Problem(
                                "error",
                                p,
                                f"mask is {im.height}x{im.width}, its DICOM {meta['Rows']}x{meta['Columns']}",
                            )
                        )
    return problems
