"""Paper 2's study: settings, arms, grids, the CV epoch selection, the baselines and the statistics."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from attnlib.core import profiles
from attnlib.core.profiles import available_profiles, load_settings
from attnlib.core.settings import SettingsError
from attnlib.engine.runstore import RunStore
from attnlib.engine.study import StudyContext
from attnlib.engine.trainer import Trainer
from attnlib.methods.global_attention import GlobalAttention
from attnlib.papers import global_attention as ga

SMOKE = load_settings(ga.GlobalAttentionSettings, "smoke", "global_attention")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return ga.synthetic_structured("smoke", root=tmp_path_factory.mktemp("structured"))


def make_study(store: Path, root: Path | None = None, **options) -> ga.GlobalAttentionStudy:
    """The smoke study on the synthetic set at ``root`` (or on ``options``' data), its runs in ``store``."""
    data = {"dataset": "synthetic", "data_root": root} if root is not None else {}
    return ga.GlobalAttentionStudy.create("smoke", store, **data, **options)


@pytest.mark.parametrize("profile", available_profiles())
def test_every_profile_loads(profile):
    settings = load_settings(ga.GlobalAttentionSettings, profile, "global_attention")
    assert settings.top_epochs <= settings.epochs and settings.sensitivity.selection in ("cv", "holdout")
    for name in settings.arm_names():
        ga.Arm.parse(name)


@pytest.mark.parametrize(("path", "key", "wrong", "message"), [
    ((), "cv_folds", "cv_fold", r"smoke\.yaml: global_attention: unknown key 'cv_fold' \(did you mean 'cv_folds'\?\)"),
    (("grid",), "k", "kk", r"smoke\.yaml: global_attention\.grid: unknown key 'kk'"),
])
def test_a_misspelt_profile_key_names_the_file_and_key(monkeypatch, path, key, wrong, message):
    original = profiles.load_profile

    def misspelt(name=None):
        profile = original(name)
        section = profile["global_attention"]
        for part in path:
            section = section[part]
        section[wrong] = section.pop(key)
        return profile

    monkeypatch.setattr(profiles, "load_profile", misspelt)
    with pytest.raises(SettingsError, match=message):
        load_settings(ga.GlobalAttentionSettings, "smoke", "global_attention")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("epochs", "two", r"smoke\.yaml: global_attention\.epochs: expected an integer"),
    ("top_epochs", 99, r"smoke\.yaml: global_attention: top_epochs \(99\) exceeds epochs"),
])
def test_a_wrong_value_names_the_file_and_key(monkeypatch, key, value, message):
    original = profiles.load_profile

    def broken(name=None):
        profile = original(name)
        profile["global_attention"][key] = value
        return profile

    monkeypatch.setattr(profiles, "load_profile", broken)
    with pytest.raises(SettingsError, match=message):
        load_settings(ga.GlobalAttentionSettings, "smoke", "global_attention")


def test_arm_names_parse():
    assert ga.Arm.parse("resnet18") == ga.Arm("resnet18", "vanilla", "resnet18")
    assert ga.Arm.parse("vgg16+attention") == ga.Arm("vgg16+attention", "attention", "vgg16")
    assert ga.Arm.parse("densenet161+l1").variant == "l1"
    assert ga.Arm.parse("svm") == ga.Arm("svm", "svm", None)
    for bad in ("resnet18+gala", "alexnet", "vgg_att3+attention"):
        with pytest.raises(ValueError, match="unknown global-attention arm"):
            ga.Arm.parse(bad)
    settings = replace(SMOKE, backbones=("a", "b"), variants=("vanilla", "l1"), baselines=("lr",))
    assert settings.arm_names() == ["a", "a+l1", "b", "b+l1", "lr"]


def test_the_study_checks_its_arms(tmp_path):
    with pytest.raises(ValueError, match="unknown global-attention arm"):
        make_study(tmp_path, arms=["resnet18", "resnet18+gala"])
    study = make_study(tmp_path, arms=["resnet18+attention", "resnet18"])
    assert study.arms() == ["resnet18+attention", "resnet18"]
    assert [str(c) for c in study.comparisons()] == ["resnet18+attention vs resnet18"]


def test_top_epochs_picks_highest_and_breaks_ties_early():
    curve = pd.Series([0.5, 0.9, 0.7, 0.9, 0.6, 0.7], index=range(1, 7))
    assert ga.top_epochs(curve, 1) == [2]
    assert ga.top_epochs(curve, 3) == [2, 3, 4]  # 0.9, 0.9, then the first 0.7
    assert ga.top_epochs(curve, 6) == [1, 2, 3, 4, 5, 6]


