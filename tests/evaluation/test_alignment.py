"""Split-half inter-rater reliability: identical halves give 1, the shuffled null, and the metric's derangement."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from attnlib.data.maps.sources import bubble_frame, clickme_map, player_halves
from attnlib.data.synthetic.finegrained import FineGrainedConfig, FineGrainedDataset, generate_finegrained
from attnlib.evaluation.alignment import interrater_reliability, kernel_name, subset_indices
from attnlib.evaluation.metrics import human_alignment, spearman_per_image


@pytest.fixture(scope="module")
def players(tmp_path_factory):
    """A small synthetic ClickMe-like set: 3 classes, 4 players with 2 clicks each on every image."""
    config = FineGrainedConfig(n_images=24, size=48, n_classes=3, part_radius=4, distractor_size=8,
                               n_annotators=4, bubbles_per_annotator=2)
    root = generate_finegrained(tmp_path_factory.mktemp("players") / "set", config, progress=False)
    return FineGrainedDataset(root)


class _Clicks:
    """A stand-in for the synthetic set: given bubbles per image on ``size`` x ``size`` images."""

    def __init__(self, frames: list[pd.DataFrame], size: int) -> None:
        self.frames, self.config, self.label_names = frames, SimpleNamespace(size=size), ["a", "b"]
        self.metadata = pd.DataFrame({"id": [f"i{k}" for k in range(len(frames))], "split": "test",
                                      "label": [k % 2 for k in range(len(frames))]})

    def __len__(self) -> int:
        return len(self.frames)

    def bubbles(self, i: int) -> pd.DataFrame:
        return self.frames[i]


def test_interrater_reliability_identical_halves_and_the_null():
    # two players click the same spot of each image (a different spot per image): the halves agree exactly
    spots = [(6.0, 6.0), (25.0, 25.0), (6.0, 25.0)]
    frames = [bubble_frame([(f"i{k}", w, x, y, 3.0) for w in ("w0", "w1")]) for k, (x, y) in enumerate(spots)]
    result = interrater_reliability(_Clicks(frames, 32), 5, seed=1)
    table = result.per_image
    np.testing.assert_allclose(table["rho"], 1.0)
    assert result.rho == pytest.approx(1.0) and result.null_rho < 0.5
    assert (table["partner"] != table.index).all() and sorted(table["partner"]) == sorted(table.index)
    assert result.summary()["undefined (constant map)"] == 0
    picked = interrater_reliability(_Clicks(frames, 32), 5, seed=1, max_images=2).per_image
    assert len(picked) == 2 and picked.index.is_monotonic_increasing
    with pytest.raises(ValueError, match="at least 2 images"):
        interrater_reliability(_Clicks(frames[:1], 32), 5)


def test_interrater_reliability_matches_the_alignment_metric(players):
    ds = players
    result = interrater_reliability(ds, 5, seed=3)
    halves = [player_halves(ds.bubbles(i)) for i in range(len(ds))]
    first = np.stack([clickme_map(a, (48, 48), 5) for a, _ in halves])
    second = np.stack([clickme_map(b, (48, 48), 5) for _, b in halves])
    np.testing.assert_allclose(result.per_image["rho"], spearman_per_image(first, second))
    reference = human_alignment(first, second, ceiling=1.0, seed=3)  # the same shuffled-pairs null
    assert result.rho == pytest.approx(reference["rho"]) and result.null_rho == pytest.approx(reference["null_rho"])
    assert result.rho > result.null_rho + 0.2
    by_split = result.by_split()
    assert by_split["images"].sum() == len(ds)
    assert by_split.loc["train", "rho"] == pytest.approx(result.per_image.query("split == 'train'")["rho"].mean())


def test_subset_indices_and_kernel_name():
    assert subset_indices(4, None, 0) == subset_indices(4, 9, 0) == [0, 1, 2, 3]
    picked = subset_indices(20, 5, seed=3)
    assert len(set(picked)) == 5 and picked == sorted(picked) and picked == subset_indices(20, 5, seed=3)
    assert kernel_name(None) == "no blur" and kernel_name(7) == "7 x 7 px"
