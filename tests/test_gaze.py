"""Algorithm 1 (gaze heat map) against scipy's blur of an explicit histogram."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from attnlib.data.gaze import default_blur_std, gaze_heatmap


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
