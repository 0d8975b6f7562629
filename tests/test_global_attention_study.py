"""Paper 2's study pipeline: arms, grids, the CV epoch selection, the baselines and the statistics."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from attnlib.methods.global_attention import GlobalAttention
from attnlib.papers import global_attention as ga
from attnlib.training.runstore import RunStore
from attnlib.training.trainer import Trainer


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> ga.StudyData:
    root = tmp_path_factory.mktemp("structured")
    return ga.load_data("synthetic", profile="smoke", data_root=ga.synthetic_structured("smoke", root=root))


def test_arm_names_parse():
    assert ga.Arm.parse("resnet18") == ga.Arm("resnet18", "vanilla", "resnet18")
    assert ga.Arm.parse("vgg16+attention") == ga.Arm("vgg16+attention", "attention", "vgg16")
    assert ga.Arm.parse("densenet161+l1").variant == "l1"
    assert ga.Arm.parse("svm") == ga.Arm("svm", "svm", None)
    for bad in ("resnet18+gala", "alexnet", "vgg_att3+attention"):
        with pytest.raises(ValueError, match="unknown global-attention arm"):
            ga.Arm.parse(bad)
    settings = {"backbones": ["a", "b"], "variants": ["vanilla", "l1"], "baselines": ["lr"]}
    assert ga.arm_names(settings) == ["a", "a+l1", "b", "b+l1", "lr"]


def test_top_epochs_picks_highest_and_breaks_ties_early():
    curve = pd.Series([0.5, 0.9, 0.7, 0.9, 0.6, 0.7], index=range(1, 7))
    assert ga.top_epochs(curve, 1) == [2]
    assert ga.top_epochs(curve, 3) == [2, 3, 4]  # 0.9, 0.9, then the first 0.7
    assert ga.top_epochs(curve, 6) == [1, 2, 3, 4, 5, 6]


def test_arm_grid_product_overrides_and_unknown_keys():
    settings = {"grid": {"weight_decay": [1e-3, 1e-4], "k": [8, 16, 32], "l1_weight": [0.1],
                         "pixel_l1_weight": [1.0]}, "cutoff_epoch": 7}
    points = ga.arm_grid(ga.Arm.parse("resnet18+attention"), settings)
    assert len(points) == 6 and {p["cutoff_epoch"] for p in points} == {7}
    assert {(p["weight_decay"], p["k"]) for p in points} == {(w, k) for w in (1e-3, 1e-4) for k in (8, 16, 32)}
    fixed = ga.arm_grid(ga.Arm.parse("resnet18+attention"), settings, {"k": 4, "cutoff_epoch": 0})
    assert [(p["k"], p["cutoff_epoch"]) for p in fixed] == [(4, 0), (4, 0)]
    assert ga.arm_grid(ga.Arm.parse("resnet18"), settings) == [{"weight_decay": 1e-3}, {"weight_decay": 1e-4}]
    with pytest.raises(ValueError, match="has no setting"):
        ga.arm_grid(ga.Arm.parse("resnet18+l1"), settings, {"k": 4})


def test_load_data_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        ga.load_data("cub", profile="smoke")
    with pytest.raises(ValueError, match="needs data_root"):
        ga.load_data("jaffe", profile="smoke")
    with pytest.raises(ValueError, match="only to the generated synthetic"):
        ga.load_data("jaffe", tmp_path, profile="smoke", cue=True)


def test_synthetic_data_is_the_generated_split(data):
    assert data.image_shape == (1, 32, 32)
    assert len(data.train) + len(data.test) == 40 and len(data.test) == 9
    assert data.region_mask.shape == (32, 32) and data.region_mask.sum() == 64
    assert set(data.train.ids).isdisjoint(data.test.ids)


def test_parameter_count_table_matches_the_built_pixel_cnn(data):
    table = ga.parameter_counts(data, [2, 5])
    for row in table.to_dict("records"):
        point = {"k": row["K"], "l1_weight": 0.01, "cutoff_epoch": 1}
        method = ga.build_method(ga.Arm.parse("resnet18+attention"), point, data.train, pretrained=False)
        assert row["parameters"] == sum(p.numel() for p in method.pixel_cnn.parameters())
        assert row["N"] == len(data.train) and row["C"] == 1


def test_cv_protocol_selects_on_folds_and_reads_the_final_test_curve(data, tmp_path, monkeypatch):
    store = RunStore(tmp_path / "store")
    built = []
    original = ga.build_method
    monkeypatch.setattr(ga, "build_method", lambda *a, **k: built.append(original(*a, **k)) or built[-1])
    result = ga.run_arm(store, "resnet18+attention", data, profile="smoke", seed=3)

    curves = {}
    for spec_file in (tmp_path / "store" / ga.STUDY).glob("*/seed3/spec.json"):
        fold = json.loads(spec_file.read_text())["config"]["fold"]
        if fold is not None:
            curves[fold] = pd.read_csv(spec_file.parent / "history.csv").set_index("epoch")["val_accuracy"]
    assert sorted(curves) == [0, 1]  # smoke: 2 folds, and one final fit
    mean_curve = pd.concat(list(curves.values()), axis=1).mean(axis=1)
    best = mean_curve.max()
    assert result.selected_epochs == [int(mean_curve.idxmax())] and mean_curve[result.selected_epochs[0]] == best
    test_curve = result.final.history.set_index("epoch")["test_accuracy"]
    assert result.test_accuracy.tolist() == test_curve[result.selected_epochs].tolist()
    assert result.accuracy == pytest.approx(float(np.mean(result.test_accuracy)))
    # the pixel CNN saw each fit's own training set: two folds' parts, then the whole training set
    sizes = sorted(m.pixels.shape[1] for m in built if isinstance(m, GlobalAttention))
    fold_sizes = sorted(len(fit) for fit, _ in ga.stratified_folds(data.train.labels, 2, 3))
    assert sizes == sorted([*fold_sizes, len(data.train)])
    maps = result.final.state_dict("maps")
    assert maps["final"].shape == (32, 32) and "map_region_auc" in result.final.metrics
    # the report reads the maps, never the network weights: only the maps are kept
    assert [p.name for p in result.final.path.glob("weights_*.pt")] == ["weights_maps.pt"]

    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("a stored fit was retrained"))
    again = ga.run_arm(store, "resnet18+attention", data, profile="smoke", seed=3)
    assert again.selected_epochs == result.selected_epochs and again.accuracy == result.accuracy


def test_holdout_selection_uses_one_fit(data, tmp_path):
    store = RunStore(tmp_path / "store")
    result = ga.run_arm(store, "resnet18+l1", data, profile="smoke", seed=0, selection="holdout")
    runs = store.results(ga.STUDY)
    assert len(runs) == 1 and runs["config.fold"].iloc[0] == 0 and bool(runs["config.scores_test"].iloc[0])
    curve = result.final.history.set_index("epoch")
    assert result.cv_curve.tolist() == curve["val_accuracy"].tolist()
    assert result.test_accuracy.tolist() == curve.loc[result.selected_epochs, "test_accuracy"].tolist()


@pytest.mark.parametrize("arm", ["lr", "svm"])
def test_sklearn_baselines_match_a_direct_grid_search(data, tmp_path, arm):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    result = ga.run_arm(RunStore(tmp_path), arm, data, profile="smoke", seed=1)
    grid = ga.study_settings("smoke")["sklearn_grid"]
    if arm == "lr":
        model, params = LogisticRegression(max_iter=5000), {"logisticregression__C": grid["lr_C"]}
    else:
        model, params = SVC(), {"svc__C": grid["svm_C"], "svc__kernel": grid["svm_kernel"]}
    search = GridSearchCV(make_pipeline(StandardScaler(), model), params,
                          cv=StratifiedKFold(2, shuffle=True, random_state=1))
    search.fit(data.train.images.flatten(1).numpy(), data.train.labels)
    expected = np.mean(search.predict(data.test.images.flatten(1).numpy()) == data.test.labels)
    assert result.test_accuracy.tolist() == [pytest.approx(expected)]
    assert result.selected_epochs == [] and np.isnan(result.accuracy_std)


def _fake(arm: str, seed: int, values: list[float]) -> ga.ArmResult:
    final = SimpleNamespace(metrics={"last_epoch": 9})
    epochs = list(range(1, len(values) + 1))
    return ga.ArmResult(arm, seed, "synthetic", "cv", {}, epochs, np.array(values), pd.Series(dtype=float), final)


def test_tests_table_against_scipy_and_anova():
    rng = np.random.default_rng(0)
    results = [_fake(arm, s, list(rng.normal(mu, 0.02, 4)))
               for arm, mu in (("resnet18", 0.6), ("resnet18+attention", 0.65), ("resnet18+l1", 0.62))
               for s in range(3)]
    tests = ga.tests_table(results).set_index("comparison")
    assert list(tests.index) == ["resnet18+attention vs resnet18", "resnet18+attention vs resnet18+l1"]
    pooled = {r.arm: [] for r in results}
    for r in results:
        pooled[r.arm] += r.test_accuracy.tolist()
    expected_t = scipy_stats.ttest_ind(pooled["resnet18+attention"], pooled["resnet18"])
    row = tests.loc["resnet18+attention vs resnet18"]
    assert row["t (epochs)"] == pytest.approx(expected_t.statistic) and row["p (t-test, epochs)"] == pytest.approx(expected_t.pvalue)
    per_seed = {arm: [np.mean(r.test_accuracy) for r in results if r.arm == arm] for arm in pooled}
    expected_f = scipy_stats.f_oneway(per_seed["resnet18+attention"], per_seed["resnet18"])
    assert row["F (seeds)"] == pytest.approx(expected_f.statistic) and row["p (ANOVA, seeds)"] == pytest.approx(expected_f.pvalue)
    assert row["seeds"] == 3

    table = ga.table2(results)
    cell = table.loc[("synthetic", "resnet18+attention"), "mean (std) over selected epochs"]
    mean, std = np.mean(pooled["resnet18+attention"]), np.std(pooled["resnet18+attention"], ddof=1)
    assert cell.startswith(f"{mean:.3f} ({std:.3f})")
    versus_l1 = scipy_stats.ttest_ind(pooled["resnet18+attention"], pooled["resnet18+l1"]).pvalue
    assert ("**" in cell) == (expected_t.pvalue < 0.01) and ("†" in cell) == (versus_l1 < 0.05)
    sentence = ga.verdict(ga.tests_table(results))
    assert "resnet18+attention vs resnet18:" in sentence and f"{expected_t.pvalue:.2g}" in sentence


def test_tests_table_with_one_seed_gives_no_p_values():
    results = [_fake("resnet18", 0, [0.5]), _fake("resnet18+attention", 0, [0.6])]
    row = ga.tests_table(results).iloc[0]
    assert np.isnan(row["p (t-test, epochs)"]) and np.isnan(row["p (ANOVA, seeds)"])
    assert "too few values" in ga.verdict(ga.tests_table(results))


def test_real_loaders_feed_the_study(tmp_path):
    from attnlib.data.idrid import IDRiD, IDRiDSettings
    from attnlib.data.jaffe import JAFFE
    from attnlib.data.layout_samples import write_idrid_sample, write_jaffe_sample

    idrid_root = write_idrid_sample(tmp_path / "idrid")
    for name, task in (("idrid-dr", "retinopathy"), ("idrid-me", "macular_edema")):
        data = ga.load_data(name, idrid_root, profile="smoke")
        official = IDRiD(idrid_root, "train", task, IDRiDSettings(size=(32, 32)), cache=None)
        assert data.image_shape == (3, 32, 32) and data.region_mask is None
        assert data.train.ids == [str(i) for i in official.metadata["id"]]
        assert data.train.labels.tolist() == official.labels.tolist()
        assert data.train.label_names == official.label_names
    jaffe_root = write_jaffe_sample(tmp_path / "jaffe")
    data = ga.load_data("jaffe", jaffe_root, profile="smoke")
    everything = JAFFE(jaffe_root, cache=None)
    assert sorted(data.train.ids + data.test.ids) == sorted(everything.metadata["id"].astype(str))
    assert data.image_shape == (1, 32, 32)
    # the layout sample has one or two images per emotion: too few for the 2-fold CV, said clearly
    with pytest.raises(ValueError, match="needs at least 2 items per class"):
        ga.run_arm(RunStore(tmp_path / "store"), "resnet18", data, profile="smoke", seed=0)


def test_local_attention_arms_train_as_classifiers(data, tmp_path):
    from attnlib.training.methods import Classifier

    for name in ga.LOCAL_ATTENTION:
        method = ga.build_method(ga.Arm.parse(name), {"weight_decay": 0.0}, data.train, pretrained=False)
        assert isinstance(method, Classifier) and method.model.attnlib_backbone == name
    result = ga.run_arm(RunStore(tmp_path), "resattnet56", data, profile="smoke", seed=0, selection="holdout")
    assert result.point == {"weight_decay": 1e-4} and len(result.selected_epochs) == 1
    assert 0.0 <= result.accuracy <= 1.0 and "map_region_auc" not in result.final.metrics
