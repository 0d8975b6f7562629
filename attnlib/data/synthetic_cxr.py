"""A deterministic synthetic EGD-CXR: chest radiographs, eye gaze and masks in the real file layout.

``generate_synthetic_egd_cxr(out, config)`` writes, from ``config.seed`` alone, the files the real
loader reads (see ``/work/shared/reference/datasets.md``, EGD-CXR section)::

    out/egd-cxr/master_sheet.csv, fixations.csv, eye_gaze.csv, bounding_boxes.csv
    out/egd-cxr/audio_segmentation_transcripts/<dicom_id>/{left_lung,right_lung,mediastanum,aortic_knob}.png
    out/egd-cxr/audio_segmentation_transcripts/<dicom_id>/transcript.json
    out/egd-cxr/inclusion_exclusion_criteria_outputs/{CHF,normals,pneumonia}.csv
    out/mimic-cxr/files/p1X/p1XXXXXXX/sXXXXXXXX/<dicom_id>.dcm
    out/synthetic_config.json, out/split.csv, out/synthetic_truth.csv

The audio files (``audio.wav``, ``audio.mp3``) are not written. Everything goes to a hidden
temporary sibling folder that is renamed to ``out`` at the end, so ``out`` exists only complete.

Images are frontal radiographs (body, lungs, mediastinum, heart, spine, ribs, noise, per-image
size/position/rotation). Evidence is local: CHF enlarges the heart (cardiothoracic ratio 0.40-0.48
for the others, 0.55-0.62 for CHF at ``evidence_strength`` 1), pneumonia adds 1-3 faint textured
opacities inside a lung. Radiological convention: the patient's left lung is on the image's right.

Gaze: a survey scan over both lungs, then fixations that favour the evidence (heart border and
silhouette for CHF, the opacities for pneumonia, lungs and heart for normals). It does not depend
on ``evidence_strength``: at 0 the gaze still visits where the evidence would be. Screen mapping
(1920x1080 screen, image fitted and centred, ``image_*_pad`` in screen pixels):
``FPOGX = (left_pad + x * (1920 - left_pad - right_pad) / cols) / 1920`` (``y`` alike with the
top/bottom pads and rows), ``X_ORIGINAL = floor(x)``; off-image gaze is stored as -1, except that
some glances left of the image keep their (negative) mapped values. Calibration screens carry a
``DICOM_ID`` that is the first 39 characters of the session's next image id (only exact matching
drops them). Raw samples: ``BPOGX/BPOGY`` is the jittered sample, ``FPOGX/FPOGY`` the running mean
of the current fixation (so a fixation's last sample holds its mean, ``FPOGD`` its duration);
saccade samples have ``FPOGV`` 0, ``FPOGD`` 0 and the coming fixation's ``FPOGID``. Boxes
(``bounding_boxes.csv``, opacity boxes) are pixel ranges ``[x1, x2) x [y1, y2)``.

``synthetic_truth.csv``, one row per image: ``label`` (index into :data:`CLASS_NAMES`, as in
``split.csv``), ``split``, ``photometric``, ``transfer_syntax`` (UID), ``windowed`` (0/1), ``ctr``,
``n_opacities``, ``opacity_boxes`` (JSON list of ``{x1, x2, y1, y2}``), ``cue_present`` (0/1),
``cue_x``/``cue_y`` (tag centre, blank without a tag), ``cue_position`` (index into
:data:`MARKER_POSITIONS` for the position cue, else -1).

Random numbers come from separate per-image streams (anatomy, noise, evidence, gaze, cue, ...),
so e.g. ``evidence_strength`` 0 and 1 with the same seed give the same anatomy, noise and gaze.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid
from scipy import ndimage
from tqdm.auto import tqdm

from attnlib.data.splits import SPLIT_NAMES, balanced_split, save_split

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1"
CLASS_NAMES = ("Normal", "CHF", "pneumonia")
CUES = ("marker_presence", "marker_position")
#: Tag positions of the ``marker_position`` cue, indexed like :data:`CLASS_NAMES`.
MARKER_POSITIONS = ("top_left", "top_right", "bottom_left")
#: The corner of the ``marker_presence`` tag.
PRESENCE_POSITION = "top_right"
MASK_FILES = ("left_lung.png", "right_lung.png", "mediastanum.png", "aortic_knob.png")
INCLUSION_FILES = {"Normal": "normals.csv", "CHF": "CHF.csv", "pneumonia": "pneumonia.csv"}
SCREEN_W, SCREEN_H = 1920, 1080
GAZE_HZ = 60
IMAGES_PER_SESSION = 10
MAX_LEVEL = 4095  # 12 bits stored

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
    *CLASS_NAMES,
    *FINDING_COLUMNS,
    *CHEXPERT_COLUMNS,
    "cxr_exam_indication",
)
assert len(MASTER_SHEET_COLUMNS) == 59
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
assert len(GAZE_COLUMNS) == 37
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

_STREAMS = {
    "labels": 1,
    "meta": 2,
    "format": 3,
    "sessions": 4,
    "anatomy": 10,
    "noise": 11,
    "evidence": 12,
    "gaze": 13,
    "cue": 14,
    "person": 15,
}
_DX = {
    "Normal": [("Chest pain, unspecified", "R079"), ("Syncope and collapse", "R55"), ("Cough", "R05")],
    "CHF": [
        ("Congestive heart failure, unspecified", "4280"),
        ("Heart failure, unspecified", "I509"),
        ("Acute on chronic diastolic heart failure", "I5033"),
    ],
    "pneumonia": [
        ("Pneumonia, unspecified organism", "J189"),
        ("Pneumonia, organism unspecified", "486"),
        ("Lobar pneumonia, unspecified organism", "J181"),
    ],
}
_DX_OTHER = [
    ("Essential (primary) hypertension", "I10"),
    ("Hypertension NOS", "4019"),
    ("Type 2 diabetes mellitus without complications", "E119"),
    ("Atrial fibrillation", "I4891"),
    ("Chronic kidney disease, unspecified", "N189"),
    ("Fever, unspecified", "R509"),
    ("Dyspnea, unspecified", "R0600"),
]
_INDICATIONS = ["shortness of breath", "cough and fever", "chest pain", "hypoxia", "leg swelling, dyspnea"]
_QUESTIONS = ["eval for pneumonia", "r/o acute process", "eval for CHF", "evaluate for infiltrate"]


@dataclass(frozen=True)
class SyntheticCXRConfig:
    """Knobs of the synthetic EGD-CXR (all saved in ``synthetic_config.json``).

    n_images: images, in three classes of equal size (sizes differ by at most one); at least 3.
    rows, cols: full-resolution DICOM size (H x W), at least 64 each.
    evidence_strength: 0 = no evidence in the pixels, 1 = the default faint-but-learnable level;
        scales the heart enlargement of CHF (CTR interpolated, capped at 0.70) and the opacity contrast.
    cue: None, "marker_presence" (a bright tag in the top-right corner) or "marker_position"
        (the tag in one of :data:`MARKER_POSITIONS`).
    cue_correlation_train, cue_correlation_val: probability that the cue agrees with the label in
        that split (presence: tag present iff the class is ``cue_class``; position: position index =
        class index); in the test split the cue is independent of the label (present with p 0.5 /
        uniform position).
    cue_class: the class the presence tag goes with.
    split_seed, split_fractions: the label-balanced split (``attnlib.data.splits.balanced_split``).
    fraction_monochrome1: share of DICOMs stored MONOCHROME1 (inverted pixel values).
    fraction_jpeg2000, fraction_rle: shares stored JPEG 2000 Lossless / RLE Lossless (the rest uncompressed).
    fraction_windowed: share of DICOMs with WindowCenter/WindowWidth.
    view_seconds: range of the simulated reading time per image (s).
    seed: seed of everything except the split.
    """

    n_images: int = 300
    rows: int = 512
    cols: int = 416
    evidence_strength: float = 1.0
    cue: str | None = None
    cue_correlation_train: float = 0.9
    cue_correlation_val: float = 0.9
    cue_class: str = "pneumonia"
    split_seed: int = 0
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    fraction_monochrome1: float = 0.25
    fraction_jpeg2000: float = 0.15
    fraction_rle: float = 0.15
    fraction_windowed: float = 0.3
    view_seconds: tuple[float, float] = (6.0, 12.0)
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in self.split_fractions))
        object.__setattr__(self, "view_seconds", tuple(float(s) for s in self.view_seconds))
        problems = []
        if self.n_images < 3:
            problems.append(f"n_images must be at least 3 (one per class), got {self.n_images}")
        if min(self.rows, self.cols) < 64:
            problems.append(f"rows and cols must be at least 64, got {self.rows}x{self.cols}")
        if self.evidence_strength < 0:
            problems.append(f"evidence_strength must be >= 0, got {self.evidence_strength}")
        if self.cue is not None and self.cue not in CUES:
            problems.append(f"cue must be None or one of {CUES}, got {self.cue!r}")
        if self.cue_class not in CLASS_NAMES:
            problems.append(f"cue_class must be one of {CLASS_NAMES}, got {self.cue_class!r}")
        for name in (
            "cue_correlation_train",
            "cue_correlation_val",
            "fraction_monochrome1",
            "fraction_jpeg2000",
            "fraction_rle",
            "fraction_windowed",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.fraction_jpeg2000 + self.fraction_rle > 1.0:
            problems.append("fraction_jpeg2000 + fraction_rle must not exceed 1")
        fr = self.split_fractions
        if len(fr) != 3 or min(fr) < 0 or not math.isclose(sum(fr), 1.0):
            problems.append(f"split_fractions must be three non-negative numbers summing to 1, got {fr}")
        lo_hi = self.view_seconds
        if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1]:
            problems.append(f"view_seconds must be (low, high) with 0 < low <= high, got {lo_hi}")
        if self.seed < 0 or self.split_seed < 0:
            problems.append(f"seed and split_seed must be >= 0, got {self.seed} and {self.split_seed}")
        if problems:
            raise ValueError("invalid SyntheticCXRConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready knobs (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyntheticCXRConfig:
        """The config of :meth:`to_dict`'s output; unknown keys raise ``ValueError``."""
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown SyntheticCXRConfig keys {unknown}")
        return cls(**data)


