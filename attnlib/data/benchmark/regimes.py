"""The benchmark's regimes: named changes of one or two knobs of a source, applied the same way to every source.

* training-set size: ``train_fraction`` of each class's training images (1 = all);
* spurious cue (the Decoy-MNIST construction of Ross et al. 2017): a ``cue_size`` px square in a corner that
  holds no evidence, whose shade encodes a class; in training images it shows the label with probability
  ``cue`` (otherwise one of the other classes, uniformly), in test images a class drawn uniformly, independent
  of the label; ``cue`` None: no square;
* human-map quality on training images: ``clean``; ``noisy`` (blurred by a Gaussian of ``noise_blur`` px,
  shifted by up to ``noise_shift`` px in each direction with zero fill, and a random ``noise_drop`` share of a
  4 x 4 grid of cells zeroed); ``misplaced`` (the map of another training image turned by 180 degrees: a
  derangement, so no image keeps its own map, and turned, so even a source whose maps all coincide, such as a
  fixed region, gets maps away from its evidence);
* training budget: ``budget`` "short" or "long" (the study maps it to epochs).

Each stream of draws (size, cue, corner, maps) comes from a generator seeded by the source, the run's seed, the
stream and the knobs that shape it (not the regime's name), so a (source, regime, seed) triple gives the same data
to every method (the pairing of the benchmark's tests), and two regimes with the same cue share their images.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.ndimage import shift as nd_shift

MapQuality = Literal["clean", "noisy", "misplaced"]
Budget = Literal["short", "long"]
#: The 4 corners a cue square may take: (top, left) flags.
CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))
#: The cue's shade range: class k of n shows 0.2 + 0.8 k / (n - 1) in every channel.
CUE_SHADES = (0.2, 1.0)


@dataclass(frozen=True)
class Regime:
    """One named regime (module docstring); the profile's ``benchmark.regimes`` holds them by name."""

    name: str
    train_fraction: float = 1.0
    cue: float | None = None
    maps: MapQuality = "clean"
    budget: Budget = "short"
    cue_size: int = 4
    noise_blur: float = 1.5
    noise_shift: int = 4
    noise_drop: float = 0.3

    def __post_init__(self) -> None:
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"regime {self.name!r}: train_fraction must be in (0, 1], got {self.train_fraction}")
        if self.cue is not None and not 0 <= self.cue <= 1:
            raise ValueError(f"regime {self.name!r}: cue (agreement in training) must be in [0, 1] or None, "
                             f"got {self.cue}")
        if self.maps not in MapQuality.__args__:
            raise ValueError(f"regime {self.name!r}: maps must be one of {MapQuality.__args__}, got {self.maps!r}")
        if self.budget not in Budget.__args__:
            raise ValueError(f"regime {self.name!r}: budget must be one of {Budget.__args__}, got {self.budget!r}")
        if self.cue_size < 1 or self.noise_blur < 0 or self.noise_shift < 0 or not 0 <= self.noise_drop < 1:
            raise ValueError(f"regime {self.name!r}: cue_size >= 1, noise_blur >= 0, noise_shift >= 0 and "
                             f"noise_drop in [0, 1) are required")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def knobs(self) -> str:
        """The regime's knobs in words, e.g. "cue 100 % in training, misplaced maps"."""
        words = [f"{self.train_fraction:.0%} of the training set" if self.train_fraction < 1 else "full training set",
                 "no cue" if self.cue is None else f"cue agrees with the label in {self.cue:.0%} of training images",
                 f"{self.maps} maps", f"{self.budget} budget"]
        return ", ".join(words)


#: The knobs that shape each stream of draws.
_STREAM_KNOBS = {"size": ("train_fraction",), "cue": ("cue",), "corner": ("cue", "cue_size"),
                 "maps": ("maps", "noise_blur", "noise_shift", "noise_drop")}


def regime_rng(regime: Regime, source: str, seed: int, stream: str) -> np.random.Generator:
    """The generator of one stream of draws (``size``, ``cue``, ``corner``, ``maps``) for (regime, source, seed)."""
    knobs = [getattr(regime, k) for k in _STREAM_KNOBS[stream]]
    digest = hashlib.sha256(f"{source}|{seed}|{stream}|{knobs}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def cue_classes(labels: np.ndarray, train: np.ndarray, agreement: float, n_classes: int,
                rng: np.random.Generator) -> np.ndarray:
    """The class each image's cue shows: the label with probability ``agreement`` in training images (else one
    of the others, uniformly), uniform in the others (``train`` False)."""
    labels = np.asarray(labels, dtype=np.int64)
    agree = rng.random(len(labels)) < agreement
    other = (labels + rng.integers(1, n_classes, len(labels))) % n_classes
    uniform = rng.integers(0, n_classes, len(labels))
    return np.where(train, np.where(agree, labels, other), uniform)


def add_cue(images: np.ndarray, shown: np.ndarray, evidence: np.ndarray, n_classes: int, size: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``images`` (N x C x S x S) with the cue square painted in a corner free of evidence (random among the
    free ones; any corner if none is free); returns the images and the squares' masks (N x S x S bool)."""
    out, masks = images.copy(), np.zeros((len(images), *images.shape[-2:]), dtype=bool)
    s = images.shape[-1]
    low, high = CUE_SHADES
    for i, k in enumerate(shown):
        boxes = [_corner_box(top, left, s, size) for top, left in CORNERS]
        free = [b for b in boxes if not evidence[i][b].any()] or boxes
        box = free[rng.integers(len(free))]
        out[i][(slice(None), *box)] = low + (high - low) * k / max(n_classes - 1, 1)
        masks[i][box] = True
    return out, masks


def _corner_box(top: int, left: int, s: int, size: int) -> tuple[slice, slice]:
    rows = slice(0, size) if top == 0 else slice(s - size, s)
    cols = slice(0, size) if left == 0 else slice(s - size, s)
    return rows, cols


def degrade_maps(maps: np.ndarray, regime: Regime, rng: np.random.Generator) -> np.ndarray:
    """The training maps (N x S x S) of ``regime``'s quality (module docstring), each scaled to max 1."""
    if regime.maps == "clean":
        return maps.copy()
    if regime.maps == "misplaced":
        n = len(maps)
        if n < 2:
            raise ValueError("misplaced maps need at least 2 training images")
        order = rng.permutation(n)
        partner = np.empty(n, dtype=int)
        partner[order] = np.roll(order, 1)  # a cyclic derangement of a random order
        return np.ascontiguousarray(maps[partner][:, ::-1, ::-1])
    out = np.empty_like(maps)
    s = maps.shape[-1]
    grid = np.minimum(np.arange(s) // max(s // 4, 1), 3)  # each pixel's cell of the 4 x 4 grid
    for i, m in enumerate(maps):
        noisy = gaussian_filter(m, regime.noise_blur) if regime.noise_blur > 0 else m
        offset = rng.integers(-regime.noise_shift, regime.noise_shift + 1, 2)
        noisy = nd_shift(noisy, offset, order=0, mode="constant", cval=0.0)
        drop = rng.random((4, 4)) < regime.noise_drop
        noisy = noisy * ~drop[np.ix_(grid, grid)]
        top = float(noisy.max())
        out[i] = noisy / top if top > 0 else noisy
    return out


def subsample(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``fraction`` of each class (at least 2 per class), sorted."""
    keep = []
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        n = max(2, int(round(fraction * len(members))))
        keep.append(rng.choice(members, size=min(n, len(members)), replace=False))
    return np.sort(np.concatenate(keep))
