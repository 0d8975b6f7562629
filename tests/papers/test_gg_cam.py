"""GG-CAM's study: typed settings, arms (the balance schedules of issue 24 included), Table 1 as used, curriculum
predicted and measured, the ANOVA of every report metric (AUCs, Eq. 12 per class and rule) against scipy, the
verdict and claims, cue following."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import f_oneway

from attnlib.core.profiles import available_profiles, load_settings
from attnlib.core.settings import SettingsError, from_mapping
from attnlib.engine.runstore import RunResult, RunSpec, RunStore
from attnlib.engine.study import ArmRun, StudyContext
from attnlib.evaluation.stats import SMOKE_CAVEAT
from attnlib.losses.gg_cam import balance_step, curriculum_sigma_sm_init, simulate_scalar_adam
from attnlib.papers import gg_cam
from attnlib.papers.gg_cam import GGCAMSettings, GGCAMStudy

PUBLIC = "resnet+gg-cam (public code)"
FIXED = "resnet+gg-cam (fixed weights)"
BUDGET = "resnet+gg-cam (budget curriculum)"
PROFILES = Path(gg_cam.__file__).parents[1] / "core" / "profiles"


@pytest.fixture
def steps(monkeypatch):
    """Every run's budget set to 112 steps (the quick profile: 8 epochs x ceil(210 / 16)), without the data."""
    monkeypatch.setattr(GGCAMStudy, "total_steps", lambda self, arm, scenario: 112)
    return 112


def _study(tmp_path, profile="smoke", **options) -> GGCAMStudy:
    return GGCAMStudy(StudyContext(RunStore(tmp_path / "store"), profile), **options)


def _run(arm: str, seed: int, values: dict[str, float], scenario: str = "default", last_shift: float = 0.0,
         predictions: pd.DataFrame | None = None, history: pd.DataFrame | None = None) -> ArmRun:
    spec = RunSpec("gg_cam", {"arm": arm}, seed, "smoke", "data", code="code")
    result = RunResult(spec, Path("unused"), history if history is not None else pd.DataFrame({"epoch": [1]}), {},
                       {"best": predictions} if predictions is not None else {}, frozenset())
    last = {k: v + last_shift for k, v in values.items()}
    return ArmRun(arm, scenario, seed, [result], {"best": dict(values), "last": last}, {"best": 1, "last": 2})


def _recorded(tmp_path, table: dict[str, dict[str, list[float]]], networks=None) -> GGCAMStudy:
    study = _study(tmp_path, networks=networks or list(table), scenarios=["default"])
    for arm, metrics in table.items():
        for seed in range(len(next(iter(metrics.values())))):
            study.record(_run(arm, seed, {m: v[seed] for m, v in metrics.items()}, last_shift=-0.01))
    return study


def test_every_profile_loads_and_table1_in_the_paper_profile(tmp_path, steps):
    for name in available_profiles():
        settings = load_settings(GGCAMSettings, name, "gg_cam")
        assert (settings.fixed_weight, settings.curriculum_fraction) == (1.0, 0.5) and settings.curriculum_l_sm > 0
    table = _study(tmp_path, "paper", networks=list(gg_cam.ARMS)).hyperparameters()
    assert table.loc["resnet", ["backbone", "lr", "plateau patience"]].tolist() == ["resnet50", 1e-4, 50]
    assert table.loc["effnet", ["backbone", "lr", "plateau patience"]].tolist() == ["efficientnet_v2_s", 1e-3, 25]
    assert table.loc["resnet+gg-cam", ["lr", "plateau patience", "sigma_sm init"]].tolist() == [7e-3, 30, 2.0e-9]
    assert table.loc["effnet+gg-cam", ["lr", "plateau patience", "sigma_sm init"]].tolist() == [6e-3, 40, 1.4e-11]
    assert table.loc[PUBLIC, "variant"] == "public_code"
    assert table.loc[PUBLIC, "sigma_ce init"] == pytest.approx(np.exp(7.0))


