"""Human-map sources of the ABN paper: bubble KDE, lesion maps, the simulated editor."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attnlib.editing import edit_map
from attnlib.map_sources import bubble_frame, bubble_map, lesion_map, simulate_edit


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
    rows, cols = np.mgrid[0:4, 0:10]
    density = np.exp(-0.5 * ((rows - 2) / 1.0) ** 2 - 0.5 * ((cols - 5) / 1.0) ** 2)
    np.testing.assert_allclose(out, density / density.max(), rtol=1e-5)


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
