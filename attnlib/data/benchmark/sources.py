"""The four synthetic defaults as the benchmark sees them: images, labels, a human map and the evidence region
of every image, at one small square size.

Each source generates (or reuses) the profile's synthetic set with its own spurious cue turned off (the
benchmark adds one cue the same way to every source, :mod:`attnlib.data.benchmark.regimes`) and reads it through
the set's loader:

* ``cxr``: the EGD-CXR-like set (GG-CAM); human map = the radiologist's gaze heat map (Algorithm 1, fixations
  weighted by duration); evidence = the mediastinum for cardiomegaly, the lungs for pneumonia, both for normal
  (Eq. 12's organs). One simulated reader per image: no inter-rater ceiling.
* ``structured``: the fundus-like set (global attention); human map = the region's segmentation (like IDRiD's
  lesion masks), smoothed by a Gaussian of 1 px; evidence = the region. A segmentation has no second rater.
* ``finegrained``: the CUB-like set (ABN); human map = the KDE of the simulated players' bubbles; evidence = the
  head. ``clickme``: the ClickMe-like set (GALA); human map = ClickMe-style click counts. Both carry the maps of
  two disjoint halves of the players (``rater_maps``), from which a study measures the inter-rater ceiling.

Images are area-resampled to ``size`` x ``size`` (the CXR's 5:4 aspect is squeezed to a square); masks are
resampled the same way and kept where at least half a cell is inside; maps are resampled and scaled to max 1.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from collections.abc import Callable
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from attnlib.core.progress import tqdm
from attnlib.data.maps.sources import bubble_map, clickme_map, player_halves
from attnlib.data.real.egd_cxr import EGDCXR, MASK_FILES, EGDCXRPaths, EGDCXRSettings
from attnlib.data.synthetic.defaults import (
    synthetic_egd_cxr,
    synthetic_finegrained,
    synthetic_finegrained_config,
    synthetic_structured,
)
from attnlib.data.synthetic.finegrained import FineGrainedDataset
from attnlib.data.synthetic.structured import StructuredDataset

SourceName = Literal["cxr", "structured", "finegrained", "clickme"]
SOURCES: tuple[str, ...] = SourceName.__args__
#: What each source's human map is, in words (for tables and the report).
HUMAN_MAPS = {
    "cxr": "gaze heat map (one simulated radiologist)",
    "structured": "segmentation of the evidence region",
    "finegrained": "KDE of simulated players' bubbles",
    "clickme": "ClickMe-style click counts of simulated players",
}
#: Which synthetic section of the profile each source reads.
SECTIONS = {
    "cxr": "egd_cxr_synthetic",
    "structured": "global_attention_synthetic",
    "finegrained": "abn_synthetic",
    "clickme": "gala_synthetic",
}


@dataclass(frozen=True)
class SourceArrays:
    """One source at the benchmark's size: N images with labels, generator split, human map and evidence.

    ``images`` N x C x S x S float32 in [0, 1]; ``labels`` N int64; ``split`` N of "train" / "test";
    ``maps`` N x S x S float32 in [0, 1] (the clean human map); ``evidence`` N x S x S bool; ``rater_maps``
    N x 2 x S x S (two disjoint halves of the raters) or None where the data has one rater.
    """

    name: str
    label_names: list[str]
    ids: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    maps: np.ndarray
    evidence: np.ndarray
    rater_maps: np.ndarray | None = None

    def __post_init__(self) -> None:
        n, s = len(self.labels), self.images.shape[-1]
        shapes = {"ids": (n,), "split": (n,), "maps": (n, s, s), "evidence": (n, s, s)}
        for field_name, shape in shapes.items():
            if getattr(self, field_name).shape != shape:
                raise ValueError(f"{self.name}: {field_name} has shape {getattr(self, field_name).shape}, "
                                 f"expected {shape}")
        if self.images.ndim != 4 or self.images.shape[0] != n or self.images.shape[-2] != s:
            raise ValueError(f"{self.name}: images must be N x C x S x S, got {self.images.shape}")
        if self.rater_maps is not None and self.rater_maps.shape != (n, 2, s, s):
            raise ValueError(f"{self.name}: rater_maps must be N x 2 x S x S, got {self.rater_maps.shape}")
        if set(np.unique(self.split)) - {"train", "test"}:
            raise ValueError(f"{self.name}: split holds {sorted(set(np.unique(self.split)))}, not train/test")

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def fingerprint(self) -> str:
        """A short hash of everything in the arrays."""
        digest = hashlib.sha256(self.name.encode())
        for array in (self.ids.astype(str), self.images, self.labels, self.split.astype(str), self.maps,
                      self.evidence, self.rater_maps):
            if array is not None:
                digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:12]


Loader = Callable[[str | None, int, bool], "SourceArrays"]


def load_source(name: str, profile: str | None = None, size: int = 32, progress: bool = False) -> SourceArrays:
    """The synthetic default ``name`` (:data:`SOURCES`) of ``profile`` at ``size`` px, its own cue off."""
    if name not in SOURCES:
        raise ValueError(f"unknown benchmark source {name!r}; choose from {SOURCES}")
    if size < 8:
        raise ValueError(f"size must be at least 8 px, got {size}")
    return _LOADERS[name](profile, size, progress)


def _cxr(profile: str | None, size: int, progress: bool) -> SourceArrays:
    root = synthetic_egd_cxr(profile, cue=None)
    settings = EGDCXRSettings(scale=None, image_size=(4 * size, 4 * size), hmap_size=(size, size), masks=True)
    ds = EGDCXR(EGDCXRPaths.from_root(root), split=None, settings=settings)
    images, maps, evidence = [], [], []
    organs = list(MASK_FILES)
    heart = [organs.index("mediastinum")]
    lungs = [organs.index("left_lung"), organs.index("right_lung")]
    for i in tqdm(range(len(ds)), desc="cxr", disable=not progress, leave=False):
        item = ds[i]
        images.append(_resize(item["img"][None], size)[0])
        maps.append(_unit_max(item["hmap"][0].numpy()))
        masks = _resize(item["masks"][None].float(), size)[0] >= 0.5
        which = {0: heart + lungs, 1: heart, 2: lungs}[int(item["lab"])]
        evidence.append(masks[which].any(dim=0).numpy())
    split = ds.metadata["split"].replace({"val": "train"}).to_numpy(dtype=object)
    return SourceArrays("cxr", list(ds.label_names), ds.metadata["dicom_id"].astype(str).to_numpy(),
                        np.stack([x.numpy() for x in images]),
                        ds.labels.astype(np.int64), split, np.stack(maps), np.stack(evidence))


def _structured(profile: str | None, size: int, progress: bool) -> SourceArrays:
    ds = StructuredDataset(synthetic_structured(profile, cue=False))
    images = np.stack([ds.image(i) for i in tqdm(range(len(ds)), desc="structured", disable=not progress,
                                                 leave=False)])
    region = _resize(torch.from_numpy(ds.region_mask[None, None].astype(np.float32)), size)[0, 0].numpy() >= 0.5
    human = _unit_max(gaussian_filter(region.astype(np.float32), 1.0))
    n = len(ds)
    return SourceArrays("structured", list(ds.label_names), ds.metadata["id"].astype(str).to_numpy(),
                        _resize(torch.from_numpy(images), size).numpy(), ds.labels.astype(np.int64),
                        ds.metadata["split"].to_numpy(dtype=object), np.repeat(human[None], n, axis=0),
                        np.repeat(region[None], n, axis=0))


def _finegrained(name: str) -> Loader:
    def load(profile: str | None, size: int, progress: bool) -> SourceArrays:
        section = SECTIONS[name]
        n_classes = synthetic_finegrained_config(profile, section).n_classes
        ds = FineGrainedDataset(synthetic_finegrained(profile, section=section,
                                                      distractor_correlation_train=1.0 / n_classes))
        full = (ds.config.size, ds.config.size)
        images, maps, evidence, halves = [], [], [], []
        for i in tqdm(range(len(ds)), desc=name, disable=not progress, leave=False):
            bubbles = ds.bubbles(i)
            images.append(ds.image(i))
            maps.append(_human_map(name, bubbles, full, size))
            halves.append(np.stack([_human_map(name, half, full, size) for half in player_halves(bubbles)]))
            evidence.append(ds.evidence_mask(i))
        masks = _resize(torch.from_numpy(np.stack(evidence)[:, None].astype(np.float32)), size)[:, 0] >= 0.5
        return SourceArrays(name, list(ds.label_names), ds.metadata["id"].astype(str).to_numpy(),
                            _resize(torch.from_numpy(np.stack(images)), size).numpy(), ds.labels.astype(np.int64),
                            ds.metadata["split"].to_numpy(dtype=object), np.stack(maps), masks.numpy(),
                            np.stack(halves))

    return load


def _human_map(name: str, bubbles: pd.DataFrame, full: tuple[int, int], size: int) -> np.ndarray:
    """The source's human map of one image's bubbles at ``size``: bubble KDE (finegrained) or click counts."""
    if name == "finegrained":
        return _unit_max(bubble_map(bubbles, full, out_size=(size, size)))
    counts = torch.from_numpy(clickme_map(bubbles, full))[None, None]
    return _unit_max(_resize(counts, size)[0, 0].numpy())


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Area resampling of an N x C x H x W tensor to ``size`` x ``size``."""
    return F.interpolate(x.float(), size=(size, size), mode="area")


def _unit_max(values: np.ndarray) -> np.ndarray:
    """``values`` as float32 scaled to max 1 (an all-zero map stays zero)."""
    values = np.asarray(values, dtype=np.float32)
    top = float(values.max()) if values.size else 0.0
    return values / top if top > 0 else values


_LOADERS = {"cxr": _cxr, "structured": _structured, "finegrained": _finegrained("finegrained"),
            "clickme": _finegrained("clickme")}
