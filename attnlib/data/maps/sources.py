"""Where the "human knowledge" maps of the ABN paper come from, as grid maps in [0, 1].

Three sources (methods.md section 3), each giving an H x W float32 map that
:class:`~attnlib.data.maps.edited_maps.EditedMapStore` stores with its provenance:

* :func:`bubble_map` -- bubble annotations (CUB-200-2010's "Bubbles" game, the synthetic annotators)
  turned into a map by kernel density estimation over the bubbles, normalised to [0, 1];
* :func:`lesion_map` -- a lesion segmentation (IDRiD haemorrhages, hard and soft exudates);
* :func:`simulate_edit` -- a simulated person editing the network's own map with the round brush of
  :mod:`attnlib.data.maps.editing`: it paints the true evidence in and erases what the network attends to outside
  it, within a budget of strokes, so the Table 1 experiment and the fine-tuning run without a person.

and, for GALA (methods.md section 4), :func:`clickme_map`: ClickMe's importance map made from bubbles the
way the game makes it (each click reveals a bubble; the revealed discs are counted per pixel over all
players, then blurred), with :func:`player_halves` for the inter-rater reliability and
:func:`bounding_box_map` for the paper's bounding-box control.

Bandwidth rule of :func:`bubble_map`: every bubble contributes an isotropic Gaussian centred on it
whose standard deviation is the bubble's own radius (a variable-bandwidth KDE: a player who opens a
large bubble reveals a large region), unless a fixed ``bandwidth`` in image pixels is given. Each
Gaussian has peak 1 by default (``weighting="peak"``: its mass grows with the radius squared, so a large
bubble weighs more than a small one) or mass 1 (``"mass"``: every bubble weighs the same, a large one
spread thinner). The densities of all bubbles of an image (all workers) are summed and divided by their
maximum. Not ``scipy.stats.gaussian_kde``: its bandwidth comes from the covariance of all centres, which
merges two distant clusters of bubbles into one blob and is undefined for a single bubble.

Coordinates: pixel ``(row, col)`` of an image is centred on the point ``(row, col)`` (0-based, as the
bubbles CSV of :mod:`attnlib.data.real.cub` states), so a point ``x`` of an image of width ``W`` lies at
``(x + 0.5) * w / W - 0.5`` on a grid of width ``w``; lengths (radii) scale by ``w / W``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from scipy.ndimage import distance_transform_edt

from attnlib.data.maps.editing import Stroke, apply_strokes, downsample, upsample
from attnlib.data.real.clickme import blur_map

BUBBLE_COLUMNS = ("x", "y", "radius")


def bubble_map(
    bubbles: pd.DataFrame,
    image_size: tuple[int, int],
    bandwidth: float | None = None,
    out_size: tuple[int, int] | None = None,
    weighting: Literal["peak", "mass"] = "peak",
) -> np.ndarray:
    """KDE of one image's bubbles (columns ``x`` = column, ``y`` = row, ``radius``, in pixels of an image
    of ``image_size`` (H, W)), normalised to [0, 1]; at ``out_size`` (H, W) if given (pixel centres map to
    cell centres: ``(x + 0.5) * w / W - 0.5``, radii times ``w / W``; module docstring).

    Bandwidth: each bubble's radius, or ``bandwidth`` pixels for all. ``weighting``: each bubble a
    Gaussian of peak 1 (``"peak"``: larger bubbles weigh more) or of mass 1 (``"mass"``: divided by
    ``2 pi sigma_x sigma_y``, every bubble weighs the same); equal with a fixed ``bandwidth``. No bubbles
    give a map of zeros.
    """
    missing = [c for c in BUBBLE_COLUMNS if c not in bubbles.columns]
    if missing:
        raise KeyError(f"bubbles lack column(s) {missing}; have {list(bubbles.columns)}")
    height, width = (int(v) for v in image_size)
    out_h, out_w = (int(v) for v in (out_size or image_size))
    if min(height, width, out_h, out_w) < 1:
        raise ValueError(f"image_size {image_size} and out_size {out_size} must be positive")
    if bandwidth is not None and not bandwidth > 0:
        raise ValueError(f"bandwidth must be a positive number of pixels, got {bandwidth}")
    if weighting not in ("peak", "mass"):
        raise ValueError(f"weighting must be 'peak' or 'mass', got {weighting!r}")
    scale_y, scale_x = out_h / height, out_w / width
    x = (bubbles["x"].to_numpy(float) + 0.5) * scale_x - 0.5
    y = (bubbles["y"].to_numpy(float) + 0.5) * scale_y - 0.5
    radius = (
        bubbles["radius"].to_numpy(float) if bandwidth is None else np.full(len(bubbles), float(bandwidth))
    )
    if len(radius) and not (radius > 0).all():
        raise ValueError(f"bubble radii must be positive, got {radius.min()}")
    sigma_y, sigma_x = radius * scale_y, radius * scale_x
    weight = 1 / (2 * np.pi * sigma_y * sigma_x) if weighting == "mass" else np.ones_like(radius)
    rows = (np.arange(out_h)[None, :, None] - y[:, None, None]) / sigma_y[:, None, None]
    cols = (np.arange(out_w)[None, None, :] - x[:, None, None]) / sigma_x[:, None, None]
    density = (weight[:, None, None] * np.exp(-0.5 * (rows**2 + cols**2))).sum(axis=0)
    return _normalise(density)


def lesion_map(mask: np.ndarray, grid_size: tuple[int, int]) -> np.ndarray:
    """A lesion segmentation (H x W, any non-zero = lesion) as a grid map: the lesion fraction of each
    grid cell (area average), divided by its maximum so the densest cell is 1; zeros without lesions."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"lesion mask must be H x W, got shape {array.shape}")
    return _normalise(downsample((array > 0).astype(np.float32), grid_size))


