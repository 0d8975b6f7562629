"""Human-map sources of the ABN paper: bubble KDE, lesion maps, the simulated editor."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attnlib.data.maps.editing import edit_map
from attnlib.data.maps.sources import bubble_frame, bubble_map, lesion_map, simulate_edit


def test_bubble_map_is_a_sum_of_gaussians_with_the_bubble_radius_as_sigma():
    bubbles = bubble_frame([("img", "w0", 3.0, 2.0, 1.5), ("img", "w1", 7.0, 6.0, 2.0)])
    out = bubble_map(bubbles, (10, 12))
    rows, cols = np.mgrid[0:10, 0:12]
    density = (np.exp(-((rows - 2) ** 2 + (cols - 3) ** 2) / (2 * 1.5**2))
               + np.exp(-((rows - 6) ** 2 + (cols - 7) ** 2) / (2 * 2.0**2)))
    np.testing.assert_allclose(out, density / density.max(), rtol=1e-5)
    assert out.dtype == np.float32 and out.max() == pytest.approx(1.0)


def test_bubble_map_fixed_bandwidth_and_rescaled_output():
    bubbles = bubble_frame([("img", "w0", 50.0, 20.0, 5.0)])
    out = bubble_map(bubbles, (40, 100), bandwidth=10.0, out_size=(4, 10))
    # scale 0.1 both ways: centre ((20 + 0.5) * 0.1 - 0.5, (50 + 0.5) * 0.1 - 0.5) = (1.55, 4.55), sigma 1;
    # the nearest cell (2, 5) is 0.45 off in each direction, so it holds the maximum
    rows, cols = np.mgrid[0:4, 0:10]
    density = np.exp(-0.5 * ((rows - 1.55) ** 2 + (cols - 4.55) ** 2))
    np.testing.assert_allclose(out, density / np.exp(-0.45**2), rtol=1e-5)
    assert out[2, 5] == pytest.approx(1.0)


def test_rescaled_bubble_map_keeps_pixel_centres_on_cell_centres():
    # 224 -> 14: cell 7 holds image pixels 112-127, its centre is the image point 119.5
    bubbles = bubble_frame([("img", "w0", 119.5, 119.5, 16.0)])
    out = bubble_map(bubbles, (224, 224), out_size=(14, 14))
    assert out[7, 7] == pytest.approx(1.0)
    for neighbour in ((7, 6), (7, 8), (6, 7), (8, 7)):  # one cell = one sigma (16 px / 16) away
        assert out[neighbour] == pytest.approx(np.exp(-0.5), rel=1e-5)
    # 100 x 200 (H x W) -> 10 x 10: cells of 10 rows x 20 columns, cell (2, 2) centred on (24.5, 49.5);
    # a radius of 20 px is sigma 2 cells down and 1 cell across
    out = bubble_map(bubble_frame([("img", "w0", 49.5, 24.5, 20.0)]), (100, 200), out_size=(10, 10))
    assert out[2, 2] == pytest.approx(1.0)
    assert out[2, 1] == pytest.approx(np.exp(-0.5), rel=1e-5) and out[2, 3] == pytest.approx(out[2, 1])
    assert out[1, 2] == pytest.approx(np.exp(-0.125), rel=1e-5) and out[3, 2] == pytest.approx(out[1, 2])


def test_bubble_map_weighting_peak_or_mass():
    # radius 1 at (row 15, col 8) and radius 2 at (row 15, col 30), 22 px apart: the tails do not reach
    bubbles = bubble_frame([("img", "w0", 8.0, 15.0, 1.0), ("img", "w1", 30.0, 15.0, 2.0)])
    peak = bubble_map(bubbles, (31, 45))
    assert peak[15, 8] == pytest.approx(1.0) and peak[15, 30] == pytest.approx(1.0)
    # unit peaks: masses 2 pi sigma^2 = 2 pi and 8 pi, so the larger bubble holds 4 / 5 of the map
    assert peak.sum() == pytest.approx(10 * np.pi, rel=1e-5)
    assert peak[:, 20:].sum() == pytest.approx(8 * np.pi, rel=1e-5)
    mass = bubble_map(bubbles, (31, 45), weighting="mass")
    # unit masses: peaks 1 / (2 pi) and 1 / (8 pi), divided by the larger; each bubble holds half the map
    assert mass[15, 8] == pytest.approx(1.0) and mass[15, 30] == pytest.approx(0.25, rel=1e-5)
    assert mass.sum() == pytest.approx(4 * np.pi, rel=1e-5)
    assert mass[:, 20:].sum() == pytest.approx(2 * np.pi, rel=1e-5)
    # a fixed bandwidth gives every bubble the same sigma: both weightings agree
    np.testing.assert_allclose(bubble_map(bubbles, (31, 45), bandwidth=3.0, weighting="mass"),
                               bubble_map(bubbles, (31, 45), bandwidth=3.0), rtol=1e-6)
    with pytest.raises(ValueError, match="weighting"):
        bubble_map(bubbles, (31, 45), weighting="area")  # type: ignore[arg-type]


def test_bubble_map_edge_cases():
    empty = bubble_map(bubble_frame([]), (5, 5))
    assert empty.shape == (5, 5) and not empty.any()
    with pytest.raises(KeyError, match="radius"):
        bubble_map(pd.DataFrame({"x": [1.0], "y": [1.0]}), (5, 5))
    with pytest.raises(ValueError, match="radii"):
        bubble_map(bubble_frame([("i", "w", 1.0, 1.0, 0.0)]), (5, 5))


def test_lesion_map_is_the_cell_fraction_over_its_maximum():
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[0, 0] = 76  # one pixel of cell (0, 0): fraction 1/4
    mask[2:4, 2:4] = 255  # all of cell (1, 1): fraction 1
    np.testing.assert_allclose(lesion_map(mask, (2, 2)), [[0.25, 0.0], [0.0, 1.0]])
    assert not lesion_map(np.zeros((4, 4)), (2, 2)).any()


def test_simulated_editor_paints_the_evidence_and_erases_elsewhere():
    evidence = np.zeros((48, 48), dtype=bool)
    evidence[6:12, 6:12] = True
    network = np.zeros((6, 6), dtype=np.float32)
    network[4:6, 4:6] = 1.0  # the network attends to the bottom-right corner only
    edited, strokes = simulate_edit(network, evidence, budget=3)
    assert strokes[0].mode == "add" and all(s.mode == "remove" for s in strokes[1:])
    assert len(strokes) >= 2
    replay, image_map = edit_map(network, (48, 48), strokes)
    np.testing.assert_array_equal(replay, edited)  # the strokes replay the edit exactly
    assert image_map[evidence].min() == 1.0  # every evidence pixel painted in
    assert edited[1, 1] > network[1, 1]  # the cell holding most of the evidence gains attention
    assert edited[4:6, 4:6].mean() < 0.5 * network[4:6, 4:6].mean()  # attention outside mostly erased


def test_simulated_editor_stops_when_nothing_is_left_outside():
    evidence = np.zeros((32, 32), dtype=bool)
    evidence[10:14, 10:14] = True
    edited, strokes = simulate_edit(np.zeros((4, 4), np.float32), evidence, budget=5)
    assert len(strokes) == 1
    with pytest.raises(ValueError, match="non-empty"):
        simulate_edit(np.zeros((4, 4), np.float32), np.zeros((32, 32), bool))
