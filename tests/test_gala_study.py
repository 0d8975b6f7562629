"""Paper 4's study: paired augmentation, the ClickMe method, the smoke pipeline, alignment and the report."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnlib.data.arrays import ArrayDataset
from attnlib.data.clickme import encode_example, write_tfrecord
from attnlib.data.defaults import synthetic_finegrained
from attnlib.data.layout_samples import CLICKME_IMAGES, clickme_arrays, write_clickme_sample
from attnlib.data.paired import PairedMaps
from attnlib.losses.clickme import clickme_map_loss
from attnlib.methods.gala import ClickMeSupervised
from attnlib.metrics import spearman_per_image
from attnlib.models.gala import create_gala_resnet, forward_with_volumes
from attnlib.papers import gala
from attnlib.profiles import load_profile
from attnlib.training.runstore import RunStore


def _tiny_set(n: int = 4, size: int = 8) -> ArrayDataset:
    images = torch.arange(n * 3 * size * size, dtype=torch.float32).reshape(n, 3, size, size)
    return ArrayDataset(images, [i % 2 for i in range(n)], [f"i{i}" for i in range(n)], ["a", "b"], "tiny")


def test_paired_maps_share_one_crop_and_flip():
    base = _tiny_set()
    maps = base.images[:, :1].clone()  # the map is the image's first channel: any pairing error shows
    paired = PairedMaps(base, maps, padding=3)
    torch.manual_seed(0)
    for i in range(len(base)):
        for _ in range(5):
            item = paired[i]
            torch.testing.assert_close(item["img"][0], item["map"][0])
    plain = PairedMaps(base, maps)[1]  # padding 0: untouched
    torch.testing.assert_close(plain["img"], base.images[1])
    assert (
        plain["map"].shape == (1, 8, 8) and plain["map"].dtype == torch.float32 and plain["has_map"] is True
    )
    box = PairedMaps(base, torch.zeros(4, 1, 8, 8).index_fill_(2, torch.tensor([2, 3]), 1.0), "box")[0]["map"]
    assert box.sum() == 16 and box[0, 2:4].min() == 1  # rows 2-3, every column
    assert PairedMaps(base, maps).fingerprint != PairedMaps(base, maps + 1).fingerprint
    with pytest.raises(ValueError, match="N x 1 x H x W"):
        PairedMaps(base, maps[:2])


def test_clickme_method_adds_the_weighted_map_term():
    torch.manual_seed(0)
    model = create_gala_resnet("resnet18", 2, pretrained=False).eval()
    batch = {"img": torch.rand(2, 3, 32, 32), "lab": torch.tensor([0, 1]), "map": torch.rand(2, 1, 32, 32)}
    out = ClickMeSupervised(model, 6.0).step(batch)
    logits, volumes = forward_with_volumes(model, batch["img"])
    ce = F.cross_entropy(logits, batch["lab"])
    term = clickme_map_loss(volumes, batch["map"])
    torch.testing.assert_close(out.losses["ce"], ce)
    torch.testing.assert_close(out.losses["map_loss"], term)
    torch.testing.assert_close(out.losses["loss"], ce + 6.0 * term)
    no_map = ClickMeSupervised(model, 6.0).step({k: v for k, v in batch.items() if k != "map"})
    torch.testing.assert_close(no_map.losses["loss"], ce)
    with pytest.raises(ValueError, match=">= 0"):
        ClickMeSupervised(model, -1.0)


def test_clickme_method_scores_maps_of_images_that_have_one():
    torch.manual_seed(0)
    model = create_gala_resnet("resnet18", 2, pretrained=False).eval()
    batch = {"img": torch.rand(2, 3, 32, 32), "lab": torch.tensor([0, 1]), "map": torch.rand(2, 1, 32, 32)}
    logits, volumes = forward_with_volumes(model, batch["img"])
    ce = F.cross_entropy(logits, batch["lab"])
    first_only = clickme_map_loss([v[:1] for v in volumes], batch["map"][:1])  # image 1 has no map
    out = ClickMeSupervised(model, 6.0).step({**batch, "has_map": torch.tensor([True, False])})
    torch.testing.assert_close(out.losses["map_loss"], first_only)
    torch.testing.assert_close(out.losses["loss"], ce + 6.0 * first_only)
    none = ClickMeSupervised(model, 6.0).step({**batch, "has_map": torch.tensor([False, False])})
    assert none.losses["map_loss"].item() == 0.0
    torch.testing.assert_close(none.losses["loss"], ce)
    assert (
        ClickMeSupervised(model).weight == 6.0 and ClickMeSupervised(model, variant="public").weight == 1e-5
    )


def _public_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The smoke profile with the public code's ClickMe loss, its weight left to the variant."""
    smoke = load_profile("smoke")
    public = {**smoke, "gala": {**smoke["gala"], "loss_variant": "public"}}
    monkeypatch.setattr(gala, "load_profile", lambda profile: public)


