"""Algorithm 1 (gaze heat map) against scipy's blur of an explicit histogram; the public code's recipe."""

import numpy as np
import pytest
from scipy.ndimage import correlate1d, gaussian_filter
from scipy.special import ndtr

from attnlib.data.real.gaze import (
    corner_grid,
    corner_positions,
    corner_sample,
    default_blur_std,
    gaze_heatmap,
    opencv_gaussian_kernel,
    opencv_kernel_size,
    opencv_sigma,
)


def _reference(x, y, w, shape, sigma, factor):
    """Histogram -> scipy Gaussian blur (zero outside) -> block mean by ``factor`` -> / max."""
    hist = np.zeros(shape)
    np.add.at(hist, (np.floor(y).astype(int), np.floor(x).astype(int)), w)
    blurred = gaussian_filter(hist, sigma, mode="constant", truncate=8.0)
    h, wd = shape
    blocks = blurred.reshape(h // factor, factor, wd // factor, factor).mean(axis=(1, 3))
    return blocks / blocks.max()


@pytest.mark.parametrize("factor", [1, 4])
def test_matches_histogram_blur_resample(factor):
    rng = np.random.default_rng(0)
    shape = (48, 40)
    x = rng.uniform(0, 40, 25)
    y = rng.uniform(0, 48, 25)
    w = rng.uniform(0.1, 0.8, 25)
    out = (shape[0] // factor, shape[1] // factor)
    got = gaze_heatmap(x, y, shape, weights=w, blur_std_px=4.0, out_shape=out)
    want = _reference(x, y, w, shape, 4.0, factor)
    assert got.shape == out
    # the closed form integrates the Gaussian over each pixel, scipy samples it at pixel centres:
    # they differ by < 0.005 here, while a 5 % error in sigma already gives > 0.06
    np.testing.assert_allclose(got, want, atol=5e-3)


def test_single_point_peak_and_symmetry():
    heat = gaze_heatmap([10.0], [20.0], (41, 21), blur_std_px=3.0)
    assert heat.max() == pytest.approx(1.0)
    assert np.unravel_index(heat.argmax(), heat.shape) == (20, 10)
    np.testing.assert_allclose(heat, heat[::-1, ::-1], atol=1e-6)  # centred point: symmetric map
    # Gaussian falloff one sigma away (cell-integrated, so close to exp(-1/2) but not equal)
    assert heat[20, 13] == pytest.approx(np.exp(-0.5), abs=0.03)


def test_duration_weighting_moves_the_peak():
    x, y = [5.0, 30.0], [5.0, 30.0]
    by_count = gaze_heatmap(x, y, (36, 36), blur_std_px=2.0)
    by_duration = gaze_heatmap(x, y, (36, 36), weights=[0.1, 0.9], blur_std_px=2.0)
    assert by_count[5, 5] == pytest.approx(by_count[30, 30], abs=1e-6)
    assert by_duration[30, 30] == pytest.approx(1.0)
    assert by_duration[5, 5] == pytest.approx(0.1 / 0.9, rel=1e-3)


def test_default_blur_scales_with_height():
    assert default_blur_std(3056) == pytest.approx(550.0)
    assert default_blur_std(1528) == pytest.approx(275.0)


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "message"),
    [
        ([], [], {}, "no gaze points"),
        ([50.0], [1.0], {}, "outside"),
        ([-1.0], [1.0], {}, "outside"),
        ([1.0], [1.0], {"weights": [-1.0]}, "non-negative"),
        ([1.0], [1.0], {"blur_std_px": 0.0}, "positive"),
        ([1.0], [1.0], {"weights": [0.0]}, "zero"),
    ],
)
def test_bad_input_is_named(x, y, kwargs, message):
    with pytest.raises(ValueError, match=message):
        gaze_heatmap(x, y, (10, 10), **kwargs)


def test_default_recipe_is_unchanged():
    # one point in the middle of a 3x3 image, std 1: per axis g(d) = Phi(d + 1/2) - Phi(d - 1/2), divided by g(0)
    heat = gaze_heatmap([1.0], [1.0], (3, 3), blur_std_px=1.0)
    edge, corner = 0.6312734513, 0.6312734513**2  # g(1) / g(0) = 0.2417303 / 0.3829249
    want = np.array([[corner, edge, corner], [edge, 1.0, edge], [corner, edge, corner]])
    np.testing.assert_allclose(heat, want, rtol=1e-6)
    explicit = gaze_heatmap([1.0], [1.0], (3, 3), blur_std_px=1.0, blur_units="std", resample="area")
    np.testing.assert_array_equal(explicit, heat)


