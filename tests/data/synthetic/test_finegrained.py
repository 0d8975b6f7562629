"""The synthetic fine-grained default of the ABN paper."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attnlib.data.maps.sources import bubble_map
from attnlib.data.synthetic.finegrained import (
    EVIDENCE_AMPLITUDE,
    FineGrainedConfig,
    FineGrainedDataset,
    FineGrainedFormatError,
    class_colours,
    generate_finegrained,
)

SMALL = dict(n_images=80, size=48, n_classes=4, part_radius=5, distractor_size=10)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return generate_finegrained(
        tmp_path_factory.mktemp("fg") / "data", FineGrainedConfig(**SMALL), progress=False
    )


def test_counts_and_items(folder):
    counts = json.loads((folder / "synthetic_config.json").read_text())["counts"]
    assert counts["images"] == 80 and counts["per_class"] == [20] * 4
    train, test = FineGrainedDataset(folder, "train"), FineGrainedDataset(folder, "test")
    assert len(train) + len(test) == 80 and len(test) == 24
    item = train[0]
    assert item["img"].shape == (3, 48, 48) and item["img"].dtype == torch.float32
    assert 0 <= float(item["img"].min()) and float(item["img"].max()) <= 1


def test_class_evidence_is_the_head_colour_only(tmp_path):
    """Two sets differing only in evidence strength differ only inside the heads, by the class colour."""
    a = FineGrainedDataset(
        generate_finegrained(
            tmp_path / "a", FineGrainedConfig(**SMALL, evidence_strength=0.0), progress=False
        )
    )
    b = FineGrainedDataset(
        generate_finegrained(
            tmp_path / "b", FineGrainedConfig(**SMALL, evidence_strength=1.0), progress=False
        )
    )
    colours = class_colours(4)
    np.testing.assert_allclose(colours.sum(axis=1), 0, atol=1e-12)  # no brightness cue
    for i in range(10):
        diff = b.image(i) - a.image(i)
        head = a.evidence_mask(i)
        assert np.abs(diff[:, ~head]).max() == 0
        inside = diff[:, head].mean(axis=1)
        expected = EVIDENCE_AMPLITUDE * colours[a.labels[i]]
        np.testing.assert_allclose(inside, expected, atol=0.03)  # clipping and rounding only


def test_distractor_follows_the_label_in_training_only(tmp_path):
    root = generate_finegrained(
        tmp_path / "d",
        FineGrainedConfig(**{**SMALL, "n_images": 400}, distractor_correlation_train=1.0),
        progress=False,
    )
    table = FineGrainedDataset(root).metadata
    train, test = table[table["split"] == "train"], table[table["split"] == "test"]
    assert (train["distractor"] == train["label"]).all()
    assert (test["distractor"] == test["label"]).mean() < 0.5


def test_bubbles_point_at_the_head(folder):
    ds = FineGrainedDataset(folder)
    inside = []
    for i in range(20):
        bubbles = ds.bubbles(i)
        assert len(bubbles) == 6 and set(bubbles["worker"]) == {"w0", "w1", "w2"}
        density = bubble_map(bubbles, (48, 48))
        inside.append(density[ds.evidence_mask(i)].mean() > 2 * density[~ds.evidence_mask(i)].mean())
    assert np.mean(inside) >= 0.9


def test_masks_and_determinism(folder, tmp_path):
    ds = FineGrainedDataset(folder)
    assert not (ds.evidence_mask(0) & ds.distractor_mask(0)).any()
    assert ds.distractor_mask(0).sum() == 100
    again = FineGrainedDataset(
        generate_finegrained(tmp_path / "again", FineGrainedConfig(**SMALL), progress=False)
    )
    np.testing.assert_array_equal(again.image(3), ds.image(3))
    assert again.fingerprint == ds.fingerprint


def test_bad_config_and_files(folder, tmp_path):
    with pytest.raises(ValueError, match="part_radius"):
        FineGrainedConfig(**{**SMALL, "part_radius": 20})
    with pytest.raises(FineGrainedFormatError, match="synthetic_config.json"):
        FineGrainedDataset(tmp_path)
    (folder / "images" / "f0000.png").rename(tmp_path / "moved.png")
    try:
        with pytest.raises(FineGrainedFormatError, match="f0000.png"):
            FineGrainedDataset(folder).image(0)
    finally:
        (tmp_path / "moved.png").rename(folder / "images" / "f0000.png")
