"""Paper 4's study: paired augmentation, the ClickMe method, typed settings, the smoke pipeline, alignment, the
statistics and the report."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats as scipy_stats

from attnlib.core.profiles import available_profiles, load_profile, load_settings
from attnlib.core.settings import SettingsError
from attnlib.data.arrays import ArrayDataset
from attnlib.data.maps.paired import PairedMaps
from attnlib.data.real.clickme import encode_example, write_tfrecord
from attnlib.data.real.layout_samples import CLICKME_IMAGES, clickme_arrays, write_clickme_sample
from attnlib.data.synthetic.defaults import synthetic_finegrained
from attnlib.engine.study import ArmRun
from attnlib.evaluation.metrics import spearman_per_image
from attnlib.evaluation.stats import SMOKE_CAVEAT
from attnlib.losses.clickme import clickme_map_loss
from attnlib.methods.gala import ClickMeSupervised
from attnlib.models.gala import forward_with_volumes
from attnlib.models.registry import create_model
from attnlib.papers import gala
from attnlib.papers.gala import GALASettings, GALAStudy


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
    model = create_model("resnet18", 2, pretrained=False, head="gala").eval()
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
    model = create_model("resnet18", 2, pretrained=False, head="gala").eval()
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


# ------------------------------------------------------------------------------------------ settings


def _smoke() -> GALASettings:
    return load_settings(GALASettings, "smoke", "gala")


def _public() -> GALASettings:
    """The smoke profile with the public code's ClickMe loss, its weight left to the variant."""
    return replace(_smoke(), loss_variant="public")


@pytest.mark.parametrize("profile", available_profiles())
def test_every_profile_loads(profile):
    settings = load_settings(GALASettings, profile, "gala")
    assert settings.map_weight == 6.0 and all(isinstance(x, float) for x in settings.lambdas)
    assert {0.0, settings.map_weight} <= set(settings.lambdas)  # the sweep holds GALA and GALA + ClickMe


def _smoke_section(monkeypatch: pytest.MonkeyPatch, section: dict) -> None:
    """Profiles load as the smoke profile with ``section`` as its ``gala`` section."""
    profile = load_profile("smoke")
    monkeypatch.setattr("attnlib.core.profiles.load_profile", lambda name=None: {**profile, "gala": section})


def test_a_misspelt_profile_key_names_the_file_and_key(monkeypatch, tmp_path):
    section = load_profile("smoke")["gala"]
    misspelt = {("smoothgrad_sample" if k == "smoothgrad_samples" else k): v for k, v in section.items()}
    _smoke_section(monkeypatch, misspelt)
    message = r"smoke\.yaml: gala: unknown key 'smoothgrad_sample' \(did you mean 'smoothgrad_samples'\?\)"
    with pytest.raises(SettingsError, match=message):
        GALAStudy.create("smoke", tmp_path / "store", "cpu")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("epochs", "ten", r"smoke\.yaml: gala\.epochs: expected an integer"),
        ("loss_variant", "tf", r"smoke\.yaml: gala\.loss_variant: 'tf' is not one of \['paper', 'public'\]"),
        ("progress", None, r"smoke\.yaml: gala: missing key\(s\) \['progress'\]"),
    ],
)
def test_a_wrong_or_missing_profile_value_is_an_error(monkeypatch, tmp_path, key, value, message):
    section = {k: v for k, v in load_profile("smoke")["gala"].items() if k != key}
    _smoke_section(monkeypatch, section if value is None else {**section, key: value})
    with pytest.raises(SettingsError, match=message):
        GALAStudy.create("smoke", tmp_path / "store", "cpu")


def test_map_weight_follows_the_loss_variant(tmp_path):
    assert _smoke().map_weight == 6.0
    study = GALAStudy.create("smoke", tmp_path / "store", "cpu", settings=_public())
    assert study.settings.map_weight == 1e-5
    assert [study.arm(name).weight for name in ("GALA + ClickMe", *gala.CONTROLS)] == [1e-5] * 3
    assert study.build_method(study.arm("GALA + ClickMe"), 2).weight == 1e-5
    explicit = GALAStudy.create("smoke", tmp_path / "store", "cpu", settings=replace(_public(), weight=2.0))
    assert explicit.arm("GALA + ClickMe").weight == 2.0  # set explicitly