def simulate_edit(
    network_map: np.ndarray,
    evidence: np.ndarray,
    budget: int = 4,
    add_radius: float | None = None,
    remove_radius: float | None = None,
    threshold: float = 0.3,
) -> tuple[np.ndarray, list[Stroke]]:
    """A simulated person's edit of ``network_map`` (grid h x w) given the true ``evidence`` (H x W bool,
    at image size): (edited grid map, the strokes in image pixels).

    Stroke 1 adds the evidence: one dab at the centre of its bounding box, radius ``add_radius`` (default
    half the box's diagonal). Strokes 2..``budget`` remove attention: each a dab at the highest value of
    the current (upsampled) map outside the evidence grown by ``remove_radius`` (default a third of the
    image's shorter side, at least the add radius' half), until that value is below ``threshold``. The
    strokes replay with :func:`attnlib.data.maps.editing.edit_map` on ``network_map``.
    """
    if budget < 1:
        raise ValueError(f"budget must be at least one stroke, got {budget}")
    evidence = np.asarray(evidence, dtype=bool)
    if evidence.ndim != 2 or not evidence.any():
        raise ValueError(
            f"evidence must be a non-empty H x W mask, got shape {evidence.shape} with {evidence.sum()} pixels"
        )
    height, width = evidence.shape
    grid = np.asarray(network_map).shape
    rows, cols = np.nonzero(evidence)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    centre = ((top + bottom) / 2, (left + right) / 2)
    add = (
        add_radius
        if add_radius is not None
        else max(0.5 * float(np.hypot(bottom - top + 1, right - left + 1)), 1.0)
    )
    remove = remove_radius if remove_radius is not None else max(min(height, width) / 6, add / 2)
    strokes = [Stroke("add", add, [centre])]
    keep_out = _grow(evidence, remove)
    image_map = apply_strokes(upsample(network_map, (height, width)), strokes)
    for _ in range(budget - 1):
        outside = np.where(keep_out, -np.inf, image_map)
        row, col = np.unravel_index(int(np.argmax(outside)), outside.shape)
        if outside[row, col] < threshold:
            break
        stroke = Stroke("remove", remove, [(float(row), float(col))])
        strokes.append(stroke)
        image_map = apply_strokes(image_map, [stroke])
    return downsample(image_map, grid), strokes


