"""EGD-CXR: eye-gaze data for chest X-rays, read from its real PhysioNet layout.

Karargyris et al., "Creation and validation of a chest X-ray dataset with eye-tracking and report
dictation for AI development", Scientific Data 8, 92 (2021). PhysioNet ``egd-cxr`` 1.0.0,
DOI 10.13026/qfdz-zr67 (credentialed access, PhysioNet data use agreement). The images are
MIMIC-CXR 2.0.0 DICOMs, a separate credentialed download.

Expected folders (``EGDCXRPaths``): the EGD-CXR root (``master_sheet.csv``, ``fixations.csv``,
``eye_gaze.csv``, ``audio_segmentation_transcripts/<dicom_id>/*.png``) and the MIMIC-CXR root that
each master-sheet row's ``path`` is relative to. ``EGDCXRPaths.from_root(root)`` accepts a folder
holding both as ``egd-cxr/`` and ``mimic-cxr/`` (the synthetic default is written that way).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import torch
from PIL import Image

from attnlib.data.cache import ArrayCache
from attnlib.data.contract import LabelledDataset
from attnlib.data.real.dicom import dicom_metadata, read_dicom_cached
from attnlib.data.real.gaze import (
    PUBLIC_PAD,
    PUBLIC_STRIDE,
    BlurUnits,
    Resample,
    corner_pad_shape,
    corner_sample,
    gaze_heatmap,
)
from attnlib.data.splits import SPLIT_NAMES, balanced_split, load_split

log = logging.getLogger(__name__)

#: One-hot label columns of ``master_sheet.csv`` and the class names attnlib reports.
LABEL_COLUMNS = ("Normal", "CHF", "pneumonia")
LABEL_NAMES = ("normal", "cardiomegaly", "pneumonia")
#: Anatomical masks per image; the real file for the mediastinum is spelled ``mediastanum.png``.
MASK_FILES = {
    "left_lung": "left_lung.png",
    "right_lung": "right_lung.png",
    "mediastinum": "mediastanum.png",
    "aortic_knob": "aortic_knob.png",
}
#: Finding columns of ``master_sheet.csv``.
FINDING_COLUMNS = (
    "consolidation",
    "enlarged_cardiac_silhouette",
    "linear__patchy_atelectasis",
    "lobar__segmental_collapse",
    "not_otherwise_specified_opacity___pleural__parenchymal_opacity__",
    "pleural_effusion_or_thickening",
    "pulmonary_edema__hazy_opacity",
    "normal_anatomically",
    "elevated_hemidiaphragm",
    "hyperaeration",
    "vascular_redistribution",
)
#: CheXpert label columns of ``master_sheet.csv`` (suffix ``__chx``).
CHEXPERT_COLUMNS = tuple(
    f"{name}__chx"
    for name in (
        "atelectasis",
        "cardiomegaly",
        "consolidation",
        "edema",
        "enlarged_cardiomediastinum",
        "fracture",
        "lung_lesion",
        "lung_opacity",
        "no_finding",
        "pleural_effusion",
        "pleural_other",
        "pneumonia",
        "pneumothorax",
        "support_devices",
    )
)
#: The 59 columns of ``master_sheet.csv``, in file order.
MASTER_SHEET_COLUMNS = (
    "dicom_id",
    "path",
    "study_id",
    "patient_id",
    "stay_id",
    "gender",
    "anchor_age",
    "image_top_pad",
    "image_bottom_pad",
    "image_left_pad",
    "image_right_pad",
    *(c for i in range(1, 10) for c in (f"dx{i}", f"dx{i}_icd")),
    "normal_reports",
    *LABEL_COLUMNS,
    *FINDING_COLUMNS,
    *CHEXPERT_COLUMNS,
    "cxr_exam_indication",
)
#: The 37 columns of ``fixations.csv`` and ``eye_gaze.csv``, in file order.
GAZE_COLUMNS = (
    "SESSION_ID",
    "MEDIA_ID",
    "DICOM_ID",
    "CNT",
    "Time (in secs)",
    "TIMETICK(f=10000000)",
    "FPOGX",
    "FPOGY",
    "FPOGS",
    "FPOGD",
    "FPOGID",
    "FPOGV",
    "BPOGX",
    "BPOGY",
    "BPOGV",
    "LPCX",
    "LPCY",
    "LPD",
    "LPS",
    "LPV",
    "RPCX",
    "RPCY",
    "RPD",
    "RPS",
    "RPV",
    "BKID",
    "BKDUR",
    "BKPMIN",
    "LPMM",
    "LPMMV",
    "RPMM",
    "RPMMV",
    "SACCADE_MAG",
    "SACCADE_DIR",
    "VID_FRAME",
    "X_ORIGINAL",
    "Y_ORIGINAL",
)
MASTER_REQUIRED = ("dicom_id", "path", "study_id", "patient_id", *LABEL_COLUMNS)
GAZE_FILES = {"fixations": "fixations.csv", "eye_gaze": "eye_gaze.csv"}
#: The gaze-table columns the loader reads.
GAZE_USED_COLUMNS = ("DICOM_ID", "Time (in secs)", "FPOGD", "X_ORIGINAL", "Y_ORIGINAL")
#: Above this share of an image's points outside it, the coordinates are taken to be broken, not noisy.
MAX_OUT_OF_RANGE_SHARE = 0.5

GazeSource = Literal["fixations", "eye_gaze"]
GazeWeight = Literal["count", "duration"]


class EGDCXRFormatError(ValueError):
    """A file of the EGD-CXR layout is missing or does not have the expected content."""


@dataclass(frozen=True)
class EGDCXRPaths:
    """Where the EGD-CXR tables and the MIMIC-CXR DICOMs live."""

    egd_root: Path
    mimic_root: Path

    @classmethod
    def from_root(cls, root: str | Path, mimic_root: str | Path | None = None) -> EGDCXRPaths:
        """``root`` is the EGD-CXR folder itself or a folder holding ``egd-cxr/`` (and ``mimic-cxr/``)."""
        root = Path(root).expanduser()
        egd = root / "egd-cxr" if (root / "egd-cxr").is_dir() else root
        mimic = Path(mimic_root).expanduser() if mimic_root is not None else root / "mimic-cxr"
        return cls(egd, mimic)

    @property
    def master_sheet(self) -> Path:
        return self.egd_root / "master_sheet.csv"

    def gaze_table(self, source: GazeSource) -> Path:
        return self.egd_root / GAZE_FILES[source]

    def mask(self, dicom_id: str, name: str) -> Path:
        return self.egd_root / "audio_segmentation_transcripts" / dicom_id / MASK_FILES[name]


def read_master_sheet(path: str | Path) -> pd.DataFrame:
    """Read ``master_sheet.csv`` and add ``label`` (index into :data:`LABEL_NAMES`) from the one-hot columns.

    Raises :class:`EGDCXRFormatError` naming the file and the offending ids when a column is missing,
    an id repeats, or a row is not exactly one-hot.
    """
    path = Path(path)
    if not path.is_file():
        raise EGDCXRFormatError(f"{path}: master sheet not found")
    sheet = pd.read_csv(path, dtype={"dicom_id": str, "path": str})
    missing = [c for c in MASTER_REQUIRED if c not in sheet.columns]
    if missing:
        raise EGDCXRFormatError(f"{path}: missing columns {missing}")
    dup = sheet["dicom_id"][sheet["dicom_id"].duplicated()]
    if len(dup):
        raise EGDCXRFormatError(f"{path}: repeated dicom_id {sorted(dup)[:5]}")
    onehot = sheet[list(LABEL_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    bad = ~(onehot.isin([0, 1]).all(axis=1) & (onehot.sum(axis=1) == 1))
    if bad.any():
        raise EGDCXRFormatError(
            f"{path}: {int(bad.sum())} rows are not one-hot over {list(LABEL_COLUMNS)} "
            f"(first ids: {sheet.loc[bad, 'dicom_id'].head(3).tolist()})"
        )
    sheet["label"] = onehot.to_numpy().argmax(axis=1)
    return sheet


def read_gaze(path: str | Path, dicom_ids: Sequence[str], chunksize: int = 500_000) -> pd.DataFrame:
    """Read gaze points from ``fixations.csv`` or ``eye_gaze.csv``: columns ``dicom_id, x, y, duration``.

    Rows whose ``DICOM_ID`` is not exactly one of ``dicom_ids`` (calibration screens) and rows with a
    negative coordinate (gaze off the image, stored as -1 or other negatives) are dropped, and
    counted in one log line. ``duration`` is ``FPOGD`` for fixations and the median sampling
    interval for raw samples. The file is read in chunks (``eye_gaze.csv`` is ~400 MB).
    """
    path = Path(path)
    if not path.is_file():
        raise EGDCXRFormatError(f"{path}: gaze table not found")
    header = pd.read_csv(path, nrows=0).columns
    missing = [c for c in GAZE_USED_COLUMNS if c not in header]
    if missing:
        raise EGDCXRFormatError(f"{path}: missing columns {missing}")
    wanted = set(dicom_ids)
    raw = kept_rows = 0
    kept, n_calibration, n_offimage = [], 0, 0
    chunks = pd.read_csv(path, usecols=list(GAZE_USED_COLUMNS), dtype={"DICOM_ID": str}, chunksize=chunksize)
    for chunk in chunks:
        raw += len(chunk)
        known = chunk["DICOM_ID"].isin(wanted)
        n_calibration += int((~known).sum())
        chunk = chunk[known]
        coords = chunk[["X_ORIGINAL", "Y_ORIGINAL"]].apply(pd.to_numeric, errors="coerce")
        if coords.isna().any().any():
            bad = chunk.loc[coords.isna().any(axis=1), "DICOM_ID"].iloc[0]
            raise EGDCXRFormatError(f"{path}: non-numeric gaze coordinates (first in image {bad})")
        off = (coords < 0).any(axis=1)
        n_offimage += int(off.sum())
        kept.append(chunk[~off])
        kept_rows += int((~off).sum())
    gaze = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=list(GAZE_USED_COLUMNS))
    if path.name == GAZE_FILES["fixations"]:
        duration = gaze["FPOGD"].astype(float)
    else:
        step = gaze.groupby("DICOM_ID")["Time (in secs)"].diff().median()
        duration = pd.Series(float(step) if np.isfinite(step) else 1 / 60, index=gaze.index)
    log.info(
        "%s: %d rows; dropped %d calibration rows (DICOM_ID not in the master sheet) and %d off-image "
        "rows (negative coordinates); kept %d points for %d images",
        path.name, raw, n_calibration, n_offimage, kept_rows, gaze["DICOM_ID"].nunique(),
    )
    return pd.DataFrame(
        {
            "dicom_id": gaze["DICOM_ID"].astype(str).to_numpy(),
            "x": gaze["X_ORIGINAL"].astype(float).to_numpy(),
            "y": gaze["Y_ORIGINAL"].astype(float).to_numpy(),
            "duration": duration.to_numpy(dtype=float),
        }
    )


def read_mask(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask PNG as float32 {0, 1} (any channel > 0), optionally resized (nearest) to ``size`` = (H, W)."""
    if not path.is_file():
        raise EGDCXRFormatError(f"{path}: mask not found")
    try:
        with Image.open(path) as im:
            mask = np.asarray(im.convert("L")) > 0
    except OSError as err:
        raise EGDCXRFormatError(f"{path}: unreadable mask ({err})") from err
    if size is not None and mask.shape != tuple(size):
        mask = np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.Resampling.NEAREST))
    return mask.astype(np.float32)


