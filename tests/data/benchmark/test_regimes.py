"""The regimes: Decoy-MNIST cue, map degradation, subsampling, and the pairing of draws across regimes."""

from __future__ import annotations

import numpy as np
import pytest

from attnlib.data.benchmark.regimes import CUE_SHADES, Regime, add_cue, cue_classes, degrade_maps, regime_rng, subsample


def test_cue_agrees_with_the_label_as_often_as_asked_in_training_and_at_chance_elsewhere() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 20_000)
    train = np.arange(len(labels)) < 10_000
    shown = cue_classes(labels, train, 0.8, 4, np.random.default_rng(1))
    assert (shown[train] == labels[train]).mean() == pytest.approx(0.8, abs=0.015)
    assert (shown[~train] == labels[~train]).mean() == pytest.approx(0.25, abs=0.015)
    decoy = cue_classes(labels, train, 1.0, 4, np.random.default_rng(1))
    assert (decoy[train] == labels[train]).all()
    never = cue_classes(labels, train, 0.0, 4, np.random.default_rng(1))
    assert (never[train] != labels[train]).all()
    assert set(np.unique(never)) == {0, 1, 2, 3}


def test_the_cue_square_takes_a_corner_without_evidence_and_its_shade_encodes_the_class() -> None:
    images = np.zeros((3, 2, 16, 16), dtype=np.float32)
    evidence = np.zeros((3, 16, 16), dtype=bool)
    evidence[:, :8, :] = True  # the top half holds evidence: only the bottom corners are free
    out, masks = add_cue(images, np.array([0, 2, 4]), evidence, 5, 3, np.random.default_rng(0))
    low, high = CUE_SHADES
    for i, k in enumerate([0, 2, 4]):
        rows, cols = np.nonzero(masks[i])
        assert masks[i].sum() == 9 and rows.min() == 13 and (cols.min() == 0 or cols.max() == 15)
        assert np.allclose(out[i][:, masks[i]], low + (high - low) * k / 4)  # every channel
        assert (out[i][:, ~masks[i]] == 0).all()
    assert (images == 0).all()  # the input is not modified


def test_misplaced_maps_are_a_derangement_of_the_training_maps_turned_by_180_degrees() -> None:
    maps = np.random.default_rng(0).random((7, 8, 8)).astype(np.float32)
    out = degrade_maps(maps, Regime("m", maps="misplaced"), np.random.default_rng(3))
    turned = maps[:, ::-1, ::-1]
    partner = [int(np.flatnonzero([np.array_equal(o, t) for t in turned])[0]) for o in out]
    assert sorted(partner) == list(range(7)) and all(p != i for i, p in enumerate(partner))
    assert np.array_equal(degrade_maps(maps, Regime("c"), np.random.default_rng(3)), maps)


def test_noisy_maps_are_blurred_shifted_partly_dropped_and_scaled_to_max_one() -> None:
    maps = np.zeros((50, 16, 16), dtype=np.float32)
    maps[:, 6:10, 6:10] = 1.0
    regime = Regime("n", maps="noisy", noise_blur=1.0, noise_shift=2, noise_drop=0.3)
    out = degrade_maps(maps, regime, np.random.default_rng(0))
    nonzero = out.reshape(50, -1).max(axis=1) > 0
    assert np.allclose(out[nonzero].reshape(nonzero.sum(), -1).max(axis=1), 1.0)
    assert (out > 0).sum() > (maps > 0).sum()  # blurred: spread beyond the square
    assert not np.array_equal(out[0], out[1])  # each map its own shift and drop
    none = degrade_maps(maps, Regime("q", maps="noisy", noise_blur=0, noise_shift=0, noise_drop=0),
                        np.random.default_rng(0))
    assert np.array_equal(none, maps)


def test_subsample_keeps_a_share_of_every_class_and_at_least_two() -> None:
    labels = np.repeat([0, 1, 2], [40, 20, 3])
    kept = subsample(labels, 0.25, np.random.default_rng(0))
    assert np.bincount(labels[kept]).tolist() == [10, 5, 2]
    assert (np.diff(kept) > 0).all()


def test_draws_depend_on_the_knobs_not_on_the_regime_name() -> None:
    a, b = Regime("decoy", cue=1.0), Regime("decoy_misplaced", cue=1.0, maps="misplaced")
    assert regime_rng(a, "s", 0, "cue").random() == regime_rng(b, "s", 0, "cue").random()
    assert regime_rng(a, "s", 0, "maps").random() != regime_rng(b, "s", 0, "maps").random()
    assert regime_rng(a, "s", 0, "cue").random() != regime_rng(a, "s", 1, "cue").random()


@pytest.mark.parametrize("knobs", [{"train_fraction": 0}, {"cue": 1.5}, {"maps": "blurry"}, {"budget": "huge"},
                                   {"noise_drop": 1.0}])
def test_bad_knobs_name_the_regime(knobs) -> None:
    with pytest.raises(ValueError, match="regime 'r'"):
        Regime("r", **knobs)
