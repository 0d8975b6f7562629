"""GG-CAM's study pipeline: arms, Table 1 as used, curriculum, ANOVA table, verdict, cue following."""

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
        gg_cam.Arm.parse("vgg", {"resnet": "resnet18", "effnet": "efficientnet_b0"})


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
