"""The generator's knobs (:class:`SyntheticCXRConfig`) and its per-image random streams."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from attnlib.data.real.egd_cxr import LABEL_COLUMNS
from attnlib.data.synthetic.generated import GeneratorConfig

GENERATOR_VERSION = "1"
CUES = ("marker_presence", "marker_position")
#: Tag positions of the ``marker_position`` cue, indexed like :data:`attnlib.data.real.egd_cxr.LABEL_COLUMNS`.
MARKER_POSITIONS = ("top_left", "top_right", "bottom_left")
#: The corner of the ``marker_presence`` tag.
PRESENCE_POSITION = "top_right"
MAX_LEVEL = 4095  # 12 bits stored

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


def _rng(seed: int, stream: str, index: int = 0) -> np.random.Generator:
    """The random stream ``stream`` of item ``index`` (independent of every other stream)."""
    return np.random.default_rng([seed, _STREAMS[stream], index])


@dataclass(frozen=True)
class SyntheticCXRConfig(GeneratorConfig):
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
        if self.cue_class not in LABEL_COLUMNS:
            problems.append(f"cue_class must be one of {LABEL_COLUMNS}, got {self.cue_class!r}")
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

