"""ClickMe-style maps from bubbles, the inter-rater halves, the box control, and the alignment metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import top_k_accuracy_score

from attnlib.data.maps.sources import bounding_box_map, bubble_frame, clickme_map, player_halves
from attnlib.data.real.clickme import blur_map
from attnlib.evaluation.metrics import classification_metrics, human_alignment, spearman_per_image


def test_clickme_map_counts_covering_discs():
    bubbles = bubble_frame([("a", "p1", 2.0, 3.0, 1.0), ("a", "p2", 3.0, 3.0, 1.0)])
    counts = clickme_map(bubbles, (6, 7))
    assert counts.shape == (6, 7) and counts.dtype == np.float32
    # disc 1: centre (row 3, col 2); disc 2: centre (row 3, col 3); radius 1 (4-neighbours + centre)
    assert counts[3, 2] == 2 and counts[3, 3] == 2  # each centre is inside the other's disc
    assert counts[3, 1] == 1 and counts[3, 4] == 1 and counts[2, 2] == 1 and counts[2, 3] == 1
    assert counts.sum() == 10 and counts[0].sum() == 0
    blurred = clickme_map(bubbles, (6, 7), blur_kernel=5)
    torch.testing.assert_close(torch.from_numpy(blurred), blur_map(torch.from_numpy(counts)[None], 5)[0])
    assert clickme_map(bubbles.iloc[:0], (4, 4)).sum() == 0
    with pytest.raises(ValueError, match="odd"):
        clickme_map(bubbles, (6, 7), blur_kernel=4)
    with pytest.raises(KeyError, match="radius"):
        clickme_map(bubbles.drop(columns="radius"), (6, 7))


def test_player_halves_are_disjoint_and_cover_everyone():
    bubbles = bubble_frame([("a", f"w{i % 5}", float(i), 1.0, 1.0) for i in range(10)])
    first, second = player_halves(bubbles)
    assert set(first["worker"]) == {"w0", "w2", "w4"} and set(second["worker"]) == {"w1", "w3"}
    assert len(first) + len(second) == len(bubbles)
    with pytest.raises(ValueError, match="at least 2 players"):
        player_halves(bubbles[bubbles["worker"] == "w0"])


def test_bounding_box_map():
    human = np.zeros((6, 8), np.float32)
    human[1, 2], human[4, 5], human[5, 7] = 1.0, 0.5, 0.05
    box = bounding_box_map(human, threshold=0.1)
    expected = np.zeros_like(human)
    expected[1:5, 2:6] = 1  # 0.05 is below 10 % of the maximum
    np.testing.assert_array_equal(box, expected)
    assert bounding_box_map(np.zeros((3, 3))).sum() == 0


def test_spearman_per_image_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.random((5, 4, 6))
    b = a + rng.normal(scale=0.3, size=a.shape)
    b[2] = np.round(b[2], 1)  # ties
    rho = spearman_per_image(a, b)
    expected = [spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(5)]
    np.testing.assert_allclose(rho, expected, rtol=1e-12)
    a[3] = 1.0
    assert np.isnan(spearman_per_image(a, b)[3])
    with pytest.raises(ValueError, match="one shape"):
        spearman_per_image(a, b[:, :2])


def test_human_alignment_fraction_and_null():
    rng = np.random.default_rng(1)
    human = rng.random((6, 5, 5))
    perfect = human_alignment(2 * human + 1, human, ceiling=0.5)
    assert perfect["rho"] == pytest.approx(1.0) and perfect["fraction_of_ceiling"] == pytest.approx(2.0)
    assert abs(perfect["null_rho"]) < 0.5 and perfect["n"] == 6 and perfect["n_undefined"] == 0
    # the null pairs every model map with another image's human map
    shift_null = human_alignment(human, human, ceiling=1.0, seed=3)["null_rho"]
    assert shift_null < 0.5
    with pytest.raises(ValueError, match="ceiling"):
        human_alignment(human, human, ceiling=0)


def test_top5_accuracy_in_classification_metrics():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(8), size=40)
    labels = rng.integers(0, 8, size=40)
    out = classification_metrics(labels, probs, [f"c{i}" for i in range(8)])
    assert out["top5_accuracy"] == pytest.approx(top_k_accuracy_score(labels, probs, k=5, labels=range(8)))
    assert "top5_accuracy" not in classification_metrics(
        labels % 3, rng.dirichlet(np.ones(3), 40), ["a", "b", "c"]
    )
