"""ABN training methods: the fine-tuning loss (Eqs. 1-3), frozen feature extractor, sample selection,
and the dataset that feeds edited maps."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from attnlib.data.arrays import ArrayDataset
from attnlib.data.maps.edited_maps import EditedMap, EditedMapDataset, Provenance
from attnlib.losses.abn import abn_loss, fine_tuning_loss, map_distance
from attnlib.methods.abn import ABNClassifier, ABNFineTune, ABNStaged, select_samples
from attnlib.models.abn import ABNOutput
from attnlib.models.registry import create_model


def test_map_distance_is_the_per_sample_l2_norm():
    predicted = torch.zeros(2, 1, 2, 2)
    edited = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    # sample 0: sqrt(1) = 1; sample 1: sqrt(4) = 2 (not 4 = the square, not 1 = the mean)
    torch.testing.assert_close(map_distance(predicted, edited), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="shape"):
        map_distance(predicted, edited[:, :, :1])


def test_fine_tuning_loss_hand_values():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    maps = torch.full((2, 1, 3, 3), 0.5)
    out = ABNOutput(logits, logits, maps, maps)
    labels = torch.tensor([0, 0])
    edited = torch.ones(2, 1, 3, 3)
    ce = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(1 / (1 + math.e))) / 2
    total, distance = fine_tuning_loss(out, labels, edited, gamma=0.3)
    assert distance.item() == pytest.approx(math.sqrt(9 * 0.25))  # 1.5 per sample, mean 1.5
    assert total.item() == pytest.approx(2 * ce + 0.3 * 1.5, rel=1e-6)
    assert abn_loss(out, labels).item() == pytest.approx(2 * ce, rel=1e-6)


def _batch(n: int = 4, size: int = 32) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "img": torch.rand(n, 3, size, size, generator=g),
        "lab": torch.tensor([0, 1, 0, 1][:n]),
        "edited_map": torch.rand(n, 1, size // 16, size // 16, generator=g),
    }


def test_fine_tune_updates_branches_only():
    torch.manual_seed(0)
    method = ABNFineTune(create_model("resnet18", 2, pretrained=False, head="abn"), gamma=1.0)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    params = [p for group in method.param_groups(0.1) for p in group["params"]]
    assert {id(p) for p in params} == {
        id(p) for p in [*method.model.attention.parameters(), *method.model.perception.parameters()]
    }
    optimizer = torch.optim.SGD(params, lr=0.1)
    method.train()
    for _ in range(2):
        out = method.step(_batch())
        optimizer.zero_grad()
        out.losses["loss"].backward()
        optimizer.step()
    after = method.state_dict()
    for key, value in before.items():
        moved = not torch.equal(value, after[key])
        if key.startswith("model.features."):
            assert not moved, f"{key} moved although the feature extractor is frozen"
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("model.attention."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("model.perception."))


def test_fine_tune_step_adds_gamma_times_distance_and_falls_back_without_maps():
    torch.manual_seed(0)
    model = create_model("resnet18", 2, pretrained=False, head="abn").eval()
    batch = _batch()
    plain = ABNClassifier(model).eval().step(batch).losses["loss"]
    tuned = ABNFineTune(model, gamma=2.0).eval()
    out = tuned.step(batch)
    expected = plain + 2.0 * map_distance(model(batch["img"]).predicted_map, batch["edited_map"]).mean()
    torch.testing.assert_close(out.losses["loss"], expected)
    no_map = {k: v for k, v in batch.items() if k != "edited_map"}
    torch.testing.assert_close(tuned.step(no_map).losses["loss"], plain)
    with pytest.raises(ValueError, match="gamma"):
        ABNFineTune(model, gamma=-1)


def _predictions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "label": [0, 1, 1, 0],
            "prob_0": [0.9, 0.6, 0.2, 0.4],
            "prob_1": [0.1, 0.4, 0.8, 0.6],
            "pred": [0, 0, 1, 1],
        }
    )


def test_select_samples():
    frame = _predictions()
    assert select_samples(frame, "misclassified") == ["b", "d"]
    # true-class probabilities: a 0.9, b 0.4, c 0.8, d 0.4 -> lowest first, ties by id
    assert select_samples(frame, "lowest_confidence") == ["b", "d", "c", "a"]
    assert select_samples(frame, "lowest_confidence", limit=3) == ["b", "d", "c"]
    with pytest.raises(ValueError, match="selection"):
        select_samples(frame, "random")


def test_edited_map_dataset_adds_maps_in_the_given_order():
    base = ArrayDataset(
        torch.arange(4 * 3 * 4 * 4, dtype=torch.float32).reshape(4, 3, 4, 4),
        [0, 1, 0, 1],
        ["a", "b", "c", "d"],
        ["x", "y"],
        "fp",
    )
    maps = {
        "c": np.full((2, 2), 0.25, np.float32),
        "a": EditedMap(np.eye(2, dtype=np.float32), Provenance("simulated", (2, 2))),
    }
    ds = EditedMapDataset(base, maps, ids=["c", "a"])
    assert len(ds) == 2 and ds.ids == ["c", "a"]
    item = ds[0]
    assert item["id"] == "c" and item["lab"] == 0
    torch.testing.assert_close(item["img"], base.images[2])
    torch.testing.assert_close(item["edited_map"], torch.full((1, 2, 2), 0.25))
    torch.testing.assert_close(ds[1]["edited_map"], torch.eye(2)[None])
    assert EditedMapDataset(base, maps).ids == ["a", "c"]
    changed = EditedMapDataset(base, {**maps, "c": np.zeros((2, 2), np.float32)}, ids=["c", "a"])
    assert changed.fingerprint != ds.fingerprint
    with pytest.raises(KeyError, match="without an edited map"):
        EditedMapDataset(base, maps, ids=["b"])


def test_simulated_maps_are_identified_by_what_made_them_not_by_float_noise():
    base = ArrayDataset(torch.zeros(2, 1, 4, 4), [0, 1], ["a", "b"], ["x", "y"], "fp")
    made_by = Provenance("simulated", (2, 2), (4, 4), (), "simulated editor (budget 3)", "abc123", "last")
    noisy = np.eye(2, dtype=np.float32) + np.float32(1e-7)  # the same forward pass with other threads

    def fingerprint(values, provenance=made_by):
        return EditedMapDataset(base, {"a": EditedMap(values, provenance)}).fingerprint

    assert fingerprint(noisy) == fingerprint(np.eye(2, dtype=np.float32))
    later = Provenance("simulated", (2, 2), (4, 4), (), "simulated editor (budget 3)", "abc123", "last")
    assert fingerprint(noisy, later) == fingerprint(noisy)  # the creation time is not identity
    for other in (
        Provenance("simulated", (2, 2), (4, 4), (), "simulated editor (budget 3)", "def456", "last"),
        Provenance("simulated", (2, 2), (4, 4), (), "simulated editor (budget 3)", "abc123", "best"),
        Provenance("simulated", (2, 2), (4, 4), (), "simulated editor (budget 5)", "abc123", "last"),
    ):
        assert fingerprint(noisy, other) != fingerprint(noisy)
    painted = Provenance("editor", (2, 2), model_key="abc123")  # a person's map: its values are the input
    assert fingerprint(noisy, painted) != fingerprint(np.eye(2, dtype=np.float32), painted)


def test_staged_abn_switches_to_map_fine_tuning_with_frozen_features() -> None:
    torch.manual_seed(0)
    method = ABNStaged(create_model("slim_resnet10", 3, in_chans=1, pretrained=False, head="abn"), 2.0, 3)
    batch = {"img": torch.rand(4, 1, 32, 32), "lab": torch.tensor([0, 1, 2, 0]),
             "map": torch.zeros(4, 1, 32, 32), "has_map": torch.tensor([True, True, True, False])}
    batch["map"][:, :, :16, :16] = 0.5  # top-left quarter: area-resampled to 8 x 8 and scaled to max 1
    method.eval()
    method.on_epoch_start(2)
    assert set(method.step(batch).losses) == {"loss"}  # stage 1: L_abn only
    method.on_epoch_start(3)
    assert all(not p.requires_grad for p in method.model.features.parameters())
    out = method.model(batch["img"])
    edited = torch.zeros(4, 1, 8, 8)
    edited[:, :, :4, :4] = 1.0
    expected = map_distance(out.predicted_map, edited)[:3].mean()
    losses = method.step(batch).losses
    assert torch.allclose(losses["map_distance"], expected)
    assert torch.allclose(losses["loss"], abn_loss(out, batch["lab"]) + 2.0 * expected)
