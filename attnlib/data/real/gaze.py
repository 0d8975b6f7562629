"""Gaze heat maps: GG-CAM's Algorithm 1 (histogram -> Gaussian blur -> resample -> [0, 1]).

The blur of a point histogram followed by resampling is evaluated per axis, without materialising
a blur over a ~3000 x 2500 grid with a kernel of hundreds of pixels (B = 500-600 px on a full-size
DICOM): a sum of weighted points blurs into a sum of separable profiles, one per point and axis.

- The paper's recipe (default): B is the Gaussian's std; each point's Gaussian is integrated over
  every output cell (a difference of normal CDFs), which equals
  ``scipy.ndimage.gaussian_filter(hist, B, mode="constant")`` followed by block averaging (tested).
- The authors' public code (``blur_units="opencv_kernel"``, ``resample="public_corner"``): B + 1 is
  passed to ``cv2.GaussianBlur`` as the kernel size with sigma 0, so OpenCV derives sigma ~ 0.15 B
  (:func:`opencv_sigma`), cuts the kernel at +-B/2 and mirrors the image at its border
  (``BORDER_REFLECT_101``); the blurred map is padded centrally to 3072 x 2560 and read every 64 px
  from pixel 0, the top-left corner of each CNN cell (:func:`corner_positions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Literal, get_args

import numpy as np
from scipy.special import ndtr

#: Table 1 of GG-CAM uses B = 500-600 px on ~3056-px-high DICOMs; the default scales that to the image.
REFERENCE_BLUR_PX = 550.0
REFERENCE_HEIGHT_PX = 3056.0
#: The public code's resampling: the blurred map padded centrally to this (H, W) in original pixels...
PUBLIC_PAD = (3072, 2560)
#: ...and read every this many pixels from pixel 0 (2x downsampling times the CNN's stride 32).
PUBLIC_STRIDE = 64
#: OpenCV's fixed kernels for kernel sizes up to 7 with sigma <= 0 (``small_gaussian_tab`` of
#: ``cv::getGaussianKernel``), used instead of the sigma rule there.
OPENCV_SMALL_KERNELS = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}

#: What B means: the Gaussian's std (the paper), or (B + 1) as OpenCV's kernel size (the public code).
BlurUnits = Literal["std", "opencv_kernel"]
#: Blurred map -> CNN grid: mean over each cell (the project), or the public code's corner point samples.
Resample = Literal["area", "public_corner"]


def default_blur_std(image_height: int) -> float:
    """Blur std in pixels for an image of this height: 550 px at the real DICOMs' 3056 px, scaled."""
    return REFERENCE_BLUR_PX * image_height / REFERENCE_HEIGHT_PX


def opencv_sigma(kernel_size: int) -> float:
    """The std OpenCV derives from a kernel size when given sigma <= 0: 0.3 ((ksize - 1) / 2 - 1) + 0.8.

    The rule of ``cv::getGaussianKernel`` (OpenCV documentation), which ``cv::GaussianBlur`` applies.
    """
    _check_kernel_size(kernel_size)
    return 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8


def opencv_kernel_size(blur_px: float) -> int:
    """The kernel size the public code gives OpenCV for B: B + 1 for an even integer B, 2 floor(B / 2) + 1 in
    general (the odd size at or below B + 1: OpenCV refuses even sizes)."""
    if blur_px <= 0:
        raise ValueError(f"the blur B must be positive, got {blur_px}")
    return 2 * int(np.floor(blur_px / 2)) + 1


def opencv_gaussian_kernel(kernel_size: int) -> np.ndarray:
    """``cv::getGaussianKernel(ksize, 0)`` in float64: exp(-x^2 / (2 sigma^2)) for x = -(ksize - 1)/2 ...
    (ksize - 1)/2 with sigma = :func:`opencv_sigma`, divided by its sum (a truncated, renormalised
    Gaussian); the fixed :data:`OPENCV_SMALL_KERNELS` for ksize <= 7."""
    _check_kernel_size(kernel_size)
    if kernel_size in OPENCV_SMALL_KERNELS:
        return np.array(OPENCV_SMALL_KERNELS[kernel_size])
    x = np.arange(kernel_size) - (kernel_size - 1) / 2
    kernel = np.exp(-0.5 * (x / opencv_sigma(kernel_size)) ** 2)
    return kernel / kernel.sum()