def test_arms_share_runs_with_the_sweep(tmp_path):
    study = GALAStudy.create("smoke", tmp_path / "store", "cpu")
    assert study.arms()[:6] == [*gala.TABLE1, *gala.CONTROLS]
    assert study.arm(gala.sweep_name(0.0)) == study.arm("GALA")
    assert study.arm(gala.sweep_name(study.settings.map_weight)) == study.arm("GALA + ClickMe")
    assert study.arm("GALA + boxes").maps == "box" and study.arm("ResNet").weight is None
    with pytest.raises(ValueError, match="unknown GALA arm 'VGG'"):
        study.arm("VGG")
    with pytest.raises(ValueError, match="unknown arm"):
        study.run([0], arms=["VGG"])


def test_bad_data_options_are_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        GALAStudy.create("smoke", tmp_path / "store", dataset="imagenet")
    with pytest.raises(ValueError, match="needs data_root"):
        GALAStudy.create("smoke", tmp_path / "store", dataset="clickme")
    root = write_clickme_sample(tmp_path / "clickme", "npz")
    with pytest.raises(ValueError, match="apply only to the generated synthetic default"):
        GALAStudy.create("smoke", tmp_path / "store", data_root=root, synthetic={"n_annotators": 8})


# -------------------------------------------------------------------------------------- statistics


#: Two-sided p of t = +-21 with 1 degree of freedom (a Cauchy distribution): 1 - 2 atan(21) / pi.
CAUCHY_P_21 = 1 - 2 * math.atan(21) / math.pi


class _FixedStudy(GALAStudy):
    """The study with given test values per arm and seed instead of training (for the statistics)."""

    VALUES: ClassVar[dict[str, dict[str, tuple[float, float]]]] = {
        "ResNet": {"top1_error": (0.6, 0.62), "alignment": (0.2, 0.22)},
        "SE-ResNet": {"top1_error": (0.58, 0.6), "alignment": (0.21, 0.2)},
        "GALA": {"top1_error": (0.5, 0.52), "alignment": (0.3, 0.31)},
        "GALA + ClickMe": {"top1_error": (0.4, 0.41), "alignment": (0.4, 0.42)},
        "GALA + boxes": {"top1_error": (0.45, 0.47), "alignment": (0.35, 0.33)},
        "ResNet + map loss": {"top1_error": (0.55, 0.56), "alignment": (0.25, 0.3)},
    }

    def run_arm(self, arm: str, seed: int, scenario: str = "default") -> ArmRun:
        values = {metric: pair[seed] for metric, pair in self.VALUES[arm].items()}
        values["smoothgrad"] = (0.2, 0.3)[seed]
        return ArmRun(arm, scenario, seed, [], {"last": values}, {"last": 1})


@pytest.fixture
def fixed(tmp_path) -> _FixedStudy:
    study = _FixedStudy.create("smoke", tmp_path / "store", "cpu")
    study.run([0, 1], arms=list(_FixedStudy.VALUES))
    return study


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # SmoothGrad: equal pairs
def test_paired_t_tests_by_hand(fixed):
    tests = fixed.tests().set_index(["comparison", "metric"])
    assert sorted(set(tests.index.get_level_values(0))) == sorted(
        f"GALA + ClickMe vs {r}" for r in ("GALA", "ResNet", *gala.CONTROLS))
    assert set(tests["checkpoint"]) == {"last"} and set(tests["n"]) == {2}
    # differences GALA + ClickMe - GALA: -0.10, -0.11 -> mean -0.105, sd 0.01 / sqrt(2), se 0.005: t = -21, df 1
    row = tests.loc[("GALA + ClickMe vs GALA", "top1_error")]
    assert row["statistic"] == pytest.approx(-21.0) and row["p"] == pytest.approx(CAUCHY_P_21)
    assert (row["median method"], row["median reference"]) == pytest.approx((0.405, 0.51))
    assert tests.loc[("GALA + ClickMe vs GALA", "alignment"), "statistic"] == pytest.approx(21.0)
    # SmoothGrad is the same in every arm: no variation of the differences, no test
    assert np.isnan(tests.loc[("GALA + ClickMe vs GALA", "smoothgrad"), "p"])
    assert ("GALA + ClickMe vs GALA", "top5_error") not in tests.index  # not scored: not tested