def test_a_misspelt_or_missing_or_mistyped_key_names_the_file_and_key():
    section = yaml.safe_load((PROFILES / "smoke.yaml").read_text())["gg_cam"]
    with pytest.raises(SettingsError, match=r"smoke.yaml: gg_cam: unknown key 'epoch' \(did you mean 'epochs'\?\)"):
        from_mapping(GGCAMSettings, {**section, "epoch": 3}, "smoke.yaml: gg_cam")
    recipe = {k: v for k, v in section["public_code"].items() if k != "resample"}
    with pytest.raises(SettingsError, match=r"gg_cam.public_code: missing key\(s\) \['resample'\]"):
        from_mapping(GGCAMSettings, {**section, "public_code": recipe}, "smoke.yaml: gg_cam")
    with pytest.raises(SettingsError, match=r"gg_cam: missing key\(s\) \['curriculum_fraction'\]"):
        without = {k: v for k, v in section.items() if k != "curriculum_fraction"}
        from_mapping(GGCAMSettings, without, "smoke.yaml: gg_cam")
    with pytest.raises(SettingsError, match="0 < curriculum_fraction <= 1"):
        from_mapping(GGCAMSettings, {**section, "curriculum_fraction": 0.0}, "smoke.yaml: gg_cam")
    with pytest.raises(SettingsError, match=r"gg_cam.epochs: expected an integer, got 'two'"):
        from_mapping(GGCAMSettings, {**section, "epochs": "two"}, "smoke.yaml: gg_cam")
    with pytest.raises(SettingsError, match=r"resample: 'nearest' is not one of \['area', 'public_corner'\]"):
        from_mapping(GGCAMSettings, {**section, "public_code": {**section["public_code"], "resample": "nearest"}},
                     "smoke.yaml: gg_cam")


def test_unknown_network_and_dataset_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown GG-CAM network 'vgg'"):
        _study(tmp_path, networks=["vgg"])
    with pytest.raises(ValueError, match="EGD-CXR only, got dataset='cub'"):
        _study(tmp_path, dataset="cub")
    with pytest.raises(ValueError, match="unknown arm"):
        _study(tmp_path).run([0], arms=["effnet"])


def test_public_code_arm_runs_the_public_recipe_and_the_table_says_so(tmp_path):
    table = _study(tmp_path, "paper", networks=list(gg_cam.ARMS)).hyperparameters()
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


@pytest.mark.slow
def test_public_arm_trains_on_the_public_gaze_maps_and_is_scored_on_the_paper_masks(tmp_path):
    study = _study(tmp_path, networks=["resnet", PUBLIC])
    settings = study.settings
    paper = study.splits("default", study.arm("resnet"))
    public = study.splits("default", study.arm(PUBLIC))
    train = public["train"].settings
    assert (train.blur_units, train.resample, train.gaze_source, train.gaze_weight) == (
        "opencv_kernel", "public_corner", "eye_gaze", "count",
    )
    # one CNN cell in DICOM pixels: 32 image pixels at the profile's scale
    assert train.corner_pad is None and train.corner_stride == round(32 / settings.scale)
    first = public["train"][0]["hmap"]
    assert first.shape == paper["train"][0]["hmap"].shape
    assert not np.allclose(first.numpy(), paper["train"][0]["hmap"].numpy())
    assert (first[0, 0, :] == 0).all() and (first[0, :, 0] == 0).all()  # corner samples of the padding
    assert public["test"].settings == paper["test"].settings  # Eq. 12 on the same masks for every arm
    run = study.training_run(PUBLIC, 0, "default")
    assert run.config["gaze"]["resample"] == "public_corner" and run.train.reload_best_on_lr_drop
    assert run.spec().config["evaluators"] == ["localisation"]