def clickme_map(
    bubbles: pd.DataFrame, image_size: tuple[int, int], blur_kernel: int | None = None
) -> np.ndarray:
    """ClickMe-style map of one image's bubbles (``x`` = column, ``y`` = row, ``radius``, in pixels of an
    ``image_size`` (H, W) image): per pixel, the number of bubbles whose disc covers it (summed over all
    players), blurred with a Gaussian of ``blur_kernel`` pixels (odd; sigma by
    :func:`attnlib.data.real.clickme.default_sigma`; None = no blur), float32. Not normalised: like ClickMe's
    heat maps it grows with the number of clicks (the losses normalise)."""
    missing = [c for c in BUBBLE_COLUMNS if c not in bubbles.columns]
    if missing:
        raise KeyError(f"bubbles lack column(s) {missing}; have {list(bubbles.columns)}")
    height, width = (int(v) for v in image_size)
    rows = np.arange(height, dtype=float)[None, :, None]
    cols = np.arange(width, dtype=float)[None, None, :]
    x, y, r = (bubbles[c].to_numpy(float)[:, None, None] for c in ("x", "y", "radius"))
    counts = ((rows - y) ** 2 + (cols - x) ** 2 <= r**2).sum(axis=0) if len(bubbles) else np.zeros((height, width))
    out = torch.from_numpy(np.asarray(counts, dtype=np.float32))[None]
    if blur_kernel is not None:
        if blur_kernel < 1 or blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be a positive odd number of pixels, got {blur_kernel}")
        out = blur_map(out, blur_kernel)
    return out[0].numpy()


def player_halves(bubbles: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The bubbles of two disjoint halves of the players (sorted by ``worker``, alternating), for the
    inter-rater reliability of :func:`clickme_map` maps; ValueError with fewer than two players."""
    workers = sorted(bubbles["worker"].astype(str).unique())
    if len(workers) < 2:
        raise ValueError(f"inter-rater reliability needs at least 2 players, got {workers}")
    first = set(workers[0::2])
    in_first = bubbles["worker"].astype(str).isin(first)
    return bubbles[in_first].reset_index(drop=True), bubbles[~in_first].reset_index(drop=True)


def bounding_box_map(human: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """The paper's bounding-box control: 1 inside the smallest box holding every pixel of ``human`` above
    ``threshold`` x its maximum, 0 outside (float32); an all-zero map stays all zeros."""
    top = float(human.max()) if human.size else 0.0
    out = np.zeros(human.shape, dtype=np.float32)
    if top <= 0:
        return out
    rows, cols = np.nonzero(human > threshold * top)
    out[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = 1.0
    return out


def bubble_frame(rows: Sequence[tuple[str, str, float, float, float]]) -> pd.DataFrame:
    """Bubbles in the CSV form ``image, worker, x, y, radius`` (see :mod:`attnlib.data.real.cub`)."""
    return pd.DataFrame(list(rows), columns=["image", "worker", "x", "y", "radius"])


def _grow(mask: np.ndarray, radius: float) -> np.ndarray:
    """``mask`` dilated by a disc of ``radius`` pixels (Euclidean distance transform)."""
    return distance_transform_edt(~mask) <= radius


def _normalise(values: np.ndarray) -> np.ndarray:
    """``values`` divided by their maximum (float32 in [0, 1]); zeros stay zeros."""
    top = float(values.max()) if values.size else 0.0
    out = values / top if top > 0 else np.zeros_like(values)
    return out.astype(np.float32)