def _corner_mask(path: Path, size: tuple[int, int], pad: tuple[int, int], stride: int) -> np.ndarray:
    """A full-size mask read at the public code's corner samples (``size`` = the grid)."""
    return corner_sample(read_mask(path), size, pad, stride)


@dataclass(frozen=True)
class EGDCXRSettings:
    """How images, gaze maps and masks are prepared; part of the cache key and the data fingerprint.

    ``scale`` halves each side by default (the paper); ``image_size`` = (H, W) overrides it.
    ``blur_std_px`` is B of Algorithm 1 in original-image pixels (None: 550 px at 3056 px high,
    scaled to the image). ``hmap_size`` defaults to the image size (the corner grid for
    ``resample="public_corner"``).

    The public code's recipe differs from the paper's (the defaults) in two settings, see
    :func:`~attnlib.data.real.gaze.gaze_heatmap`: ``blur_units="opencv_kernel"`` makes B + 1 OpenCV's kernel
    size (sigma = 0.15 B + 0.5, kernel cut at +-B/2, mirrored border) instead of the std;
    ``resample="public_corner"`` pads the blurred map and each organ mask (at the DICOM's size)
    centrally with zeros to ``corner_pad`` (None: ``hmap_size * corner_stride``) and reads every
    ``corner_stride`` px from pixel 0, the top-left corner of each CNN cell, instead of averaging each
    cell (maps) or resizing to the image (masks, which Eq. 12 then averages per cell). Views for
    display at the image size (``heatmap(i, img.shape)``, ``masks(i, img.shape)``) need ``"area"``.
    """

    scale: float | None = 0.5
    image_size: tuple[int, int] | None = None
    gaze_source: GazeSource = "fixations"
    gaze_weight: GazeWeight = "duration"
    blur_std_px: float | None = None
    hmap_size: tuple[int, int] | None = None
    masks: bool = True
    blur_units: BlurUnits = "std"
    resample: Resample = "area"
    corner_pad: tuple[int, int] | None = PUBLIC_PAD
    corner_stride: int = PUBLIC_STRIDE

    def __post_init__(self) -> None:
        if self.gaze_source not in GAZE_FILES:
            raise ValueError(f"gaze_source must be one of {sorted(GAZE_FILES)}, got {self.gaze_source!r}")
        if self.gaze_weight not in ("count", "duration"):
            raise ValueError(f"gaze_weight must be 'count' or 'duration', got {self.gaze_weight!r}")
        if self.blur_units not in get_args(BlurUnits):
            raise ValueError(f"blur_units must be one of {get_args(BlurUnits)}, got {self.blur_units!r}")
        if self.resample not in get_args(Resample):
            raise ValueError(f"resample must be one of {get_args(Resample)}, got {self.resample!r}")
        if self.corner_stride < 1 or (self.corner_pad is not None and min(self.corner_pad) < 1):
            raise ValueError(
                f"corner_stride and corner_pad must be positive, got {self.corner_stride} and {self.corner_pad}"
            )

    def image_params(self) -> dict[str, object]:
        return {"scale": self.scale, "size": list(self.image_size) if self.image_size else None}