# ----------------------------------------------------------------------------------------------- helpers


def _rng(seed: int, stream: str, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[stream], index])


def _count(fraction: float, n: int) -> int:
    """``fraction * n`` rounded half up: the exact number of images given a property."""
    return int(math.floor(fraction * n + 0.5))


def _bbox(mask: np.ndarray) -> dict[str, int]:
    """Bounding box of a mask: first pixel and one past the last (``x2 - x1`` = width)."""
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return {"x1": int(xs[0]), "x2": int(xs[-1]) + 1, "y1": int(ys[0]), "y2": int(ys[-1]) + 1}


@dataclass(frozen=True)
class _Screen:
    """Where the image sits on the 1920x1080 screen (fitted, centred)."""

    rows: int
    cols: int
    left: int
    right: int
    top: int
    bottom: int

    @classmethod
    def fit(cls, rows: int, cols: int) -> _Screen:
        scale = min(SCREEN_H / rows, SCREEN_W / cols)
        w, h = round(cols * scale), round(rows * scale)
        left, top = (SCREEN_W - w) // 2, (SCREEN_H - h) // 2
        return cls(rows, cols, left, SCREEN_W - w - left, top, SCREEN_H - h - top)

    @property
    def px_per_image_px(self) -> float:
        return (SCREEN_W - self.left - self.right) / self.cols

    def to_screen(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image pixel coordinates -> screen fractions (FPOGX, FPOGY)."""
        sx = (self.left + x * (SCREEN_W - self.left - self.right) / self.cols) / SCREEN_W
        sy = (self.top + y * (SCREEN_H - self.top - self.bottom) / self.rows) / SCREEN_H
        return sx, sy

    def to_image(self, sx: np.ndarray, sy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Screen fractions -> image pixel coordinates."""
        x = (sx * SCREEN_W - self.left) * self.cols / (SCREEN_W - self.left - self.right)
        y = (sy * SCREEN_H - self.top) * self.rows / (SCREEN_H - self.top - self.bottom)
        return x, y


# ----------------------------------------------------------------------------------------------- images


@dataclass
class _Drawn:
    pixels: np.ndarray  # uint16 presentation values, bright = dense
    masks: dict[str, np.ndarray]  # MASK_FILES -> bool
    heart: np.ndarray
    ctr: float
    opacities: list[tuple[float, float, float]]  # x, y, radius (pixels)
    opacity_boxes: list[dict[str, int]]
    cue_xy: tuple[int, int] | None


#: Peak brightness an opacity adds at evidence_strength 1 (lung field ~0.24, heart ~0.70).
_OPACITY_CONTRAST = 0.15
#: Lung field: a superellipse (flatter towards the diaphragm) whose half-width tapers to the apex.
_LUNG_POWER, _LUNG_BASE_POWER, _LUNG_TAPER = 2.4, 4.0, (0.85, 0.2)


def _lung_vertical(t: np.ndarray) -> np.ndarray:
    """Vertical term of the lung superellipse at ``t = (v - vc) / bv``."""
    return np.where(t < 0, np.abs(t) ** _LUNG_POWER, np.abs(t) ** _LUNG_BASE_POWER)


def _lung_widest() -> float:
    """The lung's widest half-width in units of its nominal half-width ``au`` (numerically)."""
    t = np.linspace(-1, 1, 4001)
    return float(np.max((_LUNG_TAPER[0] + _LUNG_TAPER[1] * t) * (1 - _lung_vertical(t)) ** (1 / _LUNG_POWER)))


_LUNG_WIDEST = _lung_widest()


def _depth(mask: np.ndarray) -> np.ndarray:
    """Distance (pixels) of every mask pixel to the nearest pixel outside it, computed on its bounding box."""
    box = _bbox(mask)
    crop = np.pad(mask[box["y1"] : box["y2"], box["x1"] : box["x2"]], 1)
    depth = np.zeros(mask.shape, dtype=np.float32)
    depth[box["y1"] : box["y2"], box["x1"] : box["x2"]] = ndimage.distance_transform_edt(crop)[1:-1, 1:-1]
    return depth


def _render(i: int, label: int, cue_position: str | None, config: SyntheticCXRConfig) -> _Drawn:
    """Draw image ``i``: anatomy, evidence for ``label``, noise and the cue tag."""
    rows, cols, seed = config.rows, config.cols, config.seed
    rng = _rng(seed, "anatomy", i)
    cx, cy = cols * (0.5 + rng.uniform(-0.03, 0.03)), rows * (0.5 + rng.uniform(-0.03, 0.03))
    scale, angle = rng.uniform(0.92, 1.04), math.radians(rng.uniform(-3.0, 3.0))
    uc, au, vc, bv = (
        rng.uniform(0.19, 0.21),
        rng.uniform(0.14, 0.16),
        rng.uniform(-0.05, -0.01),
        rng.uniform(0.31, 0.35),
    )
    med_w, heart_u, heart_aspect = rng.uniform(0.045, 0.06), rng.uniform(0.05, 0.08), rng.uniform(0.55, 0.65)
    ctr_normal, ctr_chf = rng.uniform(0.40, 0.48), rng.uniform(0.55, 0.62)
    knob_r, rib_v0, rib_step = rng.uniform(0.022, 0.03), rng.uniform(-0.42, -0.39), rng.uniform(0.062, 0.072)
    gain, offset = rng.uniform(0.92, 1.08), rng.uniform(-0.03, 0.03)

    ctr = ctr_normal
    if CLASS_NAMES[label] == "CHF":
        ctr = min(0.70, ctr_normal + config.evidence_strength * (ctr_chf - ctr_normal))
    ha = ctr * (uc + _LUNG_WIDEST * au)  # heart width / widest lung-to-lung width = ctr
    hb = heart_aspect * ha
    hv = vc + 0.85 * bv - 0.75 * hb

    # anatomical frame: u across (image right +), v down, rotated and scaled per image
    dx = np.arange(cols, dtype=np.float32)[None, :] + 0.5 - cx
    dy = np.arange(rows, dtype=np.float32)[:, None] + 0.5 - cy
    c, s = math.cos(angle), math.sin(angle)
    u = (c * dx + s * dy) / np.float32(cols * scale)
    v = (-s * dx + c * dy) / np.float32(rows * scale)
    au_ = np.abs(u)

    body = np.square(np.square(au_ / 0.47)) + np.square(np.square((v - 0.08) / 0.62)) <= 1
    heart = ((u - heart_u) / ha) ** 2 + ((v - hv) / hb) ** 2 <= 1
    # upper mediastinum: a band widening downwards into the heart; like the trachea, independent of the heart
    band = np.abs(u - 0.005) <= med_w * (0.75 + 0.25 * np.clip((v - vc + bv) / (1.6 * bv), 0, 1))
    mediastinum = (band & (v >= vc - 0.95 * bv) & (v <= vc + 0.6 * bv)) | heart
    trachea = (au_ <= 0.013) & (v >= vc - bv - 0.1) & (v <= vc - 0.3 * bv)
    knob = (u - (med_w + 0.012)) ** 2 + ((v - (vc - 0.12)) * rows / cols) ** 2 <= knob_r**2
    lungs, lung_v = {}, _lung_vertical((v - vc) / bv)
    for side, name in ((-1, "right_lung.png"), (1, "left_lung.png")):
        taper = au * (_LUNG_TAPER[0] + _LUNG_TAPER[1] * (v - vc) / bv)  # narrower apex, wider base
        shape = np.abs((u - side * uc) / taper) ** _LUNG_POWER + lung_v <= 1
        lungs[name] = shape & ~heart & ~band & ~knob & body
    lung = lungs["right_lung.png"] | lungs["left_lung.png"]

    noise = _rng(seed, "noise", i)
    texture = ndimage.gaussian_filter(
        noise.standard_normal((rows, cols), dtype=np.float32), 0.012 * cols, truncate=3
    )
    texture /= max(float(texture.std()), 1e-6)
    density = (
        0.05
        + 0.45 * body
        - 0.26 * lung
        + 0.20 * mediastinum
        - 0.07 * trachea
        + 0.05 * knob
        + 0.03 * texture * lung
    ).astype(np.float32)
    img = ndimage.gaussian_filter(density, max(0.5, 0.004 * cols))
    phase = (v - 0.9 * (au_ - 0.05) ** 2 - rib_v0) / rib_step
    ribs = np.exp(-(((phase - np.round(phase)) * rib_step / 0.012) ** 2))
    ribs *= (phase > -0.5) & (phase < 9.5)
    ribs *= np.clip((uc + au + 0.02 - au_) / 0.03, 0, 1) * np.clip((au_ - 0.5 * med_w) / 0.02, 0, 1)
    spine = (
        0.10
        * np.exp(-np.minimum(np.square(np.square(u / 0.032)), 30))
        * (0.85 + 0.15 * np.cos(2 * np.pi * v / 0.075))
        * body
    )
    img += 0.045 * ribs + spine + 0.004 * noise.standard_normal((rows, cols), dtype=np.float32)

    opacities, boxes = [], []
    if CLASS_NAMES[label] == "pneumonia":
        ev = _rng(seed, "evidence", i)
        depth = {name: _depth(mask) for name, mask in lungs.items()}
        for _ in range(int(ev.integers(1, 4))):
            name = ("right_lung.png", "left_lung.png")[int(ev.integers(2))]
            side, inner = lungs[name], depth[name]
            radius = ev.uniform(0.05, 0.085) * cols
            ys, xs = np.nonzero(inner >= 0.6 * radius)
            if len(ys) == 0:
                ys, xs = np.unravel_index([int(inner.argmax())], inner.shape)
            k = int(ev.integers(len(ys)))
            ox, oy = xs[k] + 0.5, ys[k] + 0.5
            aspect, theta = ev.uniform(0.6, 1.0), ev.uniform(0, np.pi)
            r0, r1 = max(int(oy - 1.5 * radius), 0), min(int(oy + 1.5 * radius) + 1, rows)
            c0, c1 = max(int(ox - 1.5 * radius), 0), min(int(ox + 1.5 * radius) + 1, cols)
            ly = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5 - oy
            lx = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5 - ox
            a = (lx * math.cos(theta) + ly * math.sin(theta)) / radius
            b = (-lx * math.sin(theta) + ly * math.cos(theta)) / (radius * aspect)
            # a Gaussian bump lowered to reach exactly 0 at 1.35 radii: the box holds every changed pixel
            profile = np.clip((np.exp(-0.5 * (a * a + b * b) / 0.55**2) - 0.05) / 0.95, 0, None)
            patch = ndimage.gaussian_filter(ev.standard_normal(profile.shape, dtype=np.float32), radius / 4)
            patch = 0.6 + 0.4 * np.tanh(2.0 * patch / max(float(patch.std()), 1e-6))
            local = np.zeros((rows, cols), dtype=bool)
            local[r0:r1, c0:c1] = profile > 0
            local &= side
            img[r0:r1, c0:c1] += (
                _OPACITY_CONTRAST * config.evidence_strength * profile * patch * side[r0:r1, c0:c1]
            )
            opacities.append((float(ox), float(oy), float(radius)))
            boxes.append(_bbox(local))

    img = np.clip(gain * img + offset, 0.0, 1.0)
    cue_xy = None
    if cue_position is not None:
        size, margin = max(3, round(0.045 * cols)), max(2, round(0.04 * cols))
        x0 = cols - margin - size if cue_position == "top_right" else margin
        y0 = rows - margin - size if cue_position == "bottom_left" else margin
        img[y0 : y0 + size, x0 : x0 + size] = 0.95
        cue_xy = (x0 + size // 2, y0 + size // 2)
    pixels = np.rint(img * MAX_LEVEL).astype(np.uint16)
    masks = {**lungs, "mediastanum.png": mediastinum, "aortic_knob.png": knob}
    return _Drawn(
        pixels, {name: masks[name] for name in MASK_FILES}, heart, float(ctr), opacities, boxes, cue_xy
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
    Image.fromarray(mask.astype(np.uint8) * 255).save(path, format="PNG", compress_level=1)


# ----------------------------------------------------------------------------------------------- gaze


def _duration(rng: np.random.Generator, factor: float = 1.0) -> int:
    """Samples of one fixation: lognormal duration around 0.25 s, clipped to 0.1-0.8 s."""
    seconds = float(np.clip(math.exp(rng.normal(math.log(0.25), 0.45)) * factor, 0.1, 0.8))
    return max(6, round(seconds * GAZE_HZ))


def _pick(mask: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """A uniform random point (x, y) inside ``mask``."""
    flat = np.flatnonzero(mask)
    y, x = divmod(int(flat[rng.integers(len(flat))]), mask.shape[1])
    return x + rng.random(), y + rng.random()


def _plan_gaze(
    label: int, drawn: _Drawn, screen: _Screen, view_s: float, rng: np.random.Generator
) -> list[tuple[float, float, int, bool]]:
    """Fixations (x, y, samples, keep_negative) for one image: survey, then evidence-weighted reading."""
    rows, cols = drawn.pixels.shape
    right, left = drawn.masks["right_lung.png"], drawn.masks["left_lung.png"]
    lung, heart = right | left, drawn.heart
    border = heart & ~ndimage.binary_erosion(heart, iterations=max(1, round(0.03 * cols)))
    fixes: list[tuple[float, float, int, bool]] = []
    for side in (right, left) if rng.random() < 0.5 else (left, right):
        levels = np.flatnonzero(side.any(axis=1))
        for frac in (0.15, 0.5, 0.85):
            r = int(levels[int(frac * (len(levels) - 1))])
            xs = np.flatnonzero(side[r])
            fixes.append((xs[int(len(xs) * rng.uniform(0.3, 0.7))] + 0.5, r + 0.5, _duration(rng), False))
    name = CLASS_NAMES[label]
    kinds, probs = {
        "Normal": (("lung", "heart", "mediastinum", "anywhere"), (0.5, 0.3, 0.1, 0.1)),
        "CHF": (("border", "heart", "lung", "anywhere"), (0.35, 0.25, 0.25, 0.15)),
        "pneumonia": (("opacity", "lung", "heart", "anywhere"), (0.55, 0.25, 0.1, 0.1)),
    }[name]
    total = sum(f[2] for f in fixes)
    while total < view_s * GAZE_HZ:
        kind = kinds[int(rng.choice(len(kinds), p=probs))]
        factor = 1.4 if kind in ("border", "opacity") else 1.0
        if kind == "opacity":
            ox, oy, radius = drawn.opacities[int(rng.integers(len(drawn.opacities)))]
            x, y = ox + rng.normal(0, radius / 3), oy + rng.normal(0, radius / 3)
        elif kind == "anywhere":
            x, y = rng.uniform(0.1, 0.9) * cols, rng.uniform(0.1, 0.9) * rows
        else:
            x, y = _pick(
                {
                    "lung": lung,
                    "heart": heart,
                    "border": border,
                    "mediastinum": drawn.masks["mediastanum.png"],
                }[kind],
                rng,
            )
        n = _duration(rng, factor)
        fixes.append((float(np.clip(x, 0, cols - 1e-3)), float(np.clip(y, 0, rows - 1e-3)), n, False))
        total += n
    if rng.random() < 0.35:  # a glance off the image, onto the screen beside it
        pad = max(screen.left / screen.px_per_image_px, 0.05 * cols)
        on_left = rng.random() < 0.5
        x = -rng.uniform(0.1, 0.9) * pad if on_left else cols + rng.uniform(0.1, 0.9) * pad
        at = int(rng.integers(6, len(fixes) + 1))
        fixes.insert(at, (x, rng.uniform(0.2, 0.8) * rows, _duration(rng), on_left and rng.random() < 0.5))
    return fixes


def _expand(
    fixes: list[tuple[float, float, int, bool]], screen: _Screen, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """60 Hz samples of a fixation sequence: jittered fixations joined by saccade samples."""
    jitter = 8.0 / screen.px_per_image_px  # ~8 screen pixels
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("bx", "by", "fx", "fy", "fix", "valid", "k", "mag", "dir", "keepneg", "last")
    }

    def add(n: int, **cols: Any) -> None:
        for key, value in cols.items():
            parts[key].append(value if isinstance(value, np.ndarray) else np.full(n, value))

    prev = None
    for j, (x, y, n, keepneg) in enumerate(fixes):
        mag = direction = 0.0
        if prev is not None:
            step_x, step_y = (x - prev[0]) * screen.px_per_image_px, (y - prev[1]) * screen.px_per_image_px
            mag, direction = math.hypot(step_x, step_y), math.degrees(math.atan2(step_y, step_x))
            m = int(np.clip(math.ceil(mag / 300), 1, 4))
            t = np.arange(1, m + 1) / (m + 1)
            sx = prev[0] + t * (x - prev[0]) + rng.normal(0, jitter, m)
            sy = prev[1] + t * (y - prev[1]) + rng.normal(0, jitter, m)
            add(
                m,
                bx=sx,
                by=sy,
                fx=sx,
                fy=sy,
                fix=j,
                valid=False,
                k=-1,
                mag=0.0,
                dir=0.0,
                keepneg=False,
                last=False,
            )
        bx, by = x + rng.normal(0, jitter, n), y + rng.normal(0, jitter, n)
        count = np.arange(1, n + 1)
        last = np.zeros(n, dtype=bool)
        last[-1] = True
        add(
            n,
            bx=bx,
            by=by,
            fx=np.cumsum(bx) / count,
            fy=np.cumsum(by) / count,
            fix=j,
            valid=True,
            k=count - 1,
            mag=np.where(count == 1, mag, 0.0),
            dir=np.where(count == 1, direction, 0.0),
            keepneg=keepneg,
            last=last,
        )
        prev = (x, y)
    return {key: np.concatenate(vals) for key, vals in parts.items()}


def _session_rows(
    session: int, media: list[tuple[str, dict[str, np.ndarray]]], screen: _Screen, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """All columns of one session's samples (calibration and images in reading order)."""
    n_per = [len(s["bx"]) for _, s in media]
    n = sum(n_per)
    cat = {key: np.concatenate([s[key] for _, s in media]) for key in media[0][1]}
    cnt = np.arange(n)
    t = rng.uniform(2.0, 5.0) + cnt / GAZE_HZ
    # fixation ids count on across the session; saccade samples carry the coming fixation's id
    offsets = np.cumsum([0] + [int(s["fix"].max()) + 1 for _, s in media[:-1]])
    fid = cat["fix"] + np.repeat(offsets, n_per) + 1
    start = np.flatnonzero(cat["valid"] & (cat["k"] == 0))
    first_of = np.full(int(fid.max()) + 1, -1)
    first_of[fid[start]] = start
    fstart = np.where(cat["valid"], t[first_of[fid]], t)
    fdur = np.where(cat["valid"], (cat["k"] + 1) / GAZE_HZ, 0.0)
    sx, sy = screen.to_screen(cat["fx"], cat["fy"])
    bsx, bsy = screen.to_screen(cat["bx"], cat["by"])
    on = (cat["fx"] >= 0) & (cat["fx"] < screen.cols) & (cat["fy"] >= 0) & (cat["fy"] < screen.rows)
    keep = on | (cat["keepneg"] & ((cat["fx"] < 0) | (cat["fy"] < 0)))
    pupil = 3.6 + 0.3 * np.sin(2 * np.pi * t / 40 + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 0.04, n)
    ones = np.ones(n, dtype=np.int64)
    return {
        "SESSION_ID": np.full(n, session),
        "MEDIA_ID": np.repeat(np.arange(1, len(media) + 1), n_per),
        "DICOM_ID": np.repeat(np.array([d for d, _ in media], dtype=object), n_per),
        "CNT": cnt,
        "Time (in secs)": t.round(5),
        "TIMETICK(f=10000000)": int(rng.integers(10**11, 10**12)) + np.rint(t * 1e7).astype(np.int64),
        "FPOGX": sx.round(5),
        "FPOGY": sy.round(5),
        "FPOGS": fstart.round(5),
        "FPOGD": fdur.round(5),
        "FPOGID": fid,
        "FPOGV": cat["valid"].astype(np.int64),
        "BPOGX": bsx.round(5),
        "BPOGY": bsy.round(5),
        "BPOGV": ones,
        "LPCX": (0.42 + rng.normal(0, 0.004, n)).round(5),
        "LPCY": (0.55 + rng.normal(0, 0.004, n)).round(5),
        "LPD": (7.0 * pupil + rng.normal(0, 0.2, n)).round(3),
        "LPS": (1.0 + rng.normal(0, 0.01, n)).round(5),
        "LPV": ones,
        "RPCX": (0.58 + rng.normal(0, 0.004, n)).round(5),
        "RPCY": (0.55 + rng.normal(0, 0.004, n)).round(5),
        "RPD": (7.0 * pupil + rng.normal(0, 0.2, n)).round(3),
        "RPS": (1.0 + rng.normal(0, 0.01, n)).round(5),
        "RPV": ones,
        "BKID": np.zeros(n, dtype=np.int64),
        "BKDUR": np.zeros(n),
        "BKPMIN": np.full(n, int(rng.integers(8, 20))),
        "LPMM": (pupil + rng.normal(0, 0.02, n)).round(4),
        "LPMMV": ones,
        "RPMM": (pupil + rng.normal(0, 0.02, n)).round(4),
        "RPMMV": ones,
        "SACCADE_MAG": cat["mag"].round(3),
        "SACCADE_DIR": cat["dir"].round(3),
        "VID_FRAME": cnt,
        "X_ORIGINAL": np.where(keep, np.floor(cat["fx"]), -1).astype(np.int64),
        "Y_ORIGINAL": np.where(keep, np.floor(cat["fy"]), -1).astype(np.int64),
        "_last": cat["last"],
    }


def _calibration(screen: _Screen, rng: np.random.Generator) -> list[tuple[float, float, int, bool]]:
    """Fixations on five calibration targets, in image coordinates of the screen layout."""
    targets = np.array([(0.1, 0.1), (0.9, 0.1), (0.5, 0.5), (0.1, 0.9), (0.9, 0.9)])
    xs, ys = screen.to_image(targets[:, 0], targets[:, 1])
    return [(float(x), float(y), int(rng.integers(18, 30)), False) for x, y in zip(xs, ys, strict=True)]


# ----------------------------------------------------------------------------------------------- tables


def _transcript(label: int, drawn: _Drawn, seconds: float) -> dict[str, Any]:
    """Report phrases spread over the second half of the reading."""
    name = CLASS_NAMES[label]
    if name == "Normal":
        phrases = [
            "Heart size is normal.",
            "The lungs are clear.",
            "No pleural effusion or pneumothorax.",
            "No acute cardiopulmonary process.",
        ]
    elif name == "CHF":
        phrases = [
            "The heart is enlarged.",
            "There is mild pulmonary vascular congestion.",
            "No focal consolidation.",
            "Findings are consistent with congestive heart failure.",
        ]
    else:
        x, y, _ = drawn.opacities[0]
        side = "right" if x < drawn.pixels.shape[1] / 2 else "left"
        level = ("upper", "mid", "lower")[int(np.digitize(y / drawn.pixels.shape[0], [0.4, 0.6]))]
        phrases = [
            "Heart size is normal.",
            f"There is a patchy opacity in the {side} {level} lung.",
            "Findings are concerning for pneumonia.",
        ]
    edges = np.linspace(0.4 * seconds, 0.95 * seconds, len(phrases) + 1)
    stamped = [
        {"phrase": p, "begin_time": round(float(a), 3), "end_time": round(float(b) - 0.1, 3)}
        for p, a, b in zip(phrases, edges[:-1], edges[1:], strict=True)
    ]
    return {"full_text": " ".join(phrases), "time_stamped_text": stamped}


def _master_rows(labels: np.ndarray, config: SyntheticCXRConfig, screen: _Screen) -> list[dict[str, Any]]:
    """The master-sheet rows (ids, demographics, diagnoses, findings) of every image."""
    n = len(labels)
    meta = _rng(config.seed, "meta")
    step = 9_999_999 // n
    patients = 10_000_000 + np.arange(n) * step + meta.integers(0, step, n)
    studies = 50_000_000 + np.arange(n) * step + meta.integers(0, step, n)
    stays = 30_000_000 + np.arange(n) * step + meta.integers(0, step, n)
    ids = ["-".join(meta.bytes(20).hex()[k : k + 8] for k in range(0, 40, 8)) for _ in range(n)]
    if len(set(ids)) != n:
        raise RuntimeError("dicom_id collision; choose another seed")
    rows = []
    for i, label in enumerate(labels):
        rng = _rng(config.seed, "person", i)
        name = CLASS_NAMES[int(label)]
        gender = "F" if rng.random() < 0.5 else "M"
        decade = int(rng.integers(2, 9)) * 10
        dx = [_DX[name][int(rng.integers(len(_DX[name])))]]
        dx += [_DX_OTHER[int(k)] for k in rng.choice(len(_DX_OTHER), int(rng.integers(0, 4)), replace=False)]
        row: dict[str, Any] = {
            "dicom_id": ids[i],
            "path": f"files/p{str(patients[i])[:2]}/p{patients[i]}/s{studies[i]}/{ids[i]}.dcm",
            "study_id": int(studies[i]),
            "patient_id": int(patients[i]),
            "stay_id": int(stays[i]),
            "gender": gender,
            "anchor_age": f"{decade} - {decade + 10}",
            "image_top_pad": screen.top,
            "image_bottom_pad": screen.bottom,
            "image_left_pad": screen.left,
            "image_right_pad": screen.right,
            "normal_reports": int(name == "Normal"),
            "cxr_exam_indication": f"___-year-old {'woman' if gender == 'F' else 'man'} with "
            f"{_INDICATIONS[int(rng.integers(len(_INDICATIONS)))]}, "
            f"{_QUESTIONS[int(rng.integers(len(_QUESTIONS)))]}",
        }
        for k in range(1, 10):
            text, icd = dx[k - 1] if k <= len(dx) else (None, None)
            row[f"dx{k}"], row[f"dx{k}_icd"] = text, icd
        for k, cls in enumerate(CLASS_NAMES):
            row[cls] = int(label == k)
        findings = dict.fromkeys(FINDING_COLUMNS, 0)
        chx: dict[str, int | None] = dict.fromkeys(CHEXPERT_COLUMNS)
        if name == "Normal":
            findings["normal_anatomically"], chx["no_finding__chx"] = 1, 1
        elif name == "CHF":
            findings["enlarged_cardiac_silhouette"] = 1
            findings["pulmonary_edema__hazy_opacity"] = int(rng.random() < 0.5)
            findings["vascular_redistribution"] = int(rng.random() < 0.5)
            chx["cardiomegaly__chx"] = 1
            chx["edema__chx"] = [1, -1, None][int(rng.integers(3))]
        else:
            findings["consolidation"] = int(rng.random() < 0.6)
            findings["not_otherwise_specified_opacity___pleural__parenchymal_opacity__"] = 1
            chx["pneumonia__chx"] = [1, -1][int(rng.integers(2))]
            chx["lung_opacity__chx"] = 1
            chx["consolidation__chx"] = [1, 0, None][int(rng.integers(3))]
        chx["pleural_effusion__chx"] = [0, None, None][int(rng.integers(3))]
        chx["support_devices__chx"] = 1 if rng.random() < 0.2 else None
        rows.append({**row, **findings, **chx})
    return rows


def _formats(n: int, config: SyntheticCXRConfig) -> list[dict[str, Any]]:
    """Per image: photometric interpretation, transfer syntax, window, modality, view, date (exact counts)."""
    rng = _rng(config.seed, "format")
    mono1 = np.zeros(n, dtype=bool)
    mono1[rng.permutation(n)[: _count(config.fraction_monochrome1, n)]] = True
    n_j2k, n_rle = _count(config.fraction_jpeg2000, n), _count(config.fraction_rle, n)
    syntax = np.full(n, ExplicitVRLittleEndian, dtype=object)
    order = rng.permutation(n)
    syntax[order[:n_j2k]] = JPEG2000Lossless
    syntax[order[n_j2k : n_j2k + n_rle]] = RLELossless
    windowed = np.zeros(n, dtype=bool)
    windowed[rng.permutation(n)[: _count(config.fraction_windowed, n)]] = True
    return [
        {
            "photometric": "MONOCHROME1" if mono1[i] else "MONOCHROME2",
            "transfer_syntax": syntax[i],
            "windowed": bool(windowed[i]),
            "modality": "CR" if rng.random() < 0.5 else "DX",
            "view": "PA" if rng.random() < 0.6 else "AP",
            "date": "21%02d%02d%02d" % (rng.integers(10, 90), rng.integers(1, 13), rng.integers(1, 29)),
        }
        for i in range(n)
    ]


def _cue(label: int, split: str, config: SyntheticCXRConfig, i: int) -> str | None:
    """Where the cue tag goes for this image (None: no tag)."""
    if config.cue is None:
        return None
    rng = _rng(config.seed, "cue", i)
    p = {"train": config.cue_correlation_train, "val": config.cue_correlation_val}.get(split)
    if config.cue == "marker_presence":
        target = CLASS_NAMES[label] == config.cue_class
        present = rng.random() < 0.5 if p is None else (target if rng.random() < p else not target)
        return PRESENCE_POSITION if present else None
    if p is None:
        return MARKER_POSITIONS[int(rng.integers(3))]
    agree = rng.random() < p
    return MARKER_POSITIONS[label if agree else (label + 1 + int(rng.integers(2))) % 3]


# ----------------------------------------------------------------------------------------------- writer


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
            _write_png(folder / name, mask)
        gaze_rng = _rng(config.seed, "gaze", i)
        view_s = gaze_rng.uniform(*config.view_seconds)
        gaze[row["dicom_id"]] = _expand(_plan_gaze(label, drawn, screen, view_s, gaze_rng), screen, gaze_rng)
        seconds = len(gaze[row["dicom_id"]]["bx"]) / GAZE_HZ
        (folder / "transcript.json").write_text(json.dumps(_transcript(label, drawn, seconds), indent=1))
        for bbox_name, mask in (
            ("right lung", drawn.masks["right_lung.png"]),
            ("left lung", drawn.masks["left_lung.png"]),
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

    sessions = []
    order = _rng(config.seed, "sessions").permutation(n)
    for s, start in enumerate(range(0, n, IMAGES_PER_SESSION)):
        rng = _rng(config.seed, "sessions", s + 1)
        chunk = [ids[k] for k in order[start : start + IMAGES_PER_SESSION]]
        calib = (chunk[0][:39], _expand(_calibration(screen, rng), screen, rng))
        sessions.append(_session_rows(s + 1, [calib, *((d, gaze[d]) for d in chunk)], screen, rng))
    samples = pd.DataFrame({k: np.concatenate([s[k] for s in sessions]) for k in (*GAZE_COLUMNS, "_last")})
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
    for k, cls in enumerate(CLASS_NAMES):
        pd.DataFrame({"dicom_id": [d for d, lab in zip(ids, labels, strict=True) if lab == k]}).to_csv(
            inclusion / INCLUSION_FILES[cls], index=False
        )
    truth_frame = pd.DataFrame(truth, columns=list(TRUTH_COLUMNS))
    for col in ("cue_x", "cue_y"):
        truth_frame[col] = pd.array(truth_frame[col].tolist(), dtype="Int64")
    truth_frame.to_csv(root / "synthetic_truth.csv", index=False)
    save_split(split, root / "split.csv")
    return {
        "images": n,
        "per_class": {cls: int((labels == k).sum()) for k, cls in enumerate(CLASS_NAMES)},
        "per_split": {name: int((split["split"] == name).sum()) for name in SPLIT_NAMES},
        "sessions": len(sessions),
        "eye_gaze_rows": len(samples),
        "fixation_rows": len(fixations),
        "monochrome1": sum(f["photometric"] == "MONOCHROME1" for f in formats),
        "jpeg2000": sum(f["transfer_syntax"] == JPEG2000Lossless for f in formats),
        "rle": sum(f["transfer_syntax"] == RLELossless for f in formats),
        "windowed": sum(f["windowed"] for f in formats),
    }


def _check_existing(out: Path, config: SyntheticCXRConfig) -> None:
    """Raise ``FileExistsError`` unless ``out`` holds this generator's output for ``config``."""
    path = out / "synthetic_config.json"
    if not path.is_file():
        raise FileExistsError(
            f"{out}: exists but is not a synthetic EGD-CXR folder (no synthetic_config.json); "
            "delete it or choose another folder"
        )
    saved = json.loads(path.read_text(encoding="utf-8"))
    stored, wanted = saved.get("config", {}), config.to_dict()
    differ = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    if saved.get("generator_version") != GENERATOR_VERSION:
        differ.append(f"generator_version {saved.get('generator_version')!r} != {GENERATOR_VERSION!r}")
    if differ:
        raise FileExistsError(
            f"{out}: holds a synthetic EGD-CXR generated with another configuration "
            f"(differs in {differ}); delete it or choose another folder"
        )


def generate_synthetic_egd_cxr(
    out: Path, config: SyntheticCXRConfig = SyntheticCXRConfig(), *, progress: bool = True
) -> Path:
    """Write the synthetic EGD-CXR for ``config`` to ``out`` (layout: module docstring); returns ``out``.

    Deterministic: the same config gives byte-identical tables and identical pixels. If ``out``
    already holds the same config's output it is returned untouched; a folder with anything
    else raises ``FileExistsError`` naming it. The data are written to a temporary sibling folder,
    renamed to ``out`` when complete (removed on error). ``progress`` shows a tqdm bar.
    """
    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        _check_existing(out, config)
        log.info("%s: synthetic EGD-CXR already generated with this config", out)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        staging.chmod(0o755)
        counts = _write_dataset(staging, config, progress)
        (staging / "synthetic_config.json").write_text(
            json.dumps(
                {"config": config.to_dict(), "generator_version": GENERATOR_VERSION, "counts": counts},
                indent=2,
                sort_keys=True,
            )
            + "\n"
        )
        try:
            os.rename(staging, out)
        except OSError:
            if not out.exists():
                raise
            _check_existing(out, config)  # another process finished the same dataset first
            shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info(
        "%s: wrote %d synthetic EGD-CXR images in %.1f s", out, config.n_images, time.perf_counter() - start
    )
    return out