def test_table1_anova_by_hand(fixed):
    anova = fixed.table1_anova().set_index("metric")
    values = [np.array(_FixedStudy.VALUES[arm]["top1_error"]) for arm in gala.TABLE1]
    grand = np.concatenate(values).mean()
    between = sum(2 * (v.mean() - grand) ** 2 for v in values) / 3
    within = sum(((v - v.mean()) ** 2).sum() for v in values) / 4
    row = anova.loc[gala.METRICS["top1_error"].title]
    assert row["F"] == pytest.approx(between / within)
    assert row["p"] == pytest.approx(scipy_stats.f.sf(between / within, 3, 4))
    assert (row["df between"], row["df within"]) == (3, 4)
    smoothgrad = anova.loc[gala.METRICS["smoothgrad"].title]  # the same two values in every arm: no effect
    assert smoothgrad["F"] == pytest.approx(0.0, abs=1e-12) and smoothgrad["p"] == pytest.approx(1.0)


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # SmoothGrad: equal pairs
def test_verdict_and_claims(fixed):
    verdict = fixed.verdict()
    assert verdict.startswith(SMOKE_CAVEAT) and "nan" not in verdict
    assert "GALA + ClickMe vs GALA: top-1 error: median 0.510 -> 0.405; better (p = 0.03)" in verdict
    smoothgrad = "SmoothGrad alignment (fraction of the inter-rater ceiling): median 0.250 -> 0.250"
    assert f"{smoothgrad}; no test: no variation" in verdict
    assert "top-5" not in verdict and "paired t-test over seeds" in verdict and "last epoch" in verdict
    assert len(verdict.splitlines()) == 1 + 4 * len(gala.VERDICT_METRICS)  # the caveat, comparisons x metrics
    claims = {c.metric: c for c in fixed.claims()}
    error = claims[gala.METRICS["top1_error"].title]
    assert (error.value, error.reference, error.n) == (pytest.approx(0.405), pytest.approx(0.51), 2)
    assert error.p == pytest.approx(CAUCHY_P_21) and error.outcome.endswith("better (p = 0.03)")
    assert error.checkpoint == "last checkpoint: last epoch" and "53.90" in error.paper_value
    assert "0.8856" in claims[gala.METRICS["alignment"].title].paper_value


# ------------------------------------------------------------------------------- the smoke pipeline


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = synthetic_finegrained("smoke", root=tmp_path_factory.mktemp("clickme"), section="gala_synthetic")
    store = tmp_path_factory.mktemp("runs") / "store"
    study = GALAStudy.create("smoke", store, "cpu", dataset="synthetic", data_root=root)
    study.run([0, 1])
    return study, root, store


def test_synthetic_data_and_ceiling(smoke):
    data = smoke[0].data
    assert data.train_maps.shape[1:] == (1, 48, 48) and len(data.train_maps) == len(data.train)
    assert 0 < data.ceiling < 1 and "player halves" in data.ceiling_source
    assert (data.train_maps.flatten(1).sum(1) > 0).all()  # every image has clicks


def test_smoke_pipeline_scores_every_arm_and_reloads(smoke):
    study, root, store = smoke
    runs = study.results_by_run()
    assert len(runs) == 2 * len(study.arms())
    ran = runs[runs["arm"].isin(["ResNet", "GALA + ClickMe"])].drop_duplicates("arm").set_index("arm")
    assert ran.loc["GALA + ClickMe", ["weight", "loss_variant"]].tolist() == [6.0, "paper"]
    assert ran.loc["ResNet", ["weight", "loss_variant"]].isna().all()
    assert runs["top1_error"].between(0, 1).all() and runs["top5_error"].between(0, 1).all()
    assert np.isfinite(runs[["alignment", "smoothgrad", "alignment_null"]].to_numpy()).all()
    frame = study.results()
    assert set(frame["checkpoint"]) == {"last"} and set(frame["study"]) == {"gala"}
    # the sweep's lambda = 0 / weight points are the very same runs as GALA / GALA + ClickMe
    keys = {(r.arm, r.seed): r.runs[0].spec.key for r in study.runs}
    assert keys["GALA", 0] == keys[gala.sweep_name(0.0), 0]
    assert keys["GALA + ClickMe", 1] == keys[gala.sweep_name(6.0), 1]
    again = GALAStudy.create("smoke", store, "cpu", dataset="synthetic", data_root=root)
    again.run([0])
    assert {r.arm: r.runs[0].spec.key for r in again.runs} == {arm: keys[arm, 0] for arm in study.arms()}
    assert again.results().equals(frame[frame["seed"] == 0].reset_index(drop=True))
    sweep = study.sweep()
    assert sorted(sweep["lambda"].unique()) == sorted(study.settings.lambdas)
    assert "paired t-test" in study.verdict()
    # only the networks the figures load keep their weights (the sweep's equal points are the same runs)
    kept = {r.arm for r in study.runs if r.seed == 0 and list(r.runs[0].path.glob("weights_*.pt"))}
    assert kept == {*gala.FIGURE_ARMS, gala.sweep_name(0.0), gala.sweep_name(6.0)}