def test_curriculum_cross_epoch():
    history = pd.DataFrame({"epoch": [1, 2, 3, 4], "train_term_sm": [10.0, 5.0, 1.0, 0.5],
                            "train_term_ce": [1.0, 1.0, 1.0, 1.0], "train_sm": [0.3, 0.2, 0.1, 0.05]})
    assert gg_cam.curriculum(history, 14) == {"cross_epoch": 3, "cross_step": 42, "gaze_dominated_epochs": 2,
                                              "epochs": 4, "l_sm": pytest.approx(0.2)}  # mean of 0.3, 0.2, 0.1
    history["train_term_sm"] = 1e9
    never = gg_cam.curriculum(history, 14)
    assert never["cross_epoch"] is None and never["cross_step"] is None and never["l_sm"] == pytest.approx(0.1625)


def test_total_steps_count_the_last_smaller_batch(tmp_path):
    settings = load_settings(GGCAMSettings, "quick", "gg_cam")  # 8 epochs, batch 16
    arm = gg_cam.Arm.parse(BUDGET, settings)
    assert gg_cam.total_steps(arm, settings, 210) == 8 * 14
    assert gg_cam.total_steps(arm, settings, 208) == 8 * 13
    public = gg_cam.Arm.parse(PUBLIC, load_settings(GGCAMSettings, "paper", "gg_cam"))
    assert gg_cam.total_steps(public, load_settings(GGCAMSettings, "paper", "gg_cam"), 758) == 1024 * 190


def test_the_three_balance_schedules():
    settings = load_settings(GGCAMSettings, "quick", "gg_cam")  # lr 1e-3 for every arm, sigmas at that rate
    table1, fixed, budget = (gg_cam.Arm.parse(n, settings) for n in ("resnet+gg-cam", FIXED, BUDGET))
    assert (table1.schedule, fixed.schedule, budget.schedule) == ("table1", "fixed", "budget")
    assert (fixed.gaze, fixed.eq11, budget.eq11, table1.eq11, fixed.backbone) == (True, False, True, True, "resnet18")
    config = gg_cam.method_config(fixed, settings)
    assert (config.schedule, config.fixed_weight, config.variant) == ("fixed", 1.0, "paper")
    assert gg_cam.method_config(table1, settings, 112).sigma_sm_init == 2.0e-9  # Table 1's init, whatever the budget
    with pytest.raises(ValueError, match="needs the run's total_steps"):
        gg_cam.method_config(budget, settings)
    config = gg_cam.method_config(budget, settings, 112)
    l_sm = settings.curriculum_l_sm
    expected = curriculum_sigma_sm_init(112, 0.5, l_sm=l_sm, lr=1e-3, parameterisation="log", l_ce=math.log(3),
                                        s_ce_init=1.0, train_s_ce=True)
    assert (config.schedule, config.sigma_ce_init) == ("eq11", 1.0) and config.sigma_sm_init == expected
    # the scalar simulation of that init (both sigmas trained, L_ce = ln 3) balances at step 56 of 112
    frame = simulate_scalar_adam(l_sm, expected, lr=1e-3, steps=112, l_ce=math.log(3), train_s_ce=True)
    assert balance_step(frame) == gg_cam.predicted_balance(budget, settings, 112) == 56
    # Table 1's 2e-9 needs log sigma_sm to grow by ~18 at no more than ~lr = 1e-3 per step: no balance in the run
    assert gg_cam.predicted_balance(table1, settings, 112) is None
    with pytest.raises(ValueError, match="no Eq. 11 balance"):
        gg_cam.predicted_balance(fixed, settings, 112)
    assert isinstance(gg_cam.build_method(fixed, settings, 3, start=False), gg_cam.GGCAM)


