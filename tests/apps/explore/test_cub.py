"""CUB-200-2010 exploration on its layout sample: bubble statistics and the bubble figure's geometry."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from attnlib.apps.explore.cub import bubble_figure, bubble_statistics
from attnlib.data.real.cub import CUB200, read_bubbles
from attnlib.data.real.layout_samples import (
    CUB_BUBBLE_UNKNOWN,
    CUB_BUBBLES,
    write_cub_bubbles,
    write_cub_sample,
)


def test_bubble_statistics_and_figure_count_listed_images_at_pixel_centres(tmp_path):
    root = write_cub_sample(tmp_path / "cub")
    bubbles = read_bubbles(write_cub_bubbles(tmp_path / "bubbles.csv", unknown_image=True))
    sets = [CUB200(root, split, image_size=64, cache=None) for split in ("train", "test")]
    stats = bubble_statistics(bubbles, sets)
    assert CUB_BUBBLE_UNKNOWN[0] not in stats.index
    assert stats["bubbles"].sum() == len(CUB_BUBBLES)
    fig = bubble_figure(sets[0], bubbles, n=1)
    first = CUB_BUBBLES[0]
    height, width = sets[0].original_size(list(sets[0].metadata["id"]).index(first[0]))
    ellipse = fig.axes[0].patches[0]  # the first bubble, on axes with pixel edges at integers
    assert ellipse.center == pytest.approx(((first[2] + 0.5) * 64 / width, (first[3] + 0.5) * 64 / height))
    plt.close("all")
