"""GG-CAM's study pipeline: arms, Table 1 as used, curriculum, ANOVA table (AUCs, Eq. 12 per class and rule),
verdict, cue following."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.stats import f_oneway

from attnlib.papers import gg_cam
from attnlib.stats import SMOKE_CAVEAT


def _frame(standard: list[float], gaze: list[float]) -> pd.DataFrame:
    rows = []
    for arm, values in (("resnet", standard), ("resnet+gg-cam", gaze)):
        for seed, v in enumerate(values):
            rows.append({"scenario": "default", "arm": arm, "seed": seed,
                         "metrics.best.auc": v, "metrics.last.auc": v - 0.01,
                         "metrics.best.interpretability": v / 2, "metrics.last.interpretability": v / 3})
    return pd.DataFrame(rows)


def test_table1_in_the_paper_profile():
    table = gg_cam.hyperparameters(list(gg_cam.ARMS), "paper")
    assert table.loc["resnet", ["backbone", "lr", "plateau patience"]].tolist() == ["resnet50", 1e-4, 50]
    assert table.loc["effnet", ["backbone", "lr", "plateau patience"]].tolist() == ["efficientnet_v2_s", 1e-3, 25]
    assert table.loc["resnet+gg-cam", ["lr", "plateau patience", "sigma_sm init"]].tolist() == [7e-3, 30, 2.0e-9]
    assert table.loc["effnet+gg-cam", ["lr", "plateau patience", "sigma_sm init"]].tolist() == [6e-3, 40, 1.4e-11]
    assert table.loc["resnet+gg-cam (public code)", "variant"] == "public_code"
    assert table.loc["resnet+gg-cam (public code)", "sigma_ce init"] == pytest.approx(np.exp(7.0))


def test_unknown_network_is_named():
    with pytest.raises(ValueError, match="unknown GG-CAM network 'vgg'"):
        gg_cam.Arm.parse("vgg", gg_cam.study_settings("smoke"))


PUBLIC = "resnet+gg-cam (public code)"


def test_public_code_arm_runs_the_public_recipe_and_the_table_says_so():
    table = gg_cam.hyperparameters(list(gg_cam.ARMS), "paper")
    public = table.loc[PUBLIC]
    assert public[["backbone", "pretrained", "lr", "plateau patience", "reload best on lr drop"]].tolist() == [
        "resnet50_ggcam_public", False, 5e-3, 40, True,  # Table 1 says 7e-3 and 30
    ]
    assert public[["epochs", "max hours", "early stop", "batch", "precision (CUDA)"]].tolist() == [
        1024, 23.5, 83, 4, "fp32",
    ]
    assert public[["gaze blur_units", "gaze resample", "gaze source", "gaze weight"]].tolist() == [
        "opencv_kernel", "public_corner", "eye_gaze", "count",
    ]
    assert "neighbourhood" in public["Eq. 12 rule"]
    paper = table.loc["resnet+gg-cam"]  # the paper's arms keep Table 1 and the paper's gaze maps, from scratch
    assert paper[["lr", "plateau patience", "reload best on lr drop", "pretrained"]].tolist() == [7e-3, 30, False, False]
    assert paper[["gaze blur_units", "gaze resample", "gaze source", "gaze weight", "precision (CUDA)"]].tolist() == [
        "std", "area", "fixations", "duration", "bf16 autocast",
    ]


def test_public_recipe_must_name_every_setting(monkeypatch):
    profile = gg_cam.load_profile("smoke")
    recipe = {k: v for k, v in profile["gg_cam"]["public_code"].items() if k != "resample"}
    monkeypatch.setattr(
        gg_cam, "load_profile", lambda name: {**profile, "gg_cam": {**profile["gg_cam"], "public_code": recipe}}
    )
    with pytest.raises(ValueError, match=r"gg_cam.public_code must set exactly .*missing \['resample'\]"):
        gg_cam.study_settings("smoke")


@pytest.mark.slow
def test_public_arm_trains_on_the_public_gaze_maps_and_is_scored_on_the_paper_masks(tmp_path):
    settings = gg_cam.study_settings("smoke")
    arm = gg_cam.Arm.parse(PUBLIC, settings)
    model = gg_cam.build_method(arm, settings, 3).model
    root = gg_cam.scenario_root("smoke", "default")
    paper = gg_cam.load_splits("smoke", "default", root, model, settings)
    public = gg_cam.load_splits("smoke", "default", root, model, settings, gg_cam.gaze_recipe(arm, settings))
    train = public["train"].settings
    assert (train.blur_units, train.resample, train.gaze_source, train.gaze_weight) == (
        "opencv_kernel", "public_corner", "eye_gaze", "count",
    )
    # one CNN cell in DICOM pixels: 32 image pixels at the profile's scale
    assert train.corner_pad is None and train.corner_stride == round(32 / settings["scale"])
    first = public["train"][0]["hmap"]
    assert first.shape == paper["train"][0]["hmap"].shape
    assert not np.allclose(first.numpy(), paper["train"][0]["hmap"].numpy())
    assert (first[0, 0, :] == 0).all() and (first[0, :, 0] == 0).all()  # corner samples of the padding
    assert public["test"].settings == paper["test"].settings  # Eq. 12 on the same masks for every arm


def test_curriculum_cross_epoch():
    history = pd.DataFrame({"epoch": [1, 2, 3, 4], "train_term_sm": [10.0, 5.0, 1.0, 0.5],
                            "train_term_ce": [1.0, 1.0, 1.0, 1.0]})
    assert gg_cam.curriculum(history) == {"cross_epoch": 3, "gaze_dominated_epochs": 2, "epochs": 4}
    history["train_term_sm"] = 1e9
    assert gg_cam.curriculum(history)["cross_epoch"] is None


def test_anova_table_matches_scipy_and_verdict_follows_it():
    standard, gaze = [0.70, 0.72, 0.71, 0.69, 0.73], [0.80, 0.79, 0.82, 0.81, 0.78]
    table = gg_cam.anova_table(_frame(standard, gaze))
    row = table[(table["metric"] == "auc") & (table["checkpoint"] == "best")].iloc[0]
    expected = f_oneway(standard, gaze)
    assert row["F"] == pytest.approx(expected.statistic) and row["p"] == pytest.approx(expected.pvalue)
    assert (row["median standard"], row["median gaze"], row["seeds"]) == (0.71, 0.80, 5)
    assert "improved the test AUC" in gg_cam.verdict(table)
    assert "did not" not in gg_cam.verdict(table)

    overlapping = gg_cam.anova_table(_frame(standard, [0.71, 0.70, 0.73, 0.69, 0.72]))
    assert "did not significantly improve" in gg_cam.verdict(overlapping)
    worse = gg_cam.anova_table(_frame(gaze, standard))
    assert "significantly lowered" in gg_cam.verdict(worse)
    smoke = gg_cam.verdict(table, profile="smoke")
    assert smoke.startswith(SMOKE_CAVEAT) and smoke.endswith(gg_cam.verdict(table))
    assert gg_cam.verdict(table, profile="quick") == gg_cam.verdict(table)


def test_one_seed_per_arm_gives_no_test():
    table = gg_cam.anova_table(_frame([0.7], [0.8]))
    assert table["p"].isna().all() and (table["seeds"] == 1).all()
    assert "fewer than 2 seeds" in gg_cam.verdict(table)


def test_cue_following_counts():
    truth = pd.DataFrame({"dicom_id": ["a", "b", "c", "d"], "cue_position": [0, 2, 1, 1]})
    preds = pd.DataFrame({"id": ["a", "b", "c", "d"], "label": [0, 1, 2, 1], "pred": [0, 2, 2, 0]})
    run = SimpleNamespace(predictions={"best": preds}, spec=SimpleNamespace(config={"arm": "resnet"}, seed=3))
    row = gg_cam.cue_following([run], truth).iloc[0]
    assert (row["arm"], row["seed"]) == ("resnet", 3)
    assert row["follows cue"] == pytest.approx(2 / 4)  # a (0 = 0), b (2 = 2)
    assert row["follows label"] == pytest.approx(2 / 4)  # a, c


def test_real_data_has_no_cue_scenario(tmp_path):
    with pytest.raises(ValueError, match="scenario 'cue' exists only for the synthetic data"):
        gg_cam.load_splits("smoke", "cue", tmp_path, model=None, settings={})


def test_curriculum_summary_sentences():
    table = pd.DataFrame({"scenario": ["default"] * 3, "arm": ["resnet+gg-cam"] * 3, "seed": [0, 1, 2],
                          "cross_epoch": [None, 5, None], "gaze_dominated_epochs": [8, 4, 8], "epochs": [8, 8, 8]})
    text = gg_cam.curriculum_summary(table)
    assert text == ("resnet+gg-cam (default): the gaze term dominated 4-8 of 8 epochs; "
                    "the terms crossed in 1 of 3 runs (epochs [5]).")


def _per_class_frame() -> pd.DataFrame:
    """resnet vs resnet+gg-cam (public code), 4 seeds, every report metric at the best checkpoint (last = best)."""
    values = {
        "resnet": {"auc": [0.70, 0.72, 0.71, 0.69], "auc_ovr": [0.71, 0.73, 0.72, 0.70],
                   "interpretability/cardiomegaly": [0.2, 0.3, 0.25, 0.2],
                   "interpretability/pneumonia": [0.5, 0.6, 0.55, 0.5],
                   "interpretability_public/cardiomegaly": [1.0, 1.0, 1.0, 1.0]},
        "resnet+gg-cam (public code)": {"auc": [0.71, 0.70, 0.72, 0.70], "auc_ovr": [0.72, 0.71, 0.73, 0.71],
                                        "interpretability/cardiomegaly": [0.8, 0.9, 0.85, 0.9],
                                        "interpretability/pneumonia": [0.2, 0.3, 0.25, 0.3],
                                        "interpretability_public/cardiomegaly": [1.0, 1.0, 1.0, 1.0]},
    }
    rows = []
    for arm, metrics in values.items():
        for seed in range(4):
            row = {"scenario": "default", "arm": arm, "seed": seed}
            for metric, vals in metrics.items():
                row[f"metrics.best.{metric}"] = row[f"metrics.last.{metric}"] = vals[seed]
            rows.append(row)
    return pd.DataFrame(rows)


def test_anova_per_class_with_titles_matches_scipy():
    frame = _per_class_frame()
    assert gg_cam.report_metrics(frame) == [
        "auc", "auc_ovr", "interpretability/cardiomegaly", "interpretability/pneumonia",
        "interpretability_public/cardiomegaly",
    ]
    table = gg_cam.anova_table(frame)
    assert set(table["metric"]) == set(gg_cam.report_metrics(frame)) and len(table) == 5 * 2
    best = table[table["checkpoint"] == "best"].set_index("metric")
    for metric in ("interpretability/cardiomegaly", "interpretability/pneumonia", "auc_ovr"):
        column = frame[f"metrics.best.{metric}"]
        expected = f_oneway(column[:4], column[4:])
        assert best.loc[metric, "F"] == pytest.approx(expected.statistic)
        assert best.loc[metric, "p"] == pytest.approx(expected.pvalue)
    assert best.loc["interpretability/cardiomegaly", ["median standard", "median gaze"]].tolist() == [0.225, 0.875]
    assert best.loc["auc", "title"] == "AUC (one-vs-one, macro; the paper's)"
    assert best.loc["auc_ovr", "title"] == "AUC (one-vs-rest, macro; the public code's log)"
    assert "3 x 3 neighbourhood" in best.loc["interpretability_public/cardiomegaly", "title"]
    # every run scored 1.0 under the public code's rule: no variance, no test (OLS would give round-off)
    assert np.isnan(best.loc["interpretability_public/cardiomegaly", ["F", "p"]].astype(float)).all()
    assert gg_cam.anova_table(frame, metrics=["auc"])["metric"].unique().tolist() == ["auc"]


def test_verdict_per_class_one_line_per_metric():
    table = gg_cam.anova_table(_per_class_frame())
    metrics = ("auc", "interpretability/cardiomegaly", "interpretability/pneumonia",
               "interpretability_public/cardiomegaly")
    lines = gg_cam.verdict(table, metrics=metrics).split("\n")
    assert len(lines) == 4
    assert lines[0].startswith("resnet vs resnet+gg-cam (public code): gaze supervision did not significantly "
                               "improve the test AUC (one-vs-one, macro; the paper's): median 0.705 -> 0.705")
    assert "improved the test interpretability, cardiomegaly -> heart (Eq. 12, peak cell; the paper's rule): " \
           "median 0.225 -> 0.875" in lines[1]
    assert "significantly lowered the test interpretability, pneumonia -> lungs" in lines[2]
    assert lines[3] == ("resnet vs resnet+gg-cam (public code): every run of both networks scored 1.000 "
                        "(interpretability, cardiomegaly -> heart (3 x 3 neighbourhood of the peak; the public code's "
                        "rule)), no test.")
    smoke = gg_cam.verdict(table, profile="smoke", metrics=metrics)
    assert smoke.count(SMOKE_CAVEAT) == 1 and smoke.endswith("\n".join(lines))
    with pytest.raises(ValueError, match=r"no metric\(s\) \['interpretability'\]"):
        gg_cam.verdict(table, metrics=("interpretability",))


def test_verdict_without_a_pair():
    table = gg_cam.anova_table(_per_class_frame().query("arm == 'resnet'"))
    assert table.empty and "p" in table.columns
    assert gg_cam.verdict(table) == "No standard/GG-CAM pair was run in this scenario."


def test_metric_summary_titles_and_values():
    table = gg_cam.metric_summary(_per_class_frame())
    assert list(table.columns) == [gg_cam.REPORT_METRICS[m] for m in gg_cam.report_metrics(_per_class_frame())]
    row = table.loc["default | resnet"]
    # median of 0.2, 0.3, 0.25, 0.2 is 0.225; sample std sqrt(((-0.0375)^2 * 2 + 0.0625^2 + 0.0125^2) / 3) = 0.048
    assert row["interpretability, cardiomegaly -> heart (Eq. 12, peak cell; the paper's rule)"] == "0.225 ± 0.048"