def test_new_arms_are_compared_with_resnet_and_described(tmp_path, steps):
    study = _study(tmp_path, "quick", networks=list(gg_cam.ARMS), scenarios=["default"])
    assert [str(c) for c in study.comparisons()] == [
        "resnet+gg-cam vs resnet", "effnet+gg-cam vs effnet", f"{PUBLIC} vs resnet", f"{FIXED} vs resnet",
        f"{BUDGET} vs resnet",
    ]
    claims = [spec.claim for spec in study.claim_specs()]
    assert "gaze supervision with a fixed weight instead of Eq. 11 raises the test AUC of resnet" in claims
    assert ("gaze supervision with Eq. 11's curriculum fitted to the run puts resnet's CAM peak in the heart more "
            "often") in claims
    table = study.hyperparameters()
    assert table.loc[FIXED, "balance"] == "fixed: L_ce + 1 L_sm"
    assert np.isnan(table.loc[FIXED, "sigma_sm init"]) and table.loc[FIXED, "scalar lr"] == 1e-3
    assert table.loc[BUDGET, "balance"] == (
        f"Eq. 11, sigma_sm init balancing at 0.5 of 112 steps (L_sm = {study.settings.curriculum_l_sm:g})")
    budget = gg_cam.method_config(study.arm(BUDGET), study.settings, 112)
    assert table.loc[BUDGET, "sigma_sm init"] == budget.sigma_sm_init
    assert table.loc["resnet+gg-cam", "balance"] == "Eq. 11 from Table 1's sigma inits"
    assert table.loc["resnet", "balance"] == ""


def test_anova_matches_scipy_and_verdict_and_claims_follow_it(tmp_path):
    standard, gaze = [0.70, 0.72, 0.71, 0.69, 0.73], [0.80, 0.79, 0.82, 0.81, 0.78]
    study = _recorded(tmp_path, {"resnet": {"auc": standard}, "resnet+gg-cam": {"auc": gaze}})
    tests = study.tests()
    row = tests[(tests["metric"] == "auc") & (tests["checkpoint"] == "best")].iloc[0]
    expected = f_oneway(gaze, standard)
    assert row["statistic"] == pytest.approx(expected.statistic) and row["p"] == pytest.approx(expected.pvalue)
    assert (row["median reference"], row["median method"], row["n"]) == (0.71, 0.80, 5)
    assert row["comparison"] == "resnet+gg-cam vs resnet" and "ANOVA" in row["test"]
    verdict = study.verdict(metrics=["auc"])
    assert verdict.startswith(SMOKE_CAVEAT)  # the study runs in the smoke profile
    assert f"median 0.710 -> 0.800; better (p = {expected.pvalue:.2g})" in verdict
    claim = study.claims()[0]
    assert (claim.value, claim.reference, claim.n, claim.paper_value) == (0.80, 0.71, 5, "0.721 -> 0.776 (p = 3.2e-4)")
    assert claim.p == pytest.approx(expected.pvalue) and claim.checkpoint == "best checkpoint: lowest validation loss"
    assert claim.spread == f"± {np.std(gaze, ddof=1):.3f} (std over 5 seeds)"

    worse = _recorded(tmp_path / "w", {"resnet": {"auc": gaze}, "resnet+gg-cam": {"auc": standard}})
    assert "worse (p = " in worse.verdict(metrics=["auc"])
    overlapping = _recorded(tmp_path / "o", {"resnet": {"auc": standard}, "resnet+gg-cam": {"auc": [0.71, 0.70, 0.73, 0.69, 0.72]}})
    assert "no significant difference" in overlapping.verdict(metrics=["auc"])


def test_one_seed_per_arm_gives_no_test(tmp_path):
    study = _recorded(tmp_path, {"resnet": {"auc": [0.7]}, "resnet+gg-cam": {"auc": [0.8]}})
    assert study.tests()["p"].isna().all() and (study.tests()["n"] == 1).all()
    assert "fewer than 2 seeds" in study.verdict(metrics=["auc"])


def test_cue_following_counts(tmp_path, monkeypatch):
    truth = pd.DataFrame({"dicom_id": ["a", "b", "c", "d"], "cue_position": [0, 2, 1, 1]})
    preds = pd.DataFrame({"id": ["a", "b", "c", "d"], "label": [0, 1, 2, 1], "pred": [0, 2, 2, 0]})
    monkeypatch.setattr(gg_cam, "read_truth", lambda root: truth)
    monkeypatch.setattr(gg_cam, "scenario_root", lambda profile, scenario: tmp_path)
    study = _study(tmp_path, networks=["resnet"], scenarios=["default", "cue"])
    study.record(_run("resnet", 3, {"auc": 0.5}, scenario="cue", predictions=preds))
    row = study.cue_following().iloc[0]
    assert (row["arm"], row["seed"]) == ("resnet", 3)
    assert row["follows cue"] == pytest.approx(2 / 4)  # a (0 = 0), b (2 = 2)
    assert row["follows label"] == pytest.approx(2 / 4)  # a, c


