"""Gaze simulation: planned fixations, raw 60 Hz samples, calibration screens, screen mapping."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from attnlib.data.real.egd_cxr import GAZE_COLUMNS, LABEL_COLUMNS
from attnlib.data.synthetic.cxr.anatomy import _Drawn
from attnlib.data.synthetic.cxr.config import _rng

SCREEN_W, SCREEN_H = 1920, 1080
GAZE_HZ = 60
IMAGES_PER_SESSION = 10


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
        """A ``rows`` x ``cols`` image scaled to fit the screen and centred (pads in screen pixels)."""
        scale = min(SCREEN_H / rows, SCREEN_W / cols)
        w, h = round(cols * scale), round(rows * scale)
        left, top = (SCREEN_W - w) // 2, (SCREEN_H - h) // 2
        return cls(rows, cols, left, SCREEN_W - w - left, top, SCREEN_H - h - top)

    @property
    def px_per_image_px(self) -> float:
        """Screen pixels per image pixel."""
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
    right, left = drawn.masks["right_lung"], drawn.masks["left_lung"]
    lung, heart = right | left, drawn.heart
    border = heart & ~ndimage.binary_erosion(heart, iterations=max(1, round(0.03 * cols)))
    fixes: list[tuple[float, float, int, bool]] = []
    for side in (right, left) if rng.random() < 0.5 else (left, right):
        levels = np.flatnonzero(side.any(axis=1))
        for frac in (0.15, 0.5, 0.85):
            r = int(levels[int(frac * (len(levels) - 1))])
            xs = np.flatnonzero(side[r])
            fixes.append((xs[int(len(xs) * rng.uniform(0.3, 0.7))] + 0.5, r + 0.5, _duration(rng), False))
    name = LABEL_COLUMNS[label]
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
                    "mediastinum": drawn.masks["mediastinum"],
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


def _gaze_samples(
    ids: list[str], gaze: dict[str, dict[str, np.ndarray]], screen: _Screen, seed: int
) -> pd.DataFrame:
    """Every sample of every session (a calibration screen, then up to 10 images), with ``_last``."""
    sessions = []
    order = _rng(seed, "sessions").permutation(len(ids))
    for s, start in enumerate(range(0, len(ids), IMAGES_PER_SESSION)):
        rng = _rng(seed, "sessions", s + 1)
        chunk = [ids[k] for k in order[start : start + IMAGES_PER_SESSION]]
        calib = (chunk[0][:39], _expand(_calibration(screen, rng), screen, rng))
        sessions.append(_session_rows(s + 1, [calib, *((d, gaze[d]) for d in chunk)], screen, rng))
    return pd.DataFrame({k: np.concatenate([s[k] for s in sessions]) for k in (*GAZE_COLUMNS, "_last")})
