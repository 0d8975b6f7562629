"""Image rendering: anatomy, organ masks, class evidence and the cue tag.

A frontal radiograph (body, lungs, mediastinum, heart, spine, ribs, noise) with its masks, keyed
like :data:`attnlib.data.real.egd_cxr.MASK_FILES`; evidence is an enlarged heart for CHF and textured
opacities for pneumonia.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from attnlib.data.real.egd_cxr import LABEL_COLUMNS, MASK_FILES
from attnlib.data.synthetic.cxr.config import MAX_LEVEL, SyntheticCXRConfig, _rng


def _bbox(mask: np.ndarray) -> dict[str, int]:
    """Bounding box of a mask: first pixel and one past the last (``x2 - x1`` = width)."""
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return {"x1": int(xs[0]), "x2": int(xs[-1]) + 1, "y1": int(ys[0]), "y2": int(ys[-1]) + 1}


@dataclass
class _Drawn:
    """One rendered image with its masks, heart, evidence and cue tag position."""

    pixels: np.ndarray  # uint16 presentation values, bright = dense
    masks: dict[str, np.ndarray]  # MASK_FILES keys -> bool
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
    if LABEL_COLUMNS[label] == "CHF":
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
    for side, name in ((-1, "right_lung"), (1, "left_lung")):
        taper = au * (_LUNG_TAPER[0] + _LUNG_TAPER[1] * (v - vc) / bv)  # narrower apex, wider base
        shape = np.abs((u - side * uc) / taper) ** _LUNG_POWER + lung_v <= 1
        lungs[name] = shape & ~heart & ~band & ~knob & body
    lung = lungs["right_lung"] | lungs["left_lung"]

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
    if LABEL_COLUMNS[label] == "pneumonia":
        ev = _rng(seed, "evidence", i)
        depth = {name: _depth(mask) for name, mask in lungs.items()}
        for _ in range(int(ev.integers(1, 4))):
            name = ("right_lung", "left_lung")[int(ev.integers(2))]
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
    masks = {**lungs, "mediastinum": mediastinum, "aortic_knob": knob}
    return _Drawn(
        pixels, {name: masks[name] for name in MASK_FILES}, heart, float(ctr), opacities, boxes, cue_xy
    )

