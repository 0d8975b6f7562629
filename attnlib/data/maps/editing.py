"""Edits of attention maps with a round brush, as in the ABN human-in-the-loop procedure.

A map at the network's grid (e.g. 14 x 14) is upsampled to image size (bilinear), brush strokes
set pixels towards 1 ("add") or 0 ("remove"), and the result is area-averaged back to the grid.
Maps are H x W float32 numpy arrays with values in [0, 1]. Image coordinates are (row, col) with
pixel (r, c) centred at (r, c), so a point lies inside an H x W image when
-0.5 <= row <= H - 0.5 and -0.5 <= col <= W - 0.5. Strokes are JSON-able, so a saved list of
strokes replays the edit exactly on the same starting map.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

MODES = {"add": 1.0, "remove": 0.0}


@dataclass(frozen=True)
class Stroke:
    """One brush drag: pixels within ``radius`` of the polyline through ``points`` move to the target.

    ``mode`` "add" targets 1, "remove" targets 0. ``radius`` is in image pixels. ``points`` are
    (row, col) image coordinates along the drag; one point is a dab. ``strength`` in (0, 1]: 1 sets
    covered pixels to the target, less blends (``value += strength * (target - value)``), once per
    stroke however often its segments overlap a pixel.
    """

    mode: str
    radius: float
    points: Sequence[tuple[float, float]]
    strength: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"stroke mode must be one of {sorted(MODES)}, got {self.mode!r}")
        radius, strength = _number("radius", self.radius), _number("strength", self.strength)
        if not (radius > 0 and math.isfinite(radius)):
            raise ValueError(f"stroke radius must be finite and > 0, got {self.radius!r}")
        if not 0 < strength <= 1:
            raise ValueError(f"stroke strength must be in (0, 1], got {self.strength!r}")
        points = []
        for point in self.points:
            if len(point) != 2:
                raise ValueError(f"stroke point must be (row, col), got {point!r}")
            row, col = _number("point row", point[0]), _number("point col", point[1])
            if not (math.isfinite(row) and math.isfinite(col)):
                raise ValueError(f"stroke point {point!r} is not finite")
            points.append((row, col))
        if not points:
            raise ValueError("stroke needs at least one point")
        object.__setattr__(self, "radius", radius)
        object.__setattr__(self, "strength", strength)
        object.__setattr__(self, "points", tuple(points))

    @property
    def target(self) -> float:
        """The value the brush moves pixels towards: 1.0 for "add", 0.0 for "remove"."""
        return MODES[self.mode]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; ``Stroke.from_dict`` restores an equal stroke."""
        return {
            "mode": self.mode,
            "radius": self.radius,
            "points": [list(p) for p in self.points],
            "strength": self.strength,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stroke:
        """The stroke of a ``to_dict`` result; unknown or missing keys raise ValueError."""
        unknown = set(data) - {"mode", "radius", "points", "strength"}
        missing = {"mode", "radius", "points"} - set(data)
        if unknown or missing:
            raise ValueError(f"stroke dict has unknown keys {sorted(unknown)} / lacks {sorted(missing)}")
        return cls(
            mode=data["mode"],
            radius=data["radius"],
            points=[tuple(p) for p in data["points"]],
            strength=data.get("strength", 1.0),
        )

    def check_inside(self, image_size: tuple[int, int]) -> None:
        """ValueError naming the first point outside an image of ``image_size`` (H, W)."""
        height, width = _size("image_size", image_size)
        for row, col in self.points:
            if not (-0.5 <= row <= height - 0.5 and -0.5 <= col <= width - 0.5):
                raise ValueError(
                    f"stroke point ({row}, {col}) lies outside the {height} x {width} image "
                    f"(rows and cols must be in [-0.5, size - 0.5])"
                )


def upsample(map: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """``map`` (H x W) resized to ``image_size`` bilinearly (``align_corners=False``), float32.

    Computed in float64, so a constant map stays exactly constant.
    """
    size = _size("image_size", image_size)
    tensor = torch.from_numpy(_as_map(map).astype(np.float64))[None, None]
    out = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)
    return out[0, 0].numpy().astype(np.float32)


def downsample(map: np.ndarray, grid_size: tuple[int, int]) -> np.ndarray:
    """``map`` (H x W) area-averaged to ``grid_size`` (adaptive average pooling), float32.

    Computed in float64, so a constant map stays exactly constant.
    """
    size = _size("grid_size", grid_size)
    tensor = torch.from_numpy(_as_map(map).astype(np.float64))[None, None]
    return F.adaptive_avg_pool2d(tensor, size)[0, 0].numpy().astype(np.float32)


def apply_strokes(image_map: np.ndarray, strokes: Iterable[Stroke]) -> np.ndarray:
    """A new float32 copy of ``image_map`` with ``strokes`` painted in order (input untouched)."""
    out = _as_map(image_map).copy()
    height, width = out.shape
    for stroke in strokes:
        stroke.check_inside((height, width))
        covered = _coverage(stroke, height, width)
        if stroke.strength == 1:
            out[covered] = stroke.target
        else:
            values = out[covered]
            out[covered] = np.clip(values + stroke.strength * (stroke.target - values), 0.0, 1.0)
    return out


def edit_map(
    map: np.ndarray, image_size: tuple[int, int], strokes: Iterable[Stroke]
) -> tuple[np.ndarray, np.ndarray]:
    """(edited map at ``map``'s grid, edited map at image size): upsample, paint, downsample."""
    grid = _as_map(map).shape
    image_map = apply_strokes(upsample(map, image_size), strokes)
    return downsample(image_map, grid), image_map


def _coverage(stroke: Stroke, height: int, width: int) -> np.ndarray:
    """Boolean H x W mask of pixel centres within ``stroke.radius`` of the stroke's polyline."""
    points = stroke.points
    segments = list(zip(points[:-1], points[1:])) or [(points[0], points[0])]
    mask = np.zeros((height, width), dtype=bool)
    r2 = stroke.radius**2
    for (r0, c0), (r1, c1) in segments:
        top = max(0, math.floor(min(r0, r1) - stroke.radius))
        bottom = min(height, math.ceil(max(r0, r1) + stroke.radius) + 1)
        left = max(0, math.floor(min(c0, c1) - stroke.radius))
        right = min(width, math.ceil(max(c0, c1) + stroke.radius) + 1)
        rows = np.arange(top, bottom, dtype=np.float64)[:, None]
        cols = np.arange(left, right, dtype=np.float64)[None, :]
        dr, dc = r1 - r0, c1 - c0
        length2 = dr * dr + dc * dc
        if length2 == 0:
            t = np.zeros((1, 1))
        else:
            t = np.clip(((rows - r0) * dr + (cols - c0) * dc) / length2, 0.0, 1.0)
        dist2 = (rows - (r0 + t * dr)) ** 2 + (cols - (c0 + t * dc)) ** 2
        mask[top:bottom, left:right] |= dist2 <= r2
    return mask


def _as_map(map: np.ndarray) -> np.ndarray:
    """``map`` as a C-contiguous float32 H x W array; ValueError unless finite and within [0, 1]."""
    array = np.ascontiguousarray(map, dtype=np.float32)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"attention map must be a non-empty H x W array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("attention map has non-finite values")
    if array.min() < 0 or array.max() > 1:
        raise ValueError(f"attention map values must be in [0, 1], got [{array.min()}, {array.max()}]")
    return array


def _size(name: str, size: tuple[int, int]) -> tuple[int, int]:
    """``size`` as (H, W) positive ints; ValueError otherwise."""
    try:
        height, width = size
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width), got {size!r}") from None
    if not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in (height, width)
    ):
        raise ValueError(f"{name} must be two positive ints, got {size!r}")
    return int(height), int(width)


def _number(name: str, value: Any) -> float:
    """``value`` as a float; ValueError for bools and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"stroke {name} must be a number, got {value!r}")
    return float(value)
