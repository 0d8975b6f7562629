"""A deterministic synthetic "structured" image set: the synthetic default of global spatial attention.

Paper 2 (global spatial attention, methods.md section 2) targets structured medical images: every
image shows the same object in the same pose (a fundus, a face), so one weight map M shared by all
images can select where the class evidence is. ``generate_structured(out, config)`` writes::

    out/images/<id>.png        8-bit grayscale (channels 1) or RGB (channels 3), size x size
    out/labels.csv             id, label, split (train/test), cue (mark level; 0 = no mark)
    out/region_mask.png        the true relevant region (255 inside, 0 outside)
    out/synthetic_config.json  the knobs, the generator version and counts

Layout (fixed in every image): a dark background, a bright fundus-like disc centred in the image
(radius 0.42 * size), a brighter optic-disc spot left of the centre, and the square relevant region
(side ``region_size``) right of the centre, where the macula sits in a fundus.

Evidence: inside the region only, a faint zero-mean grating whose orientation encodes the class (class k at k * 180 / n_classes degrees; wavelength region_size / 2), with
per-image amplitude (0.6-1.4 x) and phase (uniform in +-``phase_jitter`` rad; the default, pi, makes
the phase random, so no fixed pixel template separates the classes: a model has to detect the
orientation, as a CNN's filters can, which pixel-wise linear models cannot); its amplitude (0.02 at strength 1,
about 5 grey levels) is well below the per-pixel variation, and the region's mean does not depend on
the class, so it has to be learned, not thresholded. Irrelevant variation everywhere: brightness,
a linear illumination gradient of random direction, smooth texture, optic-disc brightness and noise.
All random draws are independent of ``evidence_strength`` and ``cue``, so two configs that differ
only in the evidence strength give images that differ only inside the region.

Optional spurious cue: a small bright square in the top-left corner, outside the disc and the region,
whose level (0 = absent, 1..n_classes-1 = brighter and brighter) equals the label with probability
``cue_correlation_train`` in the training split (otherwise one of the other levels), and is
uniform, independent of the label, in the test split.

Everything is written to a hidden temporary sibling folder renamed to ``out`` at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

from attnlib.core.progress import tqdm
from attnlib.data.contract import LabelledDataset
from attnlib.data.splits import balanced_split
from attnlib.data.synthetic.generated import CONFIG_FILE, GeneratorConfig, generate_folder

log = logging.getLogger(__name__)

GENERATOR_VERSION = "2"
SPLITS = ("train", "test")
LABEL_COLUMNS = ("id", "label", "split", "cue")
#: Grating amplitude at ``evidence_strength`` 1 (image values in [0, 1]).
EVIDENCE_AMPLITUDE = 0.02
#: Colour of the disc per channel when ``channels`` is 3 (fundus-like, red-dominant).
TINT = (1.0, 0.72, 0.45)

_STREAMS = {"labels": 1, "background": 2, "evidence": 3, "cue": 4}


def _rng(seed: int, stream: str, index: int = 0) -> np.random.Generator:
    """The random stream ``stream`` of image ``index`` (independent of every other stream)."""
    return np.random.default_rng([seed, _STREAMS[stream], index])


class StructuredFormatError(ValueError):
    """A file of a synthetic structured dataset is missing or does not have the expected content."""


@dataclass(frozen=True)
class StructuredConfig(GeneratorConfig):
    """Knobs of the synthetic structured set (all saved in ``synthetic_config.json``).

    n_images: images, classes of equal size (sizes differ by at most one); at least 2 per class.
    size: side of the square images (px), at least 32.
    channels: 1 (grayscale) or 3 (RGB, the disc tinted by :data:`TINT`).
    n_classes: number of classes (grating orientations), 2 to 8.
    evidence_strength: scales the grating amplitude; 0 = no evidence in the pixels, 1 = faint but learnable.
    region_size: side of the square relevant region (px), 2 to size // 4.
    phase_jitter: half-range (rad) of the grating's random phase; pi = any phase, 0 = a fixed template.
    cue: add the spurious corner mark (see the module docstring).
    cue_correlation_train: probability that the mark's level equals the label in the training split.
    split_fractions: (train, test) fractions of the label-balanced split, summing to 1.
    split_seed: seed of the split (``attnlib.data.splits.balanced_split``).
    seed: seed of everything except the split.
    """

    n_images: int = 300
    size: int = 64
    channels: int = 1
    n_classes: int = 3
    evidence_strength: float = 1.0
    region_size: int = 12
    phase_jitter: float = math.pi
    cue: bool = False
    cue_correlation_train: float = 0.9
    split_fractions: tuple[float, float] = (0.8, 0.2)
    split_seed: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in self.split_fractions))
        problems = []
        if not 2 <= self.n_classes <= 8:
            problems.append(f"n_classes must lie in [2, 8], got {self.n_classes}")
        if self.n_images < 2 * self.n_classes:
            problems.append(f"n_images must be at least 2 per class, got {self.n_images}")
        if self.size < 32:
            problems.append(f"size must be at least 32, got {self.size}")
        if self.channels not in (1, 3):
            problems.append(f"channels must be 1 or 3, got {self.channels}")
        if not 2 <= self.region_size <= self.size // 4:
            problems.append(f"region_size must lie in [2, size // 4], got {self.region_size}")
        if not 0.0 <= self.phase_jitter <= math.pi:
            problems.append(f"phase_jitter must lie in [0, pi], got {self.phase_jitter}")
        if self.evidence_strength < 0:
            problems.append(f"evidence_strength must be >= 0, got {self.evidence_strength}")
        if not isinstance(self.cue, bool):
            problems.append(f"cue must be True or False, got {self.cue!r}")
        if not 0.0 <= self.cue_correlation_train <= 1.0:
            problems.append(f"cue_correlation_train must lie in [0, 1], got {self.cue_correlation_train}")
        fr = self.split_fractions
        if len(fr) != 2 or min(fr) < 0 or not math.isclose(sum(fr), 1.0):
            problems.append(f"split_fractions must be (train, test), non-negative, summing to 1, got {fr}")
        if self.seed < 0 or self.split_seed < 0:
            problems.append(f"seed and split_seed must be >= 0, got {self.seed} and {self.split_seed}")
        if problems:
            raise ValueError("invalid StructuredConfig: " + "; ".join(problems))


def region_box(config: StructuredConfig) -> tuple[int, int, int, int]:
    """The relevant region as (row0, row1, col0, col1), end-exclusive: right of the image centre."""
    s, r = config.size, config.region_size
    row0 = s // 2 - r // 2
    col0 = s // 2 + round(0.2 * s) - r // 2
    return row0, row0 + r, col0, col0 + r


def region_mask(config: StructuredConfig) -> np.ndarray:
    """The true relevant-region mask (size x size, bool)."""
    mask = np.zeros((config.size, config.size), dtype=bool)
    r0, r1, c0, c1 = region_box(config)
    mask[r0:r1, c0:c1] = True
    return mask


def cue_box(config: StructuredConfig) -> tuple[int, int, int, int]:
    """The spurious mark's square (row0, row1, col0, col1) in the top-left corner, outside the disc."""
    side = max(3, config.size // 16)
    return 2, 2 + side, 2, 2 + side


def _cue_levels(labels: np.ndarray, split: np.ndarray, config: StructuredConfig) -> np.ndarray:
    """Mark level per image (0 = none): the label with p ``cue_correlation_train`` in train, else random."""
    levels = np.zeros(len(labels), dtype=np.int64)
    if not config.cue:
        return levels
    k = config.n_classes
    for i, (label, part) in enumerate(zip(labels, split, strict=True)):
        rng = _rng(config.seed, "cue", i)
        agree, other, uniform = rng.random(), int(rng.integers(k - 1)), int(rng.integers(k))
        if part == "train":
            levels[i] = label if agree < config.cue_correlation_train else (label + 1 + other) % k
        else:
            levels[i] = uniform
    return levels


def _render(index: int, label: int, cue_level: int, config: StructuredConfig) -> np.ndarray:
    """Image ``index`` as uint8, H x W (channels 1) or H x W x 3."""
    s = config.size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    centre = (s - 1) / 2
    disc = np.hypot(yy - centre, xx - centre) <= 0.42 * s
    rng = _rng(config.seed, "background", index)
    base = rng.uniform(0.35, 0.55)
    phi = rng.uniform(0, 2 * np.pi)
    tilt = rng.uniform(0.0, 0.25) * ((xx - centre) * np.cos(phi) + (yy - centre) * np.sin(phi)) / s
    texture = gaussian_filter(rng.standard_normal((s, s)), sigma=s / 16, mode="wrap")
    texture *= 0.04 / max(float(texture.std()), 1e-12)
    optic = rng.uniform(0.15, 0.35) * np.exp(
        -(np.hypot(yy - centre, xx - (centre - 0.22 * s)) ** 2) / (2 * (s / 20) ** 2)
    )
    noise = rng.standard_normal((s, s)) * 0.025
    img = np.where(disc, base + tilt + texture + optic, 0.05) + noise

    ev_rng = _rng(config.seed, "evidence", index)
    amplitude = EVIDENCE_AMPLITUDE * config.evidence_strength * ev_rng.uniform(0.6, 1.4)
    phase = ev_rng.uniform(-config.phase_jitter, config.phase_jitter)
    if amplitude > 0:
        r0, r1, c0, c1 = region_box(config)
        theta = np.pi * label / config.n_classes
        v, u = yy[r0:r1, c0:c1] - (r0 + r1 - 1) / 2, xx[r0:r1, c0:c1] - (c0 + c1 - 1) / 2
        wave = np.cos(2 * np.pi * (u * np.cos(theta) + v * np.sin(theta)) / (config.region_size / 2) + phase)
        img[r0:r1, c0:c1] += amplitude * (wave - wave.mean())
    if cue_level > 0:
        r0, r1, c0, c1 = cue_box(config)
        img[r0:r1, c0:c1] = 0.5 + 0.5 * cue_level / (config.n_classes - 1)
    if config.channels == 3:
        img = img[..., None] * np.asarray(TINT)
    return np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """Write uint8 pixels (H x W or H x W x 3) as a PNG without metadata (byte-identical reruns)."""
    Image.fromarray(pixels).save(path, format="PNG", compress_level=6)


def _write_dataset(root: Path, config: StructuredConfig, progress: bool) -> dict[str, Any]:
    """Write every file under ``root``; returns the counts for the config file."""
    n, k = config.n_images, config.n_classes
    labels = _rng(config.seed, "labels").permutation(np.arange(n) % k)
    width = max(4, len(str(n - 1)))
    ids = [f"s{i:0{width}d}" for i in range(n)]
    train, test = config.split_fractions
    split = balanced_split(ids, labels.tolist(), config.split_seed, (train, 0.0, test))["split"].to_numpy()
    cue = _cue_levels(labels, split, config)
    (root / "images").mkdir()
    for i in tqdm(range(n), desc="synthetic structured", disable=not progress, leave=False):
        _write_png(root / "images" / f"{ids[i]}.png", _render(i, int(labels[i]), int(cue[i]), config))
    _write_png(root / "region_mask.png", region_mask(config).astype(np.uint8) * 255)
    table = pd.DataFrame({"id": ids, "label": labels, "split": split, "cue": cue})
    table[list(LABEL_COLUMNS)].to_csv(root / "labels.csv", index=False)
    return {
        "images": n,
        "per_class": [int((labels == c).sum()) for c in range(k)],
        "per_split": {name: int((split == name).sum()) for name in SPLITS},
    }


def generate_structured(
    out: Path, config: StructuredConfig = StructuredConfig(), progress: bool = True
) -> Path:
    """Write the synthetic structured set for ``config`` to ``out`` (layout: module docstring).

    Returns ``out``.

    Deterministic: the same config gives byte-identical files. If ``out`` already holds the same
    config's output it is returned untouched; a folder with anything else raises ``FileExistsError``
    naming it. The files are written to a temporary sibling folder renamed to ``out`` when complete
    (removed on error). ``progress`` shows a tqdm bar.
    """
    return generate_folder(
        out, kind="synthetic structured", config=config.to_dict(), version=GENERATOR_VERSION,
        write=lambda staging: _write_dataset(staging, config, progress),
    )


@dataclass(eq=False)
class StructuredDataset(LabelledDataset):
    """A synthetic structured set in attnlib's dataset contract.

    ``split`` selects ``train`` or ``test`` (None: all images). Items: ``idx, id, img``
    (float32 C x H x W in [0, 1]), ``lab``. Attributes: ``config``, ``label_names``, ``labels``,
    ``metadata`` (the rows of ``labels.csv``), ``region_mask`` (H x W bool) and ``fingerprint``.
    """

    root: Path
    split: str | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {self.split!r}")
        config_path = self.root / CONFIG_FILE
        if not config_path.is_file():
            raise StructuredFormatError(f"{config_path}: not found (not a synthetic structured folder)")
        try:
            saved = json.loads(config_path.read_text(encoding="utf-8"))
            self.config = StructuredConfig.from_dict(saved["config"])
        except (ValueError, KeyError, TypeError) as err:
            raise StructuredFormatError(f"{config_path}: unreadable configuration ({err})") from err
        self.label_names = [f"class_{k}" for k in range(self.config.n_classes)]
        table = self._read_labels(self.root / "labels.csv")
        if self.split is not None:
            table = table[table["split"] == self.split]
        self.metadata = table.reset_index(drop=True)
        self.labels = self.metadata["label"].to_numpy(dtype=np.int64)
        self.region_mask = self._read_png(self.root / "region_mask.png", expect_channels=1)[0] > 0.5

    def _read_labels(self, path: Path) -> pd.DataFrame:
        if not path.is_file():
            raise StructuredFormatError(f"{path}: label table not found")
        table = pd.read_csv(path, dtype={"id": str, "split": str})
        missing = [c for c in LABEL_COLUMNS if c not in table.columns]
        if missing:
            raise StructuredFormatError(f"{path}: missing columns {missing}")
        bad = ~table["label"].isin(range(self.config.n_classes)) | ~table["split"].isin(SPLITS)
        if bad.any():
            raise StructuredFormatError(f"{path}: {int(bad.sum())} rows with an unknown label or split")
        return table

    def _read_png(self, path: Path, expect_channels: int) -> np.ndarray:
        """A PNG as float32 C x H x W in [0, 1]; missing, unreadable or mis-shaped files raise naming it."""
        if not path.is_file():
            raise StructuredFormatError(f"{path}: image not found")
        try:
            with Image.open(path) as im:
                im.load()
                pixels = np.asarray(im)
        except (OSError, SyntaxError, ValueError) as err:
            raise StructuredFormatError(f"{path}: unreadable PNG ({err})") from err
        shape = (self.config.size, self.config.size) + ((3,) if expect_channels == 3 else ())
        if pixels.dtype != np.uint8 or pixels.shape != shape:
            raise StructuredFormatError(f"{path}: expected uint8 pixels of shape {shape}, got {pixels.shape}")
        pixels = pixels[None] if expect_channels == 1 else pixels.transpose(2, 0, 1)
        return (pixels.astype(np.float32) / 255.0).copy()

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as float32 C x H x W in [0, 1]."""
        path = self.root / "images" / f"{self.metadata.at[i, 'id']}.png"
        return self._read_png(path, self.config.channels)


    def __getitem__(self, i: int) -> dict[str, object]:
        return {
            "idx": i,
            "id": self.metadata.at[i, "id"],
            "img": torch.from_numpy(self.image(i)),
            "lab": int(self.labels[i]),
        }

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the data a model sees: the selected rows (labels, splits, cues) and the config."""
        digest = hashlib.sha256()
        digest.update(self.metadata[list(LABEL_COLUMNS)].to_csv(index=False).encode())
        digest.update((self.root / CONFIG_FILE).read_bytes())
        return digest.hexdigest()[:12]


def map_region_auc(weight_map: np.ndarray, region_mask: np.ndarray) -> float:
    """ROC AUC of a weight map's values for region (positive) vs background pixels.

    1 = every region pixel weighs more than every background pixel, 0.5 = no better than chance
    (e.g. a constant map). ``weight_map`` may carry singleton leading axes (1 x H x W).
    """
    values = np.squeeze(np.asarray(weight_map, dtype=np.float64))
    mask = np.asarray(region_mask, dtype=bool)
    if values.shape != mask.shape:
        raise ValueError(f"weight map of shape {values.shape} does not match the mask's {mask.shape}")
    if not np.isfinite(values).all():
        raise ValueError("weight map holds non-finite values")
    if mask.all() or not mask.any():
        raise ValueError("region mask must hold both region and background pixels")
    return float(roc_auc_score(mask.ravel(), values.ravel()))