def test_alignment_is_the_metric_on_the_stored_model(smoke):
    study = smoke[0]
    run = next(r for r in study.runs if r.arm == "GALA + ClickMe" and r.seed == 0)
    model = study.trained_model(run)
    again = study.alignment_scores(model, torch.device("cpu"))
    assert again["attention_rho"] == pytest.approx(run.runs[0].metrics["alignment"]["attention_rho"], abs=1e-6)
    assert run.values["last"]["alignment"] == run.runs[0].metrics["alignment"]["attention_fraction_of_ceiling"]
    images, _, _ = gala.test_subset(study.data, 3)
    maps = gala.attention_maps(model, images, torch.device("cpu"), per_layer=True)
    assert maps.shape == (3, 2, 48, 48)  # two GALA blocks in ResNet-18's layer3


def test_tables_and_figures(smoke):
    study = smoke[0]
    views = study.layer_views(0, n=2)
    assert len(views["maps"]) == 2 and len(views["maps"][0]) == len(views["col_titles"]) == 5
    assert "last weights" in views["selection"]
    saliency = study.smoothgrad_views(1, n=2)
    assert all(0 <= m.min() and m.max() <= 1 for row in saliency["maps"] for m in row)
    assert saliency["selection"].startswith("seed 1, last weights")
    tables = study.tables()
    assert list(tables[next(t for t in tables if t.startswith("Table 1: error"))].index) == list(gala.TABLE1)
    assert len(tables["Table 1: one-way ANOVA over its four arms"]) == len(gala.VERDICT_METRICS)
    assert len(tables["tests"]) == 4 * len(gala.METRICS)
    figures = study.figures(n=2)
    assert len(figures) == 4 and all("last" in (f.get_suptitle() or f.axes[0].get_title()) for f in figures)
    for figure in figures:
        plt.close(figure)


# ------------------------------------------------------------------------------------ real ClickMe


@pytest.mark.parametrize("form", ["npz", "raw", "jpeg"])
def test_real_clickme_layouts_load(tmp_path, form):
    root = write_clickme_sample(tmp_path / "clickme", form)
    data = GALAStudy.create("smoke", tmp_path / "store", "cpu", dataset="clickme", data_root=root).data
    assert data.ceiling == pytest.approx(0.58) and data.train_maps is None and "val" in data.description
    item = PairedMaps(data.test)[0]
    assert item["img"].shape == (3, 48, 48) and item["map"].shape == (1, 48, 48)
    assert GALAStudy.create("smoke", tmp_path / "store", data_root=root).dataset == "clickme"  # told by layout


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


def test_gala_era_clickme_trains_and_aligns_on_images_with_maps(tmp_path):
    root = _gala_era_clickme(tmp_path / "clickme", [True, False, True])
    public = _public()
    study = GALAStudy.create("smoke", tmp_path / "store", "cpu", settings=public, dataset="clickme", data_root=root)
    item = PairedMaps(study.data.test, kind="box")[1]
    assert item["has_map"] is False and item["map"].abs().sum() == 0
    images, labels, human = gala.test_subset(study.data, 3)
    assert labels.tolist() == [CLICKME_IMAGES[3][1], CLICKME_IMAGES[0][1]]
    torch.testing.assert_close(human[1], PairedMaps(study.data.test)[2]["map"][0])
    study.run([0], arms=["GALA + ClickMe"])
    run = study.runs[0]
    alignment = run.runs[0].metrics["alignment"]
    assert (alignment["n"], alignment["n_without_map"]) == (2, 1)
    attention = gala.attention_maps(study.trained_model(run), images, torch.device("cpu")).numpy()
    rho = spearman_per_image(attention, human.numpy())
    assert alignment["attention_rho"] == pytest.approx(rho.mean(), abs=1e-6)
    null = spearman_per_image(attention, human.numpy()[::-1])  # 2 images: the null swaps their maps
    assert alignment["attention_null_rho"] == pytest.approx(null.mean(), abs=1e-6)
    assert study.results_by_run().loc[0, ["weight", "loss_variant"]].tolist() == [1e-5, "public"]


def test_alignment_without_enough_maps_is_nan(tmp_path, caplog):
    root = _gala_era_clickme(tmp_path / "clickme", [False, False, True])
    study = GALAStudy.create("smoke", tmp_path / "store", "cpu", dataset="clickme", data_root=root)
    model = create_model("resnet18", 1000, pretrained=False, head="gala")
    with caplog.at_level(logging.WARNING, logger="attnlib.papers.gala"):
        scores = study.alignment_scores(model, torch.device("cpu"))
    assert (scores["n"], scores["n_without_map"]) == (1, 2)
    assert np.isnan([scores["attention_fraction_of_ceiling"], scores["smoothgrad_rho"]]).all()
    assert "1 of the first 3 test images have a human map" in caplog.text