def test_real_data_has_no_cue_scenario(tmp_path):
    with pytest.raises(ValueError, match="scenario 'cue' exists only for the synthetic data"):
        gg_cam.load_splits("smoke", "cue", tmp_path, model=None, settings=None)
    assert _study(tmp_path, data_root=tmp_path, scenarios=["default", "cue"]).scenarios() == ["default"]


def test_curricula_of_the_gaze_runs_and_their_summary(tmp_path, steps):
    study = _study(tmp_path, "quick", networks=["resnet", "resnet+gg-cam", FIXED, BUDGET], scenarios=["default"])
    for seed, (sm, cross) in enumerate(((1e9, None), ([10.0, 0.5] * 4, 2), (1e9, None))):
        history = pd.DataFrame({"epoch": range(1, 9), "train_term_sm": sm, "train_term_ce": 1.0, "train_sm": 0.2})
        study.record(_run("resnet+gg-cam", seed, {"auc": 0.5}, history=history))
        last = study.curricula().iloc[-1]
        assert last["cross_epoch"] == cross or (cross is None and pd.isna(last["cross_epoch"]))
    study.record(_run("resnet", 0, {"auc": 0.5}))
    history = pd.DataFrame({"epoch": range(1, 9), "train_term_sm": [3.0, 2.0, 1.5, 1.2, 0.9, 0.8, 0.7, 0.6],
                            "train_term_ce": 1.0, "train_sm": [0.2, 0.1, 0.1, 0.1, 0.1, 0.0, 0.0, 0.0]})
    study.record(_run(BUDGET, 0, {"auc": 0.5}, history=history))
    study.record(_run(FIXED, 0, {"auc": 0.5}, history=history))
    table = study.curricula()
    assert len(table) == 4  # the plain network and the fixed weights have no Eq. 11 curriculum
    budget = table[table["arm"] == BUDGET].iloc[0]
    # predicted: half of the 112 steps; measured: epoch 5 of 14 steps each, by step 70; L_sm over epochs 1-5
    assert (budget["total_steps"], budget["predicted_step"], budget["cross_epoch"], budget["cross_step"]) == (
        112, 56, 5, 70)
    assert budget["l_sm"] == pytest.approx(0.12)
    assert table[table["arm"] == "resnet+gg-cam"]["predicted_step"].isna().all()  # Table 1's init: not in 112 steps
    assert study.curriculum_summary() == (
        "resnet+gg-cam (default): the gaze term dominated 4-8 of 8 epochs; the terms crossed in 1 of 3 runs "
        "(epochs [2], by steps [28]); predicted not within the run's 112 steps.\n"
        f"{BUDGET} (default): the gaze term dominated 4 of 8 epochs; the terms crossed in 1 of 1 runs "
        "(epochs [5], by steps [70]); predicted at step 56 of 112.")


def _per_class(tmp_path) -> GGCAMStudy:
    """resnet vs resnet+gg-cam (public code), 4 seeds, every report metric at the best checkpoint."""
    return _recorded(tmp_path, {
        "resnet": {"auc": [0.70, 0.72, 0.71, 0.69], "auc_ovr": [0.71, 0.73, 0.72, 0.70],
                   "interpretability/cardiomegaly": [0.2, 0.3, 0.25, 0.2],
                   "interpretability/pneumonia": [0.5, 0.6, 0.55, 0.5],
                   "interpretability_public/cardiomegaly": [1.0, 1.0, 1.0, 1.0]},
        PUBLIC: {"auc": [0.71, 0.70, 0.72, 0.70], "auc_ovr": [0.72, 0.71, 0.73, 0.71],
                 "interpretability/cardiomegaly": [0.8, 0.9, 0.85, 0.9],
                 "interpretability/pneumonia": [0.2, 0.3, 0.25, 0.3],
                 "interpretability_public/cardiomegaly": [1.0, 1.0, 1.0, 1.0]},
    })