def test_grid_product_overrides_and_unknown_keys(tmp_path):
    settings = replace(SMOKE, grid=ga.Grid(weight_decay=(1e-3, 1e-4), k=(8, 16, 32), l1_weight=(0.1,),
                                           pixel_l1_weight=(1.0,)), cutoff_epoch=7)
    study = ga.GlobalAttentionStudy(StudyContext(RunStore(tmp_path), "smoke"), settings)
    points = study.grid(ga.Arm.parse("resnet18+attention"))
    assert len(points) == 6 and {p["cutoff_epoch"] for p in points} == {7}
    assert {(p["weight_decay"], p["k"]) for p in points} == {(w, k) for w in (1e-3, 1e-4) for k in (8, 16, 32)}
    fixed = study.grid(ga.Arm.parse("resnet18+attention"), {"k": 4, "cutoff_epoch": 0})
    assert [(p["k"], p["cutoff_epoch"]) for p in fixed] == [(4, 0), (4, 0)]
    assert study.grid(ga.Arm.parse("resnet18")) == [{"weight_decay": 1e-3}, {"weight_decay": 1e-4}]
    with pytest.raises(ValueError, match="has no setting"):
        study.grid(ga.Arm.parse("resnet18+l1"), {"k": 4})


def test_load_data_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        ga.load_data("cub", profile="smoke")
    with pytest.raises(ValueError, match="needs data_root"):
        ga.load_data("jaffe", profile="smoke")
    with pytest.raises(ValueError, match="only to the generated synthetic"):
        ga.load_data("jaffe", tmp_path, profile="smoke", cue=True)
    with pytest.raises(ValueError, match="needs data_root"):  # the study checks its data options when created
        make_study(tmp_path, dataset="idrid-dr")


def test_synthetic_data_is_the_generated_split(root, tmp_path):
    data = make_study(tmp_path, root).data
    assert data.image_shape == (1, 32, 32)
    assert len(data.train) + len(data.test) == 40 and len(data.test) == 9
    assert data.region_mask.shape == (32, 32) and data.region_mask.sum() == 64
    assert set(data.train.ids).isdisjoint(data.test.ids)


def test_parameter_count_table_matches_the_built_pixel_cnn(root, tmp_path):
    study = make_study(tmp_path, root)
    table = study.parameter_counts([2, 5])
    for row in table.to_dict("records"):
        point = {"k": row["K"], "l1_weight": 0.01, "cutoff_epoch": 1}
        method = ga.build_method(ga.Arm.parse("resnet18+attention"), point, study.data.train, pretrained=False)
        assert row["parameters"] == sum(p.numel() for p in method.pixel_cnn.parameters())
        assert row["N"] == len(study.data.train) and row["C"] == 1
    assert study.parameter_counts()["K"].tolist() == sorted({*SMOKE.grid.k, *SMOKE.sensitivity.k})


def test_cv_protocol_selects_on_folds_and_reads_the_final_test_curve(root, tmp_path, monkeypatch):
    study = make_study(tmp_path / "store", root)
    built = []
    original = ga.build_method
    monkeypatch.setattr(ga, "build_method", lambda *a, **k: built.append(original(*a, **k)) or built[-1])
    result = study.run_arm("resnet18+attention", 3)

    curves = {}
    for spec_file in (tmp_path / "store" / study.name).glob("*/seed3/spec.json"):
        fold = json.loads(spec_file.read_text())["config"]["fold"]
        if fold is not None:
            curves[fold] = pd.read_csv(spec_file.parent / "history.csv").set_index("epoch")["val_accuracy"]
    assert sorted(curves) == [0, 1]  # smoke: 2 folds, and one final fit
    assert len(result.runs) == 3 and result.runs[-1] is result.final
    mean_curve = pd.concat(list(curves.values()), axis=1).mean(axis=1)
    best = mean_curve.max()
    assert result.selected_epochs == [int(mean_curve.idxmax())] and mean_curve[result.selected_epochs[0]] == best
    test_curve = result.final.history.set_index("epoch")["test_accuracy"]
    assert result.test_accuracy.tolist() == test_curve[result.selected_epochs].tolist()
    assert result.accuracy == pytest.approx(float(np.mean(result.test_accuracy)))
    # the results frame holds the paper's figure and the map's region AUCs under the selected epochs
    values = result.values[ga.SELECTED]
    assert values["accuracy"] == result.accuracy
    assert values["map_region_auc/final"] == result.final.metrics["map_region_auc"]["final"]
    # the pixel CNN saw each fit's own training set: two folds' parts, then the whole training set
    sizes = sorted(m.pixels.shape[1] for m in built if isinstance(m, GlobalAttention))
    fold_sizes = sorted(len(fit) for fit, _ in ga.stratified_folds(study.data.train.labels, 2, 3))
    assert sizes == sorted([*fold_sizes, len(study.data.train)])
    maps = result.final.state_dict("maps")
    assert maps["final"].shape == (32, 32) and "map_region_auc" in result.final.metrics
    # the report reads the maps, never the network weights: only the maps are kept
    assert [p.name for p in result.final.path.glob("weights_*.pt")] == ["weights_maps.pt"]

    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("a stored fit was retrained"))
    again = make_study(tmp_path / "store", root).run_arm("resnet18+attention", 3)
    assert again.selected_epochs == result.selected_epochs and again.accuracy == result.accuracy