@pytest.mark.parametrize(
    ("ksize", "sigma"), [(3, 0.8), (5, 1.1), (7, 1.4), (9, 1.7), (501, 75.5), (551, 83.0)]
)
def test_opencv_sigma_rule(ksize, sigma):
    assert opencv_sigma(ksize) == pytest.approx(sigma, abs=1e-12)  # 0.3 ((ksize - 1) / 2 - 1) + 0.8


@pytest.mark.parametrize("ksize", [500, 0, -3, 2.5])
def test_opencv_sigma_refuses_what_opencv_refuses(ksize):
    with pytest.raises(ValueError, match="odd positive"):
        opencv_sigma(ksize)


@pytest.mark.parametrize(("blur", "ksize"), [(500, 501), (550, 551), (501, 501), (184.3, 185), (1, 1)])
def test_kernel_size_is_b_plus_one(blur, ksize):
    assert opencv_kernel_size(blur) == ksize


def test_opencv_kernel_table_and_rule():
    np.testing.assert_array_equal(opencv_gaussian_kernel(3), [0.25, 0.5, 0.25])  # OpenCV's fixed table
    k = opencv_gaussian_kernel(9)  # sigma 1.7, cut at +-4, renormalised
    assert k.shape == (9,) and k.sum() == pytest.approx(1.0)
    assert k[4] / k[5] == pytest.approx(np.exp(1 / (2 * 1.7**2)))  # exp(0.17301) = 1.18888
    assert k[0] / k[4] == pytest.approx(np.exp(-16 / (2 * 1.7**2)))  # exp(-2.76817) = 0.06278


def test_opencv_blur_is_cut_at_half_the_kernel():
    # B = 10: kernel 11 (+-5 px), sigma 2; one point, one cell per pixel
    heat = gaze_heatmap(
        [20.0], [10.0], (21, 41), blur_std_px=10, out_shape=(21, 41), blur_units="opencv_kernel"
    )
    d = np.arange(-5, 6)
    np.testing.assert_allclose(heat[10, 15:26], np.exp(-(d**2) / 8), rtol=1e-6)
    np.testing.assert_allclose(heat[5:16, 20], np.exp(-(d**2) / 8), rtol=1e-6)
    assert heat[10, 15] == pytest.approx(0.0439369, rel=1e-5)  # exp(-25 / 8)
    assert heat[10, :15].max() == 0 and heat[10, 26:].max() == 0 and heat[:5].max() == 0
    assert gaze_heatmap([20.0], [10.0], (21, 41), blur_std_px=2.0)[10, 14] > 0  # the paper's std: no cut


def test_opencv_blur_mirrors_at_the_border():
    # BORDER_REFLECT_101: a point at x = 1 reappears at x = -1, so pixel 0 gets 2 k(1) and is the peak
    heat = gaze_heatmap([1.0], [0.0], (1, 20), blur_std_px=10, blur_units="opencv_kernel")[0]
    k = np.exp(-(np.arange(8) ** 2) / 8)  # sigma 2, unnormalised
    assert heat[0] == pytest.approx(1.0)
    assert heat[1] == pytest.approx((k[0] + k[2]) / (2 * k[1]), rel=1e-6)  # 0.91022
    assert heat[2] == pytest.approx((k[1] + k[3]) / (2 * k[1]), rel=1e-6)  # 0.68394


