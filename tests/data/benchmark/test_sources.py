"""The four synthetic defaults as benchmark sources (smoke profile, 16 px) and their split datasets."""

from __future__ import annotations

import numpy as np
import pytest

from attnlib.data.benchmark.dataset import benchmark_splits
from attnlib.data.benchmark.regimes import Regime
from attnlib.data.benchmark.sources import SOURCES, load_source

SIZE = 16


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ATTNLIB_HOME", str(home))
        yield {name: load_source(name, "smoke", SIZE) for name in SOURCES}


@pytest.mark.parametrize("name", SOURCES)
def test_every_source_gives_images_maps_and_evidence_at_the_benchmark_size(sources, name) -> None:
    s = sources[name]
    n = len(s.labels)
    assert s.images.shape[0] == n and s.images.shape[-2:] == (SIZE, SIZE) and s.images.dtype == np.float32
    assert 0 <= s.images.min() and s.images.max() <= 1
    assert set(np.unique(s.split)) == {"train", "test"} and set(np.unique(s.labels)) <= set(range(s.n_classes))
    assert np.allclose(s.maps.reshape(n, -1).max(axis=1), 1.0)  # every image has a map, scaled to max 1
    assert s.evidence.reshape(n, -1).any(axis=1).all()
    # the human maps point at the evidence: more map mass inside it than its area
    inside = (s.maps * s.evidence).reshape(n, -1).sum(1) / s.maps.reshape(n, -1).sum(1)
    assert inside.mean() > s.evidence.reshape(n, -1).mean(1).mean()
    assert (s.rater_maps is not None) == (name in ("finegrained", "clickme"))


def test_cxr_evidence_is_the_heart_for_cardiomegaly_the_lungs_for_pneumonia_both_for_normal(sources) -> None:
    s = sources["cxr"]
    area = s.evidence.reshape(len(s.labels), -1).mean(1)
    assert area[s.labels == 0].mean() > max(area[s.labels == 1].mean(), area[s.labels == 2].mean())


def test_unknown_source_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown benchmark source"):
        load_source("imagenet")


def test_splits_are_disjoint_paired_by_seed_and_carry_the_regime(sources) -> None:
    s = sources["finegrained"]
    regime = Regime("decoy_misplaced", cue=1.0, maps="misplaced")
    splits = benchmark_splits(s, regime, seed=3, val_fraction=0.25, hmap_size=(2, 2))
    ids = {k: set(d.metadata["id"]) for k, d in splits.as_dict().items()}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert ids["train"] | ids["val"] == set(s.ids[s.split == "train"]) and ids["test"] == set(s.ids[s.split == "test"])
    assert len(ids["val"]) == pytest.approx(0.25 * (len(ids["train"]) + len(ids["val"])), abs=s.n_classes)
    again = benchmark_splits(s, regime, seed=3, val_fraction=0.25, hmap_size=(2, 2))
    assert again.train.fingerprint == splits.train.fingerprint
    assert benchmark_splits(s, regime, seed=4, val_fraction=0.25, hmap_size=(2, 2)).train.fingerprint != \
        splits.train.fingerprint
    train, test = splits.train, splits.test
    assert (train.cue == train.labels).all() and (test.cue >= 0).all()  # decoy: the cue is the label in training
    item = train[0]
    assert set(item) == {"idx", "id", "img", "lab", "map", "has_map", "hmap", "evidence", "clean_map", "cue"}
    assert item["hmap"].shape == (1, 2, 2) and float(item["hmap"].max()) == pytest.approx(1.0)
    assert not np.array_equal(train.maps.numpy(), train.clean_maps.numpy())  # misplaced on training images
    assert np.array_equal(test.maps.numpy(), test.clean_maps.numpy())  # clean on test images
    clean = benchmark_splits(s, Regime("decoy", cue=1.0), seed=3, val_fraction=0.25, hmap_size=(2, 2))
    assert np.array_equal(clean.train.images.numpy(), train.images.numpy())  # same cue draws: paired regimes
    none = benchmark_splits(s, Regime("reference"), seed=3, val_fraction=0.25, hmap_size=(2, 2))
    assert (none.test.cue == -1).all()


def test_max_train_and_train_fraction_cap_the_training_images(sources) -> None:
    s = sources["finegrained"]
    n_train = int((s.split == "train").sum())
    capped = benchmark_splits(s, Regime("r"), 0, max_train=n_train // 2)
    small = benchmark_splits(s, Regime("s", train_fraction=0.5), 0)
    assert len(capped.train) + len(capped.val) == pytest.approx(n_train / 2, abs=s.n_classes)
    assert len(small.train) + len(small.val) == pytest.approx(n_train / 2, abs=s.n_classes)