def test_map_weight_follows_the_loss_variant(monkeypatch):
    assert gala.study_settings("smoke")["weight"] == 6.0
    _public_profile(monkeypatch)
    settings = gala.study_settings("smoke")
    assert settings["weight"] == 1e-5
    table = gala.arms(settings)
    assert [table[name].weight for name in ("GALA + ClickMe", *gala.CONTROLS)] == [1e-5] * 3
    assert gala.build_method(table["GALA + ClickMe"], settings, 2).weight == 1e-5
    assert gala.arms({**settings, "weight": 2.0})["GALA + ClickMe"].weight == 2.0  # set explicitly


def test_arms_share_runs_with_the_sweep():
    settings = gala.study_settings("smoke")
    table = gala.arms(settings)
    assert list(table)[:6] == [*gala.TABLE1, *gala.CONTROLS]
    assert table[gala.sweep_name(0.0)] == table["GALA"]
    assert table[gala.sweep_name(settings["weight"])] == table["GALA + ClickMe"]
    assert table["GALA + boxes"].maps == "box" and table["ResNet"].weight is None


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = synthetic_finegrained("smoke", root=tmp_path_factory.mktemp("clickme"), section="gala_synthetic")
    data = gala.load_data("synthetic", root, "smoke")
    store = RunStore(tmp_path_factory.mktemp("runs") / "store")
    return data, store, [gala.run_seed(store, data, seed, "smoke", "cpu") for seed in (0, 1)]


def test_synthetic_data_and_ceiling(study):
    data, _, _ = study
    assert data.train_maps.shape[1:] == (1, 48, 48) and len(data.train_maps) == len(data.train)
    assert 0 < data.ceiling < 1 and "player halves" in data.ceiling_source
    assert (data.train_maps.flatten(1).sum(1) > 0).all()  # every image has clicks


def test_smoke_pipeline_scores_every_arm_and_reloads(study):
    data, store, results = study
    settings = gala.study_settings("smoke")
    frame = gala.results_frame(results, settings)
    assert len(frame) == 2 * len(gala.arms(settings))
    ran = frame[frame["arm"].isin(["ResNet", "GALA + ClickMe"])].drop_duplicates("arm").set_index("arm")
    assert ran.loc["GALA + ClickMe", ["weight", "loss_variant"]].tolist() == [6.0, "paper"]
    assert ran.loc["ResNet", ["weight", "loss_variant"]].isna().all()
    assert frame["top1_error"].between(0, 1).all() and frame["top5_error"].between(0, 1).all()
    assert np.isfinite(frame[["alignment", "smoothgrad", "alignment_null"]].to_numpy()).all()
    # the sweep's lambda = 0 / weight points are the very same runs as GALA / GALA + ClickMe
    assert results[0]["GALA"].spec.key == results[0][gala.sweep_name(0.0)].spec.key
    again = gala.run_seed(store, data, 0, "smoke", "cpu")
    assert {k: v.spec.key for k, v in again.items()} == {k: v.spec.key for k, v in results[0].items()}
    sweep = gala.lambda_frame(frame)
    assert sorted(sweep["lambda"].unique()) == sorted(float(x) for x in settings["lambdas"])
    assert "paired t-test p =" in gala.verdict(frame)
    # only the networks the figures load keep their weights (the sweep's equal points are the same runs)
    kept = {name for name, run in results[0].items() if list(run.path.glob("weights_*.pt"))}
    assert kept == {*gala.FIGURE_ARMS, gala.sweep_name(0.0), gala.sweep_name(6.0)}


def test_alignment_is_the_metric_on_the_stored_model(study):
    data, _, results = study
    settings = gala.study_settings("smoke")
    run = results[0]["GALA + ClickMe"]
    model = gala.load_model(run, gala.arms(settings)["GALA + ClickMe"], settings, data)
    again = gala.alignment_scores(model, data, settings, torch.device("cpu"))
    assert again["attention_rho"] == pytest.approx(run.metrics["alignment"]["attention_rho"], abs=1e-6)
    images, _, _ = gala.test_subset(data, 3)
    maps = gala.attention_maps(model, images, torch.device("cpu"), per_layer=True)
    assert maps.shape == (3, 2, 48, 48)  # two GALA blocks in ResNet-18's layer3