def _explicit_opencv(x, y, w, shape, blur, out=None, pad=None, stride=None):
    """Histogram -> separable OpenCV kernel with scipy's "mirror" border (= BORDER_REFLECT_101) ->
    block mean by whole cells, or zero padding and corner samples -> / max."""
    hist = np.zeros(shape)
    np.add.at(hist, (np.floor(y).astype(int), np.floor(x).astype(int)), w)
    k = opencv_gaussian_kernel(opencv_kernel_size(blur))
    blurred = correlate1d(correlate1d(hist, k, axis=0, mode="mirror"), k, axis=1, mode="mirror")
    if pad is None:
        h, wd = shape
        blurred = blurred.reshape(out[0], h // out[0], out[1], wd // out[1]).mean(axis=(1, 3))
    else:
        padded = np.zeros(pad)
        top, left = (pad[0] - shape[0]) // 2, (pad[1] - shape[1]) // 2
        padded[top : top + shape[0], left : left + shape[1]] = blurred
        blurred = padded[::stride, ::stride]
    return blurred / blurred.max()


@pytest.mark.parametrize("blur", [10, 30, 120])  # 120: the kernel (+-60 px) is wider than the image
@pytest.mark.parametrize("resample", ["area", "public_corner"])
def test_opencv_recipe_matches_explicit_blur(blur, resample):
    rng = np.random.default_rng(1)
    shape = (48, 40)
    x, y, w = rng.uniform(0, 40, 20), rng.uniform(0, 48, 20), rng.uniform(0.1, 1.0, 20)
    if resample == "area":
        kwargs, want = {"out_shape": (12, 10)}, _explicit_opencv(x, y, w, shape, blur, out=(12, 10))
    else:
        kwargs = {"corner_pad": (52, 45), "corner_stride": 4}
        want = _explicit_opencv(x, y, w, shape, blur, pad=(52, 45), stride=4)
    got = gaze_heatmap(
        x, y, shape, weights=w, blur_std_px=blur, blur_units="opencv_kernel", resample=resample, **kwargs
    )
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_corner_positions():
    assert corner_positions(5, 8, 2).tolist() == [-1, 1, 3, -1]  # 1 row of padding before: -1, 1, 3, 5
    public = corner_positions(3056, 3072, 64)  # the public code: 8 rows of padding before the DICOM
    assert len(public) == 48 and public[0] == -1 and public[1] == 56 and public[-1] == 3000


def test_corner_sample_reads_the_top_left_of_each_cell():
    values = 10 * np.arange(6)[:, None] + np.arange(5)[None, :] + 1.0  # row r, column c -> 10 r + c + 1
    got = corner_sample(values, pad=(8, 8), stride=2)  # 1 row and 1 column of padding before the map
    want = [[0, 0, 0, 0], [0, 12, 14, 0], [0, 32, 34, 0], [0, 52, 54, 0]]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(
        corner_sample(values, (3, 3), pad=None, stride=2), values[::2, ::2]
    )  # pad 6x6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"out_shape": (4, 3), "pad": (8, 8), "stride": 2}, "gives a 4x4 grid, not the requested 4x3"),
        ({"out_shape": None, "pad": (4, 8), "stride": 2}, "pad at least the map's size"),
        ({"out_shape": None, "pad": None, "stride": 2}, "needs the output grid"),
    ],
)
def test_corner_grid_refuses_mismatches(kwargs, message):
    with pytest.raises(ValueError, match=message):
        corner_grid((6, 5), **kwargs)


def test_std_blur_with_corner_samples():
    # the paper's blur read at the corners: pixel integrals of the Gaussian at rows -1 1 3 5 and columns -1 1 3 -1
    heat = gaze_heatmap(
        [3.0], [4.0], (6, 5), blur_std_px=1.5, resample="public_corner", corner_pad=(8, 8), corner_stride=2
    )

    def g(i, c):
        return ndtr((i + 0.5 - c) / 1.5) - ndtr((i - 0.5 - c) / 1.5)

    rows, cols = np.array([0, g(1, 4), g(3, 4), g(5, 4)]), np.array([0, g(1, 3), g(3, 3), 0])
    want = np.outer(rows, cols)
    np.testing.assert_allclose(heat, want / want.max(), rtol=1e-6)


def test_public_recipe_on_the_real_geometry():
    # B = 500 -> kernel 501, sigma 75.5 (+-250 px); 3056 x 2544 padded to 3072 x 2560, read every 64 px
    heat = gaze_heatmap(
        [1272.0],
        [1528.0],
        (3056, 2544),
        blur_std_px=500,
        blur_units="opencv_kernel",
        resample="public_corner",
    )
    assert heat.shape == (48, 40)
    assert heat[0].max() == 0 and heat[:, 0].max() == 0
    assert heat[24, 20] == pytest.approx(1.0)  # the point sits exactly on the sample 24 * 64 - 8 = 1528
    assert heat[24, 21] == pytest.approx(0.698177, rel=1e-5)  # exp(-64^2 / (2 * 75.5^2))
    assert heat[27, 20] == pytest.approx(0.039418, rel=1e-4)  # 192 px: exp(-192^2 / (2 * 75.5^2))
    assert heat[28, 20] == 0 and heat[24, 24] == 0  # 256 px: beyond the kernel's 250