def test_holdout_selection_uses_one_fit(root, tmp_path):
    store = RunStore(tmp_path / "store")
    study = make_study(tmp_path / "store", root)
    result = study.fit_arm("resnet18+l1", 0, selection="holdout")
    runs = store.results(study.name)
    assert len(runs) == 1 and runs["config.fold"].iloc[0] == 0 and bool(runs["config.scores_test"].iloc[0])
    curve = result.final.history.set_index("epoch")
    assert result.cv_curve.tolist() == curve["val_accuracy"].tolist()
    assert result.test_accuracy.tolist() == curve.loc[result.selected_epochs, "test_accuracy"].tolist()
    with pytest.raises(ValueError, match="selection must be"):
        study.fit_arm("resnet18+l1", 0, selection="test")


@pytest.mark.parametrize("arm", ["lr", "svm"])
def test_sklearn_baselines_match_a_direct_grid_search(root, tmp_path, arm):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    study = make_study(tmp_path, root)
    result = study.run_arm(arm, 1)
    grid, data = study.settings.sklearn_grid, study.data
    if arm == "lr":
        model, params = LogisticRegression(max_iter=5000), {"logisticregression__C": list(grid.lr_C)}
    else:
        model, params = SVC(), {"svc__C": list(grid.svm_C), "svc__kernel": list(grid.svm_kernel)}
    search = GridSearchCV(make_pipeline(StandardScaler(), model), params,
                          cv=StratifiedKFold(2, shuffle=True, random_state=1))
    search.fit(data.train.images.flatten(1).numpy(), data.train.labels)
    expected = np.mean(search.predict(data.test.images.flatten(1).numpy()) == data.test.labels)
    assert result.test_accuracy.tolist() == [pytest.approx(expected)]
    assert result.values == {ga.SELECTED: {"accuracy": pytest.approx(expected)}}
    assert result.selected_epochs == [] and np.isnan(result.accuracy_std)
    with pytest.raises(ValueError, match="takes no overrides"):
        study.fit_arm(arm, 1, overrides={"weight_decay": 0.0})


def _fake(arm: str, seed: int, values: list[float]) -> ga.ProtocolRun:
    final = SimpleNamespace(metrics={"last_epoch": 9})
    accuracy = np.array(values)
    return ga.ProtocolRun(
        arm, "default", seed, [], ga.selected_values(accuracy, final), dataset="synthetic", selection="cv",
        point={}, selected_epochs=list(range(1, len(values) + 1)), test_accuracy=accuracy,
        cv_curve=pd.Series(dtype=float), final=final,
    )


def _study_of(fakes: list[ga.ProtocolRun], tmp_path: Path, monkeypatch) -> ga.GlobalAttentionStudy:
    """A smoke study whose ``run`` returns ``fakes`` instead of training."""
    study = make_study(tmp_path)
    by_key = {(r.arm, r.seed): r for r in fakes}
    monkeypatch.setattr(study, "run_arm", lambda arm, seed, scenario="default": by_key[arm, seed])
    study.run(sorted({r.seed for r in fakes}), arms=list(dict.fromkeys(r.arm for r in fakes)))
    return study


