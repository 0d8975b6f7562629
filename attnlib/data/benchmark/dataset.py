"""The benchmark's datasets: a source (:mod:`.sources`) under a regime (:mod:`.regimes`) for one seed, split into
train / val / test, in the dataset contract with the benchmark's keys.

Items: ``idx, id, img`` (C x S x S), ``lab``, ``map`` (1 x S x S: the regime's map on training and validation
images, the clean map on test images), ``has_map``, ``hmap`` (the map on the CAM grid ``hmap_size``, area-resampled,
scaled to max 1), ``evidence`` (1 x S x S), ``clean_map`` (1 x S x S) and ``cue`` (the class the cue square
shows, -1 without one).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from attnlib.data.benchmark.regimes import Regime, add_cue, cue_classes, degrade_maps, regime_rng, subsample
from attnlib.data.benchmark.sources import SourceArrays
from attnlib.data.contract import LabelledDataset
from attnlib.data.splits import balanced_split

class BenchmarkDataset(LabelledDataset):
    """Items of the benchmark contract (module docstring) held in memory."""

    def __init__(self, name: str, label_names: list[str], ids: np.ndarray, images: np.ndarray, labels: np.ndarray,
                 maps: np.ndarray, clean_maps: np.ndarray, evidence: np.ndarray, cue: np.ndarray,
                 identity: dict[str, object], hmap_size: tuple[int, int]) -> None:
        self.name, self.label_names = name, list(label_names)
        self.images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        self.labels = np.asarray(labels, dtype=np.int64)
        self.maps = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
        self.clean_maps = torch.from_numpy(np.ascontiguousarray(clean_maps, dtype=np.float32))[:, None]
        self.evidence = torch.from_numpy(np.ascontiguousarray(evidence, dtype=np.float32))[:, None]
        self.cue = np.asarray(cue, dtype=np.int64)
        hmaps = F.interpolate(self.maps, size=tuple(hmap_size), mode="area")
        top = hmaps.flatten(1).amax(1).clamp_min(1e-12)[:, None, None, None]
        self.hmaps = torch.where(top > 1e-12, hmaps / top, hmaps)
        self.has_map = self.maps.flatten(1).amax(1) > 0
        self.metadata = pd.DataFrame({"id": [str(i) for i in ids], "label": self.labels, "cue": self.cue})
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
        for array in (self.images, self.maps, self.evidence):
            digest.update(array.numpy().tobytes())
        digest.update(self.labels.tobytes() + self.cue.tobytes())
        self._fingerprint = digest.hexdigest()[:12]

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def __getitem__(self, i: int) -> dict[str, object]:
        return {
            "idx": i, "id": self.metadata.at[i, "id"], "img": self.images[i], "lab": int(self.labels[i]),
            "map": self.maps[i], "has_map": bool(self.has_map[i]), "hmap": self.hmaps[i],
            "evidence": self.evidence[i], "clean_map": self.clean_maps[i], "cue": int(self.cue[i]),
        }


@dataclass(frozen=True)
class BenchmarkSplits:
    """The three datasets of one (source, regime, seed) and the cue squares' masks of the test images."""

    train: BenchmarkDataset
    val: BenchmarkDataset
    test: BenchmarkDataset

    def as_dict(self) -> dict[str, BenchmarkDataset]:
        return {"train": self.train, "val": self.val, "test": self.test}


def benchmark_splits(source: SourceArrays, regime: Regime, seed: int, val_fraction: float = 0.2,
                     max_train: int | None = None, hmap_size: tuple[int, int] = (4, 4)) -> BenchmarkSplits:
    """``source`` under ``regime`` for ``seed`` (the same data for every method of that seed): the training
    images subsampled (``regime.train_fraction`` of at most ``max_train`` of them, label-balanced), then a
    label-balanced validation share drawn from them; cue and map quality applied; ``hmap_size``: the CAM grid of
    the network (:func:`attnlib.models.cam.cam_grid`), where ``hmap`` lives."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if max_train is not None and max_train < 2:
        raise ValueError(f"max_train must be at least 2 or None, got {max_train}")
    train_all = np.flatnonzero(source.split == "train")
    test = np.flatnonzero(source.split == "test")
    fraction = regime.train_fraction * min(1.0, (max_train or len(train_all)) / len(train_all))
    kept = train_all[subsample(source.labels[train_all], fraction, regime_rng(regime, source.name, seed, "size"))]
    parts = balanced_split(source.ids[kept].tolist(), source.labels[kept].tolist(), seed,
                           (1 - val_fraction, val_fraction, 0.0))["split"].to_numpy()
    index = {"train": kept[parts == "train"], "val": kept[parts == "val"], "test": test}
    images, shown = source.images, np.full(len(source.labels), -1, dtype=np.int64)
    if regime.cue is not None:
        in_training = source.split == "train"
        shown = cue_classes(source.labels, in_training, regime.cue, source.n_classes,
                            regime_rng(regime, source.name, seed, "cue"))
        images, _ = add_cue(images, shown, source.evidence, source.n_classes, regime.cue_size,
                            regime_rng(regime, source.name, seed, "corner"))
    maps = source.maps.copy()
    maps[kept] = degrade_maps(source.maps[kept], regime, regime_rng(regime, source.name, seed, "maps"))
    identity = {"source": source.fingerprint, "regime": regime.to_dict(), "seed": seed, "val_fraction": val_fraction,
                "max_train": max_train, "hmap_size": list(hmap_size)}

    def part(name: str) -> BenchmarkDataset:
        rows = index[name]
        return BenchmarkDataset(
            f"{source.name}/{regime.name}/{name}", source.label_names, source.ids[rows], images[rows],
            source.labels[rows], maps[rows] if name != "test" else source.maps[rows], source.maps[rows],
            source.evidence[rows], shown[rows], {**identity, "split": name}, hmap_size,
        )

    return BenchmarkSplits(part("train"), part("val"), part("test"))