def test_figures_views(study):
    data, _, results = study
    settings = gala.study_settings("smoke")
    views = gala.layer_views(results, data, settings, n=2)
    assert len(views["maps"]) == 2 and len(views["maps"][0]) == len(views["col_titles"]) == 5
    saliency = gala.smoothgrad_views(results, data, settings, n=2)
    assert all(0 <= m.min() and m.max() <= 1 for row in saliency["maps"] for m in row)


@pytest.mark.parametrize("form", ["npz", "raw", "jpeg"])
def test_real_clickme_layouts_load(tmp_path, form):
    root = write_clickme_sample(tmp_path / "clickme", form)
    data = gala.load_data("clickme", root, "smoke")
    assert data.ceiling == pytest.approx(0.58) and data.train_maps is None and "val" in data.description
    item = PairedMaps(data.test)[0]
    assert item["img"].shape == (3, 48, 48) and item["map"].shape == (1, 48, 48)
    with pytest.raises(ValueError, match="needs data_root"):
        gala.load_data("clickme", None, "smoke")


def _gala_era_clickme(root: Path, val_maps: list[bool]) -> Path:
    """GALA-era ClickMe shards: three training images (the second without a map) and validation images 3, 4,
    0 with a map where ``val_maps`` says so."""

    def record(k: int, with_map: bool) -> bytes:
        image, heatmap = clickme_arrays(k)
        return encode_example(image, heatmap if with_map else None, CLICKME_IMAGES[k][1])

    write_tfrecord(root / "train-00000-of-00001", [record(k, k != 1) for k in (0, 1, 2)])
    write_tfrecord(
        root / "val-00000-of-00001", [record(k, m) for k, m in zip((3, 4, 0), val_maps, strict=True)]
    )
    return root


def test_gala_era_clickme_trains_and_aligns_on_images_with_maps(tmp_path, monkeypatch):
    _public_profile(monkeypatch)
    settings = gala.study_settings("smoke")
    data = gala.load_data("clickme", _gala_era_clickme(tmp_path / "clickme", [True, False, True]), "smoke")
    item = PairedMaps(data.test, kind="box")[1]
    assert item["has_map"] is False and item["map"].abs().sum() == 0
    images, labels, human = gala.test_subset(data, 3)
    assert labels.tolist() == [CLICKME_IMAGES[3][1], CLICKME_IMAGES[0][1]]
    torch.testing.assert_close(human[1], PairedMaps(data.test)[2]["map"][0])
    arm = gala.arms(settings)["GALA + ClickMe"]
    run = gala.train_arm(RunStore(tmp_path / "store"), data, arm, 0, settings, "smoke", "cpu")
    alignment = run.metrics["alignment"]
    assert (alignment["n"], alignment["n_without_map"]) == (2, 1)
    model = gala.load_model(run, arm, settings, data)
    attention = gala.attention_maps(model, images, torch.device("cpu")).numpy()
    rho = spearman_per_image(attention, human.numpy())
    assert alignment["attention_rho"] == pytest.approx(rho.mean(), abs=1e-6)
    null = spearman_per_image(attention, human.numpy()[::-1])  # 2 images: the null swaps their maps
    assert alignment["attention_null_rho"] == pytest.approx(null.mean(), abs=1e-6)
    frame = gala.results_frame([{"GALA + ClickMe": run}], settings)
    assert frame.loc[0, ["weight", "loss_variant"]].tolist() == [1e-5, "public"]


def test_alignment_without_enough_maps_is_nan(tmp_path, caplog):
    settings = gala.study_settings("smoke")
    data = gala.load_data("clickme", _gala_era_clickme(tmp_path / "clickme", [False, False, True]), "smoke")
    model = create_gala_resnet("resnet18", 1000, pretrained=False)
    with caplog.at_level(logging.WARNING, logger="attnlib.papers.gala"):
        scores = gala.alignment_scores(model, data, settings, torch.device("cpu"))
    assert (scores["n"], scores["n_without_map"]) == (1, 2)
    assert np.isnan([scores["attention_fraction_of_ceiling"], scores["smoothgrad_rho"]]).all()
    assert "1 of the first 3 test images have a human map" in caplog.text
