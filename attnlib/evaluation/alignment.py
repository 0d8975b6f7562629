"""Split-half inter-rater reliability of human maps: the ceiling of human alignment.

Human alignment (:func:`attnlib.evaluation.metrics.human_alignment`) divides a model's rank correlation with
the human maps by how well humans agree with one another. :func:`interrater_reliability` measures that
agreement on the synthetic ClickMe-like set: each image's players split into two halves, Spearman's rho
between the two halves' maps, and a shuffled-pairs null.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from attnlib.core.progress import tqdm
from attnlib.data.maps.sources import clickme_map, player_halves
from attnlib.data.real.clickme import PAPER_INTERRATER_NULL, PAPER_INTERRATER_RHO
from attnlib.data.synthetic.finegrained import FineGrainedDataset
from attnlib.evaluation.metrics import spearman_per_image


def _half_maps(
    ds: FineGrainedDataset, indices: Sequence[int], blur_kernel: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The :func:`clickme_map` maps of the two :func:`player_halves` of each image (two N x H x W arrays)."""
    size = (ds.config.size, ds.config.size)
    first, second = [], []
    for i in tqdm(indices, desc="player halves", leave=False):
        a, b = player_halves(ds.bubbles(i))
        first.append(clickme_map(a, size, blur_kernel))
        second.append(clickme_map(b, size, blur_kernel))
    return np.stack(first), np.stack(second)


@dataclass
class InterRater:
    """Split-half inter-rater reliability of ClickMe-style maps (see :func:`interrater_reliability`).

    ``per_image`` (index ``id``): ``split``, ``class``, ``rho`` (Spearman between the two halves' maps),
    ``partner`` (the image whose second half the null pairs with) and ``null_rho``.
    """

    per_image: pd.DataFrame
    blur_kernel: int | None
    seed: int

    @property
    def rho(self) -> float:
        """Mean per-image rho over the images where it is defined: the measured ceiling."""
        rho = self.per_image["rho"]
        return float(np.nanmean(rho)) if rho.notna().any() else float("nan")

    @property
    def null_rho(self) -> float:
        """Mean rho of the shuffled pairs (one image's first half against another image's second half)."""
        null = self.per_image["null_rho"]
        return float(np.nanmean(null)) if null.notna().any() else float("nan")

    def summary(self) -> pd.Series:
        """Images, mean rho and null, their standard deviations, undefined rhos, and the paper's values."""
        table = self.per_image
        return pd.Series({
            "images": len(table),
            "blur_kernel": kernel_name(self.blur_kernel),
            "rho (measured ceiling)": self.rho,
            "rho sd": float(table["rho"].std()),
            "null rho (shuffled pairs)": self.null_rho,
            "null rho sd": float(table["null_rho"].std()),
            "undefined (constant map)": int(table["rho"].isna().sum()),
            "paper rho (real ClickMe)": PAPER_INTERRATER_RHO,
            "paper null": PAPER_INTERRATER_NULL,
        }, name="inter-rater reliability")

    def by_split(self) -> pd.DataFrame:
        """Images, mean rho and mean null rho per split."""
        return self.per_image.groupby("split", sort=False).agg(
            images=("rho", "size"), rho=("rho", "mean"), null_rho=("null_rho", "mean"))


def interrater_reliability(
    ds: FineGrainedDataset,
    blur_kernel: int | None,
    *,
    seed: int = 0,
    max_images: int | None = None,
) -> InterRater:
    """Split-half inter-rater reliability of the synthetic set's ClickMe-style maps, with its null.

    Per image: the players are split into two disjoint halves (:func:`attnlib.data.maps.sources.player_halves`),
    each half's bubbles become a :func:`attnlib.data.maps.sources.clickme_map` map blurred by ``blur_kernel``,
    and ``rho`` is Spearman's rank correlation between the two maps
    (:func:`attnlib.evaluation.metrics.spearman_per_image`; NaN for a constant map). The null pairs image i's first
    half with image ``(i + s) mod n``'s second half, ``s`` drawn in [1, n) with ``seed``: the same
    derangement as :func:`attnlib.evaluation.metrics.human_alignment`, so the mean rho is the ceiling that GALA's
    human alignment divides by. ``max_images`` keeps that many images drawn at random with ``seed`` (in
    index order); None keeps all. Real ClickMe stores one map per image, not the players' clicks, so this
    is measurable on the synthetic set only (the paper reports 0.58, null 0.18).
    """
    indices = subset_indices(len(ds), max_images, seed)
    if len(indices) < 2:
        raise ValueError(f"inter-rater reliability needs at least 2 images (for the null), "
                         f"got {len(indices)}")
    first, second = _half_maps(ds, indices, blur_kernel)
    n = len(indices)
    partner = (np.arange(n) + np.random.default_rng(seed).integers(1, n)) % n
    meta = ds.metadata.iloc[indices]
    per_image = pd.DataFrame({
        "id": meta["id"].to_numpy(),
        "split": meta["split"].to_numpy(),
        "class": [ds.label_names[int(k)] for k in meta["label"]],
        "rho": spearman_per_image(first, second),
        "partner": meta["id"].to_numpy()[partner],
        "null_rho": spearman_per_image(first, second[partner]),
    }).set_index("id")
    return InterRater(per_image, blur_kernel, seed)


def subset_indices(n_all: int, max_images: int | None, seed: int) -> list[int]:
    """``max_images`` of ``range(n_all)`` drawn at random with ``seed``, in index order; None: all.

    The images :func:`interrater_reliability` scores, so that other tables over the same draw line up with it.
    """
    if max_images is None or max_images >= n_all:
        return list(range(n_all))
    return sorted(np.random.default_rng(seed).choice(n_all, max_images, replace=False).tolist())


def kernel_name(kernel: int | None) -> str:
    """How tables and figures name a blur kernel: "no blur", else "<k> x <k> px"."""
    return "no blur" if kernel is None else f"{kernel} x {kernel} px"