def test_tests_against_scipy_and_anova(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    results = [_fake(arm, s, list(rng.normal(mu, 0.02, 4)))
               for arm, mu in (("resnet18", 0.6), ("resnet18+attention", 0.65), ("resnet18+l1", 0.62))
               for s in range(3)]
    study = _study_of(results, tmp_path, monkeypatch)
    tests = study.tests().set_index("comparison")
    assert list(tests.index) == ["resnet18+attention vs resnet18", "resnet18+attention vs resnet18+l1"]
    assert set(tests["checkpoint"]) == {ga.SELECTED} and set(tests["metric"]) == {"accuracy"}
    pooled = {r.arm: [] for r in results}
    for r in results:
        pooled[r.arm] += r.test_accuracy.tolist()
    expected_t = scipy_stats.ttest_ind(pooled["resnet18+attention"], pooled["resnet18"])
    row = tests.loc["resnet18+attention vs resnet18"]
    assert row["t (epochs)"] == pytest.approx(expected_t.statistic) and row["p (t-test, epochs)"] == pytest.approx(expected_t.pvalue)
    assert row["mean method (epochs)"] == pytest.approx(np.mean(pooled["resnet18+attention"]))
    per_seed = {arm: [np.mean(r.test_accuracy) for r in results if r.arm == arm] for arm in pooled}
    expected_f = scipy_stats.f_oneway(per_seed["resnet18+attention"], per_seed["resnet18"])
    assert row["statistic"] == pytest.approx(expected_f.statistic) and row["p"] == pytest.approx(expected_f.pvalue)
    assert row["n"] == 3 and row["median method"] == pytest.approx(np.median(per_seed["resnet18+attention"]))

    table = study.table2()
    cell = table.loc[("synthetic", "resnet18+attention"), "mean (std) over selected epochs"]
    mean, std = np.mean(pooled["resnet18+attention"]), np.std(pooled["resnet18+attention"], ddof=1)
    assert cell.startswith(f"{mean:.3f} ({std:.3f})")
    versus_l1 = scipy_stats.ttest_ind(pooled["resnet18+attention"], pooled["resnet18+l1"]).pvalue
    assert ("**" in cell) == (expected_t.pvalue < 0.01) and ("†" in cell) == (versus_l1 < 0.05)
    sentence = study.verdict()
    assert "resnet18+attention vs resnet18:" in sentence and f"{expected_t.pvalue:.2g}" in sentence
    assert sentence.startswith("Smoke profile")
    claims = study.claims()
    assert [c.p for c in claims] == pytest.approx([expected_f.pvalue, tests.loc["resnet18+attention vs resnet18+l1", "p"]])
    assert claims[0].checkpoint.startswith(f"{ga.SELECTED} checkpoint: the test accuracy at the epochs chosen") and claims[0].n == 3


def test_tests_with_one_seed_give_no_p_values(tmp_path, monkeypatch):
    study = _study_of([_fake("resnet18", 0, [0.5]), _fake("resnet18+attention", 0, [0.6])], tmp_path, monkeypatch)
    row = study.tests().iloc[0]
    assert np.isnan(row["p (t-test, epochs)"]) and np.isnan(row["p"])
    assert "too few values" in study.verdict()


def test_real_loaders_feed_the_study(tmp_path):
    from attnlib.data.real.idrid import IDRiD, IDRiDSettings
    from attnlib.data.real.jaffe import JAFFE
    from attnlib.data.real.layout_samples import write_idrid_sample, write_jaffe_sample

    idrid_root = write_idrid_sample(tmp_path / "idrid")
    for name, task in (("idrid-dr", "retinopathy"), ("idrid-me", "macular_edema")):
        data = ga.load_data(name, idrid_root, profile="smoke")
        official = IDRiD(idrid_root, "train", task, IDRiDSettings(size=(32, 32)), cache=None)
        assert data.image_shape == (3, 32, 32) and data.region_mask is None
        assert data.train.ids == [str(i) for i in official.metadata["id"]]
        assert data.train.labels.tolist() == official.labels.tolist()
        assert data.train.label_names == official.label_names
    jaffe_root = write_jaffe_sample(tmp_path / "jaffe")
    study = make_study(tmp_path / "store", data_root=jaffe_root)
    everything = JAFFE(jaffe_root, cache=None)
    assert study.dataset == "jaffe"
    assert sorted(study.data.train.ids + study.data.test.ids) == sorted(everything.metadata["id"].astype(str))
    assert study.data.image_shape == (1, 32, 32)
    # the layout sample has one or two images per emotion: too few for the 2-fold CV, said clearly
    with pytest.raises(ValueError, match="needs at least 2 items per class"):
        study.run_arm("resnet18", 0)


def test_local_attention_arms_train_as_classifiers(root, tmp_path):
    from attnlib.methods.base import Classifier

    study = make_study(tmp_path, root)
    for name in ga.LOCAL_ATTENTION:
        method = ga.build_method(ga.Arm.parse(name), {"weight_decay": 0.0}, study.data.train, pretrained=False)
        assert isinstance(method, Classifier) and method.model.attnlib_backbone == name
    result = study.fit_arm("resattnet56", 0, selection="holdout")
    assert result.point == {"weight_decay": 1e-4} and len(result.selected_epochs) == 1
    assert 0.0 <= result.accuracy <= 1.0 and "map_region_auc" not in result.final.metrics
    assert set(result.values[ga.SELECTED]) == {"accuracy"}