def test_anova_per_class_with_titles_matches_scipy(tmp_path):
    study = _per_class(tmp_path)
    tests = study.tests()
    assert set(tests["metric"]) == {"auc", "auc_ovr", "interpretability/cardiomegaly", "interpretability/pneumonia",
                                    "interpretability_public/cardiomegaly"} and len(tests) == 5 * 2
    best = tests[tests["checkpoint"] == "best"].set_index("metric")
    wide = study.wide("best")
    for metric in ("interpretability/cardiomegaly", "interpretability/pneumonia", "auc_ovr"):
        expected = f_oneway(*(wide.loc[wide["arm"] == arm, metric] for arm in (PUBLIC, "resnet")))
        assert best.loc[metric, "statistic"] == pytest.approx(expected.statistic)
        assert best.loc[metric, "p"] == pytest.approx(expected.pvalue)
    assert best.loc["interpretability/cardiomegaly", ["median reference", "median method"]].tolist() == [0.225, 0.875]
    assert best.loc["auc", "title"] == "AUC (one-vs-one, macro; the paper's)"
    assert "3 x 3 neighbourhood" in best.loc["interpretability_public/cardiomegaly", "title"]
    # every run scored 1.0 under the public code's rule: no variance, no test (OLS would give round-off)
    assert np.isnan(best.loc["interpretability_public/cardiomegaly", ["statistic", "p"]].astype(float)).all()
    assert study.tests(["auc"])["metric"].unique().tolist() == ["auc"]


def test_verdict_per_class_one_line_per_metric(tmp_path):
    study = _per_class(tmp_path)
    metrics = ("auc", "interpretability/cardiomegaly", "interpretability/pneumonia",
               "interpretability_public/cardiomegaly")
    lines = study.verdict(metrics=metrics).split("\n")
    assert lines[0] == SMOKE_CAVEAT and len(lines) == 5
    assert lines[1].startswith(f"{PUBLIC} vs resnet: AUC (one-vs-one, macro; the paper's): median 0.705 -> 0.705; "
                               "no significant difference")
    assert "cardiomegaly -> heart (Eq. 12, peak cell; the paper's rule): median 0.225 -> 0.875; better" in lines[2]
    assert "pneumonia -> lungs (Eq. 12, peak cell; the paper's rule): median 0.525 -> 0.275; worse" in lines[3]
    assert "median 1.000 -> 1.000; no test: no variation within the arms" in lines[4]
    default = study.verdict().split("\n")  # the study's verdict metrics: AUC and Eq. 12 per class, both rules
    assert len(default) == 1 + 4  # interpretability_public/pneumonia was not recorded


def test_verdict_without_a_pair(tmp_path):
    study = _recorded(tmp_path, {"resnet": {"auc": [0.7, 0.8]}})
    assert study.tests().empty and "p" in study.tests().columns
    assert study.verdict().endswith("No method was run beside its reference arm.")


def test_summary_titles_and_values(tmp_path):
    table = _per_class(tmp_path).summary("best")
    row = table.loc["resnet"]
    # median of 0.2, 0.3, 0.25, 0.2 is 0.225; sample std sqrt(((-0.0375)^2 * 2 + 0.0625^2 + 0.0125^2) / 3) = 0.048
    assert row["interpretability, cardiomegaly -> heart (Eq. 12, peak cell; the paper's rule)"] == "0.225 ± 0.048"
    assert list(table.index) == ["resnet", PUBLIC]


def test_results_are_one_tidy_frame(tmp_path):
    frame = _per_class(tmp_path).results()
    assert list(frame.columns) == ["study", "arm", "scenario", "seed", "checkpoint", "metric", "value"]
    assert len(frame) == 2 * 4 * 2 * 5  # arms x seeds x checkpoints x metrics
    assert set(frame["study"]) == {"gg_cam"}