@dataclass(eq=False)
class EGDCXR(LabelledDataset):
    """EGD-CXR images with gaze heat maps and organ masks, in attnlib's dataset contract.

    ``split`` selects ``train``/``val``/``test`` (None: all rows) from ``split_file`` or, when that
    is None, from a label-balanced 70/10/20 split with ``split_seed`` (GG-CAM's protocol); a
    ``split.csv`` beside the dataset (the synthetic generator writes one) is used when present.
    Items: ``idx, id, img`` (1 x H x W in [0, 1]), ``lab``, ``hmap`` (1 x h x w in [0, 1]) and,
    with ``settings.masks``, ``masks`` (4 x H x W, in :data:`MASK_FILES` order; 4 x h x w, on the heat
    map's grid, for ``settings.resample="public_corner"``).
    """

    paths: EGDCXRPaths
    split: str | None = None
    settings: EGDCXRSettings = field(default_factory=EGDCXRSettings)
    split_file: Path | None = None
    split_seed: int = 0
    cache: ArrayCache | None = field(default_factory=ArrayCache)
    label_names: list[str] = field(default_factory=lambda: list(LABEL_NAMES))

    def __post_init__(self) -> None:
        if self.split is not None and self.split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES} or None, got {self.split!r}")
        sheet = read_master_sheet(self.paths.master_sheet)
        splits = self._splits(sheet)
        sheet = sheet.merge(splits[["id", "split"]], left_on="dicom_id", right_on="id").drop(columns="id")
        if self.split is not None:
            sheet = sheet[sheet["split"] == self.split]
        self.metadata = sheet.reset_index(drop=True)
        self.labels = self.metadata["label"].to_numpy(dtype=np.int64)
        gaze = read_gaze(self.paths.gaze_table(self.settings.gaze_source), self.metadata["dicom_id"])
        self._gaze = dict(iter(gaze.groupby("dicom_id")))
        self._shapes: dict[int, tuple[int, int]] = {}
        without = sorted(set(self.metadata["dicom_id"]) - set(self._gaze))
        if without:
            raise EGDCXRFormatError(
                f"{self.paths.gaze_table(self.settings.gaze_source)}: no gaze on the image for "
                f"{len(without)} images (first: {without[:3]})"
            )

    def _splits(self, sheet: pd.DataFrame) -> pd.DataFrame:
        split_file = self.split_file
        if split_file is None and (self.paths.egd_root.parent / "split.csv").is_file():
            split_file = self.paths.egd_root.parent / "split.csv"
        if split_file is not None:
            self.split_file = Path(split_file)
            return load_split(self.split_file, ids=sheet["dicom_id"].tolist())
        return balanced_split(sheet["dicom_id"].tolist(), sheet["label"].tolist(), self.split_seed)

    def select(self, split: str) -> EGDCXR:
        """A view of one split sharing this dataset's gaze table and cache (no file is re-read)."""
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
        if self.split not in (None, split):
            raise ValueError(f"this dataset holds only the {self.split!r} split")
        view = copy.copy(self)
        view.split = split
        view.metadata = self.metadata[self.metadata["split"] == split].reset_index(drop=True)
        view.labels = view.metadata["label"].to_numpy(dtype=np.int64)
        view._shapes = {}
        view.__dict__.pop("fingerprint", None)
        return view

    def with_settings(self, **changes: Any) -> EGDCXR:
        """A view with some preprocessing settings changed (e.g. ``hmap_size``), sharing the gaze table."""
        view = copy.copy(self)
        view.settings = dataclasses.replace(self.settings, **changes)
        view.__dict__.pop("fingerprint", None)
        return view


    def dicom_path(self, i: int) -> Path:
        return self.paths.mimic_root / self.metadata.at[i, "path"]

    def original_shape(self, i: int) -> tuple[int, int]:
        """(Rows, Columns) of the DICOM, read from its header once."""
        if i not in self._shapes:
            meta = dicom_metadata(self.dicom_path(i))
            self._shapes[i] = (int(meta["Rows"]), int(meta["Columns"]))
        return self._shapes[i]

    def image(self, i: int) -> np.ndarray:
        """The preprocessed image (H x W, float32 in [0, 1]), from the cache after the first read."""
        return read_dicom_cached(self.dicom_path(i), self.cache, **self.settings.image_params())

    def gaze_points(self, i: int) -> pd.DataFrame:
        """This image's gaze points (``x, y, duration``) in original DICOM pixels."""
        return self._gaze[self.metadata.at[i, "dicom_id"]]

    def heatmap(self, i: int, out_shape: tuple[int, int] | None = None) -> np.ndarray:
        """Algorithm 1 heat map of image ``i`` (default size: ``settings.hmap_size``, else the original, or
        the corner grid for ``settings.resample="public_corner"``, which ``out_shape`` must then match).

        Points beyond the image border are dropped (logged at debug level); when most points fall
        outside the image (coordinates in another unit, or for another image) it raises
        :class:`EGDCXRFormatError` naming the gaze file and the image.
        """
        shape = self.original_shape(i)
        pts = self.gaze_points(i)
        inside = (pts["x"] < shape[1]) & (pts["y"] < shape[0])
        dicom_id = self.metadata.at[i, "dicom_id"]
        if (~inside).mean() > MAX_OUT_OF_RANGE_SHARE:
            raise EGDCXRFormatError(
                f"{self.paths.gaze_table(self.settings.gaze_source)}: {int((~inside).sum())} of {len(pts)} "
                f"gaze points of {dicom_id} lie outside its {shape[0]}x{shape[1]} DICOM"
            )
        if not inside.all():
            log.debug("%s: dropped %d gaze points beyond the image border", dicom_id, int((~inside).sum()))
        pts = pts[inside]
        return gaze_heatmap(
            pts["x"].to_numpy(), pts["y"].to_numpy(), shape,
            weights=pts["duration"].to_numpy() if self.settings.gaze_weight == "duration" else None,
            blur_std_px=self.settings.blur_std_px,
            out_shape=out_shape or self.settings.hmap_size,
            blur_units=self.settings.blur_units,
            resample=self.settings.resample,
            corner_pad=self.settings.corner_pad,
            corner_stride=self.settings.corner_stride,
        )

    def masks(self, i: int, size: tuple[int, int]) -> np.ndarray:
        """The four organ masks (4 x H x W, {0, 1}) at ``size``: resized (nearest) for ``settings.resample``
        ``"area"``; for ``"public_corner"`` read at the corner samples of the full-size mask
        (:func:`~attnlib.data.real.gaze.corner_sample`; ``size`` must be that grid)."""
        dicom_id = self.metadata.at[i, "dicom_id"]
        settings = self.settings
        params: dict[str, object] = {"mask": list(size)}
        if settings.resample == "area":
            load = functools.partial(read_mask, size=size)
        else:
            pad = corner_pad_shape(size, settings.corner_pad, settings.corner_stride)
            params.update(resample=settings.resample, pad=list(pad), stride=settings.corner_stride)
            load = functools.partial(_corner_mask, size=size, pad=pad, stride=settings.corner_stride)
        out = []
        for name in MASK_FILES:
            path = self.paths.mask(dicom_id, name)
            if self.cache is None:
                out.append(load(path))
            else:
                out.append(self.cache.get_or_compute(path, params, lambda p=path: load(p)))
        return np.stack(out)

    def __getitem__(self, i: int) -> dict[str, object]:
        img = self.image(i)
        area = self.settings.resample == "area"
        hmap = self.heatmap(i, self.settings.hmap_size or (img.shape if area else None))
        item: dict[str, object] = {
            "idx": i,
            "id": self.metadata.at[i, "dicom_id"],
            "img": torch.from_numpy(img)[None],
            "lab": int(self.labels[i]),
            "hmap": torch.from_numpy(hmap)[None],
        }
        if self.settings.masks:
            item["masks"] = torch.from_numpy(self.masks(i, img.shape if area else hmap.shape))
        return item

    @cached_property
    def fingerprint(self) -> str:
        """A short hash identifying the data a model sees: the run store's data identity.

        It covers the selected rows, labels and splits, the preprocessing settings, the master
        sheet's bytes, the gaze table's size and, for a synthetic copy, its generator settings
        (two synthetic sets can share ids and labels and differ only in, say, a spurious cue).
        """
        digest = hashlib.sha256()
        digest.update(self.metadata[["dicom_id", "label", "split"]].to_csv(index=False).encode())
        digest.update(json.dumps(asdict(self.settings), sort_keys=True, default=list).encode())
        digest.update(self.paths.master_sheet.read_bytes())
        digest.update(str(self.paths.gaze_table(self.settings.gaze_source).stat().st_size).encode())
        generator = self.paths.egd_root.parent / "synthetic_config.json"
        if generator.is_file():
            digest.update(generator.read_bytes())
        return digest.hexdigest()[:12]