def _check_kernel_size(kernel_size: int) -> None:
    if int(kernel_size) != kernel_size or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"OpenCV kernel sizes are odd positive integers, got {kernel_size}")


def corner_positions(extent: int, pad: int, stride: int) -> np.ndarray:
    """The public code's point samples along one axis, as pixel indices of the unpadded map (-1: padding).

    The map (``extent`` pixels) is padded to ``pad`` pixels, ``(pad - extent) // 2`` of them before it,
    and read at padded pixels 0, stride, 2 stride, ... below ``pad``: ceil(pad / stride) samples.
    """
    if stride < 1 or pad < extent:
        raise ValueError(
            f"corner sampling needs a stride >= 1 and a pad at least the map's size, got stride {stride}, "
            f"pad {pad} for {extent} pixels"
        )
    index = np.arange(0, pad, stride) - (pad - extent) // 2
    return np.where((index >= 0) & (index < extent), index, -1)


def corner_pad_shape(
    out_shape: tuple[int, int] | None, pad: tuple[int, int] | None, stride: int
) -> tuple[int, int]:
    """The padded (H, W): ``pad``, or ``out_shape * stride`` when ``pad`` is None (the public 3072 x 2560 is
    its 48 x 40 grid times 64)."""
    if pad is not None:
        return pad[0], pad[1]
    if out_shape is None:
        raise ValueError("corner sampling without a pad needs the output grid (pad = grid * stride)")
    return out_shape[0] * stride, out_shape[1] * stride


def corner_grid(
    image_shape: tuple[int, int],
    out_shape: tuple[int, int] | None,
    pad: tuple[int, int] | None = PUBLIC_PAD,
    stride: int = PUBLIC_STRIDE,
) -> tuple[np.ndarray, np.ndarray]:
    """Row and column :func:`corner_positions` for a map of ``image_shape`` padded to :func:`corner_pad_shape`.

    Raises ``ValueError`` when ``out_shape`` is given and is not the grid the pad and stride make.
    """
    pad = corner_pad_shape(out_shape, pad, stride)
    rows = corner_positions(image_shape[0], pad[0], stride)
    cols = corner_positions(image_shape[1], pad[1], stride)
    if out_shape is not None and (len(rows), len(cols)) != tuple(out_shape):
        raise ValueError(
            f"corner sampling of a {pad[0]}x{pad[1]} pad every {stride} px gives a {len(rows)}x{len(cols)} "
            f"grid, not the requested {out_shape[0]}x{out_shape[1]}: set the pad to grid * stride (or None)"
        )
    return rows, cols


def corner_sample(
    values: np.ndarray,
    out_shape: tuple[int, int] | None = None,
    pad: tuple[int, int] | None = PUBLIC_PAD,
    stride: int = PUBLIC_STRIDE,
) -> np.ndarray:
    """The public code's resampling of a 2-D map (e.g. an organ mask): pad centrally with zeros to ``pad``
    and take every ``stride``-th pixel from pixel 0 (:func:`corner_grid`); float32."""
    if values.ndim != 2:
        raise ValueError(f"corner sampling takes a 2-D map, got shape {values.shape}")
    rows, cols = corner_grid((values.shape[0], values.shape[1]), out_shape, pad, stride)
    out = np.zeros((len(rows), len(cols)), dtype=np.float32)
    r, c = rows >= 0, cols >= 0
    out[np.ix_(r, c)] = values[np.ix_(rows[r], cols[c])]
    return out


def _cell_weights(coords: np.ndarray, extent: int, n_out: int, sigma: float) -> np.ndarray:
    """Mean of a unit Gaussian centred at each pixel index over each output cell: (n_out, n_points).

    Input pixel ``k`` covers ``[k - 0.5, k + 0.5)``; output cell ``j`` covers ``extent / n_out`` of them.
    """
    edges = np.linspace(0.0, extent, n_out + 1) - 0.5
    cdf = ndtr((edges[:, None] - coords[None, :]) / sigma)
    return np.diff(cdf, axis=0) * (n_out / extent)


def _pixel_weights(coords: np.ndarray, positions: np.ndarray, sigma: float) -> np.ndarray:
    """A unit Gaussian centred at each pixel index, integrated over the pixels ``positions`` (-1: zero)."""
    pixel = positions[:, None].astype(np.float64)
    weights = ndtr((pixel + 0.5 - coords[None, :]) / sigma) - ndtr((pixel - 0.5 - coords[None, :]) / sigma)
    return np.where(positions[:, None] >= 0, weights, 0.0)


def _reflect101(index: np.ndarray, extent: int) -> np.ndarray:
    """OpenCV's ``BORDER_REFLECT_101`` (``dcb|abcd|cba``, repeated): the pixel each index reads."""
    if extent == 1:
        return np.zeros_like(index)
    period = 2 * (extent - 1)
    index = np.abs(index) % period
    return np.where(index > extent - 1, period - index, index)


@lru_cache(maxsize=32)
def _opencv_operator(extent: int, kernel_size: int, n_out: int, corner: tuple[int, int] | None) -> np.ndarray:
    """Sampler times blur along one axis, (n_out, extent), read-only: column j is the OpenCV blur (reflect-101
    border) of a unit impulse at pixel j, averaged over each cell (``corner`` None) or read at the
    corner samples (``corner`` = (pad, stride))."""
    if corner is None:
        edges = np.linspace(0.0, extent, n_out + 1) - 0.5
        pixel = np.arange(extent)
        overlap = np.minimum(edges[1:, None], pixel + 0.5) - np.maximum(edges[:-1, None], pixel - 0.5)
        sampler = np.clip(overlap, 0.0, None) * (n_out / extent)
    else:
        positions = corner_positions(extent, *corner)
        sampler = np.zeros((n_out, extent))
        inside = positions >= 0
        sampler[np.flatnonzero(inside), positions[inside]] = 1.0
    # blur: out[i] = sum_d k[d] hist[reflect(i + d)], so (S B)[o, j] = sum of (S[o] * k)(m) over the padded
    # positions m = -r .. extent - 1 + r with reflect(m) = j: convolve each sampler row with k (symmetric)
    # over its nonzero span, then fold the padded positions onto the pixels they mirror
    radius = kernel_size // 2
    kernel = opencv_gaussian_kernel(kernel_size)
    full = np.zeros((n_out, extent + 2 * radius))
    for row, weights in zip(full, sampler, strict=True):
        nonzero = np.flatnonzero(weights)
        if nonzero.size:
            lo, hi = nonzero[0], nonzero[-1] + 1
            row[lo : hi + 2 * radius] = np.convolve(weights[lo:hi], kernel)
    operator = np.zeros((n_out, extent))
    np.add.at(operator.T, _reflect101(np.arange(-radius, extent + radius), extent), full.T)
    operator.setflags(write=False)
    return operator


def _axis_weights(
    coords: np.ndarray,
    extent: int,
    n_out: int,
    blur: float,
    blur_units: BlurUnits,
    corner: tuple[int, int] | None,
) -> np.ndarray:
    """(n_out, n_points): each point's blurred profile along one axis, averaged over the cells (``corner``
    None) or read at the corner samples (``corner`` = (pad, stride))."""
    if blur_units == "opencv_kernel":
        return _opencv_operator(extent, opencv_kernel_size(blur), n_out, corner)[:, coords.astype(np.intp)]
    if corner is None:
        return _cell_weights(coords, extent, n_out, blur)
    return _pixel_weights(coords, corner_positions(extent, *corner), blur)


def gaze_heatmap(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    image_shape: tuple[int, int],
    *,
    weights: Sequence[float] | np.ndarray | None = None,
    blur_std_px: float | None = None,
    out_shape: tuple[int, int] | None = None,
    blur_units: BlurUnits = "std",
    resample: Resample = "area",
    corner_pad: tuple[int, int] | None = PUBLIC_PAD,
    corner_stride: int = PUBLIC_STRIDE,
) -> np.ndarray:
    """Visual heat map Psi of GG-CAM (Algorithm 1).

    Points ``(x, y)`` in the image's pixel coordinates (column, row) are binned on the image's
    pixel grid (``floor``), weighted by ``weights`` (e.g. fixation durations; default: counts),
    blurred with B = ``blur_std_px`` (default :func:`default_blur_std`), resampled to ``out_shape``
    and divided by the maximum, so the map lies in [0, 1].

    ``blur_units``: ``"std"`` (the paper) blurs with a Gaussian of std B, the image outside its border
    counting as empty; ``"opencv_kernel"`` (the public code) blurs as ``cv2.GaussianBlur`` with
    kernel size :func:`opencv_kernel_size` (B + 1) and sigma 0: :func:`opencv_gaussian_kernel`, mirrored
    at the border (``BORDER_REFLECT_101``), in float (an 8-bit input would get OpenCV's fixed-point
    kernel and rounding). ``resample``: ``"area"`` averages each of the
    ``out_shape`` cells (default: the image shape); ``"public_corner"`` pads the blurred map centrally
    with zeros to ``corner_pad`` and reads every ``corner_stride`` px (:func:`corner_grid`; ``out_shape``,
    when given, must be that grid). A pixel's value under ``"std"`` is the Gaussian's integral over it.

    Raises ``ValueError`` if there are no points, a point lies outside the image, a weight is negative,
    or the map is zero at every output cell.
    """
    xs = np.floor(np.asarray(x, dtype=np.float64))
    ys = np.floor(np.asarray(y, dtype=np.float64))
    height, width = image_shape
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {xs.shape} and {ys.shape}")
    if xs.size == 0:
        raise ValueError("no gaze points: a heat map needs at least one")
    outside = (xs < 0) | (xs >= width) | (ys < 0) | (ys >= height)
    if outside.any():
        raise ValueError(
            f"{int(outside.sum())} gaze points lie outside the {height}x{width} image "
            f"(x in [{xs.min():.0f}, {xs.max():.0f}], y in [{ys.min():.0f}, {ys.max():.0f}])"
        )
    w = np.ones_like(xs) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != xs.shape:
        raise ValueError(f"weights shape {w.shape} does not match the {xs.shape} points")
    if (w < 0).any() or not np.isfinite(w).all():
        raise ValueError("weights must be finite and non-negative")
    blur = default_blur_std(height) if blur_std_px is None else float(blur_std_px)
    if blur <= 0:
        raise ValueError(f"blur_std_px must be positive, got {blur_std_px}")
    if blur_units not in get_args(BlurUnits) or resample not in get_args(Resample):
        raise ValueError(
            f"blur_units must be one of {get_args(BlurUnits)} and resample one of {get_args(Resample)}, "
            f"got {blur_units!r} and {resample!r}"
        )
    if resample == "public_corner":
        pad = corner_pad_shape(out_shape, corner_pad, corner_stride)
        rows_at, cols_at = corner_grid(image_shape, out_shape, pad, corner_stride)
        out_h, out_w = len(rows_at), len(cols_at)
        row_corner, col_corner = (pad[0], corner_stride), (pad[1], corner_stride)
    else:
        out_h, out_w = out_shape if out_shape is not None else image_shape
        row_corner = col_corner = None
    rows = _axis_weights(ys, height, out_h, blur, blur_units, row_corner)
    cols = _axis_weights(xs, width, out_w, blur, blur_units, col_corner)
    heat = (rows * w[None, :]) @ cols.T
    peak = heat.max()
    if peak <= 0:
        raise ValueError(
            "the heat map is zero everywhere: all gaze weights are zero, or the blur reaches no output cell"
        )
    return (heat / peak).astype(np.float32)
