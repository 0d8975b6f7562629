"""Paper 3's study: train, edit, fine-tune, explain; the maps' provenance, the settings and the statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from attnlib.apps.editor.study import study_session
from attnlib.core import profiles
from attnlib.core.settings import SettingsError
from attnlib.data.maps.edited_maps import EditedMapStore, Provenance
from attnlib.data.maps.editing import edit_map
from attnlib.data.synthetic.defaults import synthetic_finegrained
from attnlib.engine.study import ArmRun, Comparison
from attnlib.evaluation.stats import SMOKE_CAVEAT
from attnlib.papers import abn


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return synthetic_finegrained("smoke", root=tmp_path_factory.mktemp("finegrained"))


@pytest.fixture(scope="module")
def study(root, tmp_path_factory) -> abn.ABNStudy:
    """The smoke study on its own store, run for replicates 0 and 1."""
    study = abn.ABNStudy.create("smoke", tmp_path_factory.mktemp("runs") / "store", "cpu", data_root=root)
    study.run([0, 1])
    return study


def test_every_profile_loads():
    for name in profiles.available_profiles():
        settings = profiles.load_settings(abn.ABNSettings, name, "abn")
        assert settings.finetune.weight_decay == settings.train.weight_decay and settings.progress


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.update(edit_limt=s.pop("edit_limit")), r"smoke.yaml: abn: unknown key 'edit_limt' \(did you mean 'edit_limit'\?\)"),
        (lambda s: s["finetune"].update(lr_milestone=s["finetune"].pop("lr_milestones")), r"smoke.yaml: abn.finetune: unknown key 'lr_milestone'"),
        (lambda s: s.pop("progress"), r"smoke.yaml: abn: missing key\(s\) \['progress'\]"),
        (lambda s: s.update(n_explain="4"), r"smoke.yaml: abn.n_explain: expected an integer, got '4'"),
        (lambda s: s.update(map_source="gaze"), r"smoke.yaml: abn.map_source: 'gaze' is not one of"),
    ],
)
def test_a_bad_profile_key_names_the_file_and_key(monkeypatch, tmp_path, edit, message):
    smoke = profiles.load_profile("smoke")
    edit(smoke["abn"])
    monkeypatch.setattr(profiles, "load_profile", lambda name=None: smoke)
    with pytest.raises(SettingsError, match=message):
        abn.ABNStudy.create("smoke", tmp_path / "store")


def test_data_and_its_options(study, tmp_path):
    data = study.data
    assert data.protocol == "seeds" and data.sources == ["editor", "bubbles"]
    train, test = data.replicate(0)
    assert len(train) + len(test) == len(data.images) and not set(train.ids) & set(test.ids)
    assert data.replicate(3)[0].ids == train.ids  # seeds: the same split for every replicate
    assert data.description in study.describe()
    with pytest.raises(ValueError, match="unknown dataset"):
        abn.ABNStudy.create("smoke", tmp_path, dataset="imagenet")
    with pytest.raises(ValueError, match="needs data_root"):
        abn.ABNStudy.create("smoke", tmp_path, dataset="cub")
    with pytest.raises(ValueError, match="apply only to the generated synthetic default"):
        abn.ABNStudy.create("smoke", tmp_path, data_root=tmp_path, dataset="synthetic", synthetic={"size": 32})
    with pytest.raises(ValueError, match="unknown map source"):
        abn.ABNStudy.create("smoke", tmp_path, map_source="gaze")


def test_human_map_sources(study):
    data = study.data
    sample = data.images.ids[0]
    network = np.full((3, 3), 0.5, np.float32)
    edited, provenance = abn.human_map(data, sample, "editor", network, budget=3)
    assert provenance.source == "simulated" and provenance.strokes[0].mode == "add"
    np.testing.assert_array_equal(edit_map(network, data.image_size, provenance.strokes)[0], edited)
    bubbles, provenance = abn.human_map(data, sample, "bubbles", network, budget=3)
    assert provenance.source == "bubbles" and bubbles.shape == (3, 3) and bubbles.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="segmentation"):
        abn.human_map(data, sample, "segmentation", network, budget=3)


def test_replicate_runs_every_stage_and_is_reloaded(study):
    settings = study.settings
    assert len(study.edits(0).ids) == settings.edit_limit
    # the fine-tuned network's feature extractor equals the base network's: it was frozen
    base, tuned = study.base(0).state_dict("last"), study.fine_tuned(0).state_dict("last")
    features = [k for k in base if k.startswith("model.features.")]
    assert features and all(torch.equal(base[k], tuned[k]) for k in features)
    assert any(not torch.equal(base[k], tuned[k]) for k in base if k.startswith("model.attention."))
    control = study.control(0)
    assert not list(control.path.glob("weights_*.pt"))  # the gamma = 0 control: its scores, no weights
    assert study.fine_tuned(0).spec.config["gamma"] == settings.gamma and control.spec.config["gamma"] == 0
    # every arm's run is a stage of the replicate; a new study on the same store loads them all
    by_arm = {r.arm: r for r in study.runs if r.seed == 0}
    assert [r.spec.key for r in by_arm[abn.ARMS[2]].runs] == [control.spec.key]
    again = abn.ABNStudy.create("smoke", study.context.store.root, "cpu", data_root=study.data_root)
    assert again.fine_tuned(0).path == study.fine_tuned(0).path and again.explain(0).path == study.explain(0).path
    assert again.run([0, 1]).equals(study.results())


def test_edited_maps_are_stored_with_provenance(study):
    edits = study.edits(0)
    train_maps = EditedMapStore(edits.folder.parent).load_all(edits.folder.name)
    assert sorted(train_maps) == sorted(edits.ids)
    record = train_maps[edits.ids[0]]
    assert record.provenance.model_key == study.base(0).spec.key
    assert record.provenance.checkpoint.startswith("last (epoch")
    # the strokes replay the stored map from the network's own map
    train, _ = study.data.replicate(0)
    sample = train.subset([train.ids.index(edits.ids[0])])
    network = abn.network_maps(study.network(study.base(0)), sample, torch.device("cpu"))[0]
    np.testing.assert_allclose(edit_map(network, study.data.image_size, record.provenance.strokes)[0], record.map,
                               atol=1e-6)


def test_fine_tune_takes_maps_from_any_store(study):
    """Maps written by another tool (e.g. the editor) into an EditedMapStore fine-tune unchanged."""
    edits = study.edits(0)
    maps = EditedMapStore(edits.folder.parent).load_all(edits.folder.name)
    again = study.fine_tune(0, maps, edits.ids, study.settings.gamma)
    assert again.path == study.fine_tuned(0).path  # same maps, same run
    assert all(v.provenance.source == "simulated" for v in maps.values())
    # a person re-paints them: the values are then the input (simulated maps are identified by their maker)
    painted = Provenance("editor", next(iter(maps.values())).provenance.grid_size, editor="someone")
    changed = {k: type(v)(np.clip(v.map + 0.1, 0, 1), painted) for k, v in maps.items()}
    assert study.fine_tune(0, changed, edits.ids, study.settings.gamma).path != study.fine_tuned(0).path


def test_results_tables_tests_and_verdict(study):
    results = study.results()
    assert set(results["arm"]) == set(abn.ARMS) and set(results["checkpoint"]) == {"last"}
    accuracy = results[results["metric"] == "accuracy"]
    assert accuracy["arm"].tolist() == list(abn.ARMS) * 2 and accuracy["value"].between(0, 1).all()
    explained = study.explanations()
    assert set(explained["method"]) == set(abn.EXPLANATIONS) and len(explained) == 8
    assert explained[["deletion", "insertion", "mse"]].apply(lambda c: c.between(0, 1)).all().all()
    # each explanation value comes from the explanation pass of its replicate
    means = abn.explanation_means(study.explain(1))
    row = explained[(explained["seed"] == 1) & (explained["method"] == "Grad-CAM")].iloc[0]
    assert row["deletion"] == means.at["Grad-CAM", "deletion"] and row["mse"] == means.at["Grad-CAM", "mse"]
    table1 = study.table1()
    assert len(table1) == 2 and (table1["error_before"].dropna() == 1.0).all()  # misclassified by definition
    tests = study.tests()
    assert set(tests["test"]) == {"paired t-test over seeds (scipy)"}
    assert {"ABN + fine-tuning vs ABN", "ABN + fine-tuning vs ABN + fine-tuning (gamma = 0)",
            "ABN + fine-tuning vs Grad-CAM of ABN", "ABN vs Grad-CAM of ABN"} <= set(tests["comparison"])
    control = tests[tests["comparison"] == "ABN + fine-tuning vs ABN + fine-tuning (gamma = 0)"]
    assert control["metric"].tolist() == ["accuracy"]  # the control has no explanation values: not compared on them
    assert list(study.tables()) == [
        "runs: test accuracy of the last weights per replicate and arm",
        "test metrics, median ± std over seeds (last checkpoint: last epoch)", "tests",
        "Table 1: misclassified test images, top-1 error with M and with the edited maps M' (no training)",
        "Tables 4-5 / 7-8: deletion, insertion, ROAD, MSE to the edited map, median ± std over replicates (last weights)",
    ]
    sentence = study.verdict()
    assert sentence.startswith(SMOKE_CAVEAT) and "gamma = 0" in sentence and "deletion" in sentence
    assert len(study.claims()) == len(study.claim_specs())


VALUES = {  # per arm, per replicate 0-2: hand-made values
    abn.ARMS[0]: {"accuracy": [0.5, 0.6, 0.7], "deletion": [0.3, 0.4, 0.5], "deletion/Grad-CAM": [0.45, 0.5, 0.6],
                  "table1/n": [4, 5, 4], "table1/error_before": [1.0, 1.0, 1.0], "table1/error_after": [0.75, 0.8, 0.7]},
    abn.ARMS[1]: {"accuracy": [0.6, 0.71, 0.79], "deletion": [0.2, 0.31, 0.39]},
    abn.ARMS[2]: {"accuracy": [0.5, 0.6, 0.72]},
}


class HandMade(abn.ABNStudy):
    """The study with :data:`VALUES` in place of trained networks."""

    def run_arm(self, arm: str, seed: int, scenario: str = "default") -> ArmRun:
        values = {metric: column[seed] for metric, column in VALUES[arm].items()}
        return ArmRun(arm, scenario, seed, [], {"last": values}, {"last": 1})


def test_paired_t_tests_and_verdict_by_hand(tmp_path):
    study = HandMade.create("quick", tmp_path / "store")
    study.run([0, 1, 2])
    tests = study.tests().set_index(["comparison", "metric"])
    # fine-tuned - ABN accuracy: 0.1, 0.11, 0.09 -> mean 0.1, sd 0.01, t = 0.1 / (0.01 / sqrt 3) = 10 sqrt 3
    row = tests.loc[("ABN + fine-tuning vs ABN", "accuracy")]
    assert row["statistic"] == pytest.approx(10 * math.sqrt(3)) and row["n"] == 3
    assert row["p"] == pytest.approx(2 * scipy_stats.t.sf(10 * math.sqrt(3), df=2))
    assert (row["median method"], row["median reference"]) == (0.71, 0.6)
    # the fine-tuned map vs Grad-CAM of the ABN: a pair of explanation methods
    row = tests.loc[("ABN + fine-tuning vs Grad-CAM of ABN", "deletion")]
    expected = scipy_stats.ttest_rel([0.2, 0.31, 0.39], [0.45, 0.5, 0.6])
    assert row["statistic"] == pytest.approx(expected.statistic) and row["p"] == pytest.approx(expected.pvalue)
    # Table 1: the ABN fed M' vs fed its own M: differences -0.25, -0.2, -0.3
    row = tests.loc[("ABN vs ABN with its own map M", "table1/error_after")]
    differences = np.array([-0.25, -0.2, -0.3])
    t = differences.mean() / (differences.std(ddof=1) / math.sqrt(3))
    assert row["statistic"] == pytest.approx(t) and (row["median method"], row["median reference"]) == (0.75, 1.0)
    sentence = study.verdict()
    assert not sentence.startswith(SMOKE_CAVEAT)
    assert "ABN + fine-tuning vs ABN: test accuracy (Tables 3, 6): median 0.600 -> 0.710; better (p = " in sentence
    assert ("ABN + fine-tuning vs ABN: deletion (RISE), the arm's own attention map: median 0.400 -> 0.310; "
            "better (p = ") in sentence
    assert "median 1.000 -> 0.750; better" in sentence
    claims = {c.claim: c for c in study.claims()}
    table1 = claims["feeding edited maps in place of M corrects misclassified images (no training)"]
    assert table1.paper_value.startswith("100 -> 83.2") and table1.value == 0.75 and table1.reference == 1.0
    assert table1.spread == f"± {np.std([0.75, 0.8, 0.7], ddof=1):.3f} (std over 3 seeds)"
    assert Comparison(abn.ARMS[1], abn.ARMS[2]) in study.comparisons()


def test_table1_errors_by_hand():
    class Fixed(torch.nn.Module):
        """Predicts class 1 unless the supplied map is all ones."""

        def forward(self, x, attention_map=None):
            logits = torch.zeros(len(x), 2)
            fixed = attention_map is not None and bool((attention_map == 1).all(dim=(1, 2, 3)).any())
            logits[:, 0 if fixed else 1] = 1.0
            return type("Out", (), {"perception_logits": logits})()

    labels = torch.tensor([0, 0])
    out = abn.table1_errors(Fixed(), torch.zeros(2, 3, 4, 4), labels, torch.ones(2, 1, 1, 1), torch.device("cpu"))
    assert out == {"n": 2, "error_before": 1.0, "error_after": 0.0}


def test_real_layouts_load_with_their_knowledge(tmp_path):
    """CUB (images, segmentations, bubbles) and the IDRiD lesion task (folds, lesion maps) from layout samples."""
    from attnlib.data.real.layout_samples import (
        write_cub_bubbles,
        write_cub_sample,
        write_idrid_segmentation_sample,
    )

    cub_root = write_cub_sample(tmp_path / "cub")
    write_cub_bubbles(cub_root / "bubbles.csv")
    cub = abn.ABNStudy.create("smoke", tmp_path / "store", data_root=cub_root).data  # told from the layout
    train, test = cub.replicate(0)
    assert cub.name == "cub" and cub.protocol == "seeds" and len(train) and len(test) and cub.image_size == (64, 64)
    assert cub.sources == ["editor", "bubbles"]
    sample = next(iter(cub.bubbles))
    grid_map, provenance = abn.human_map(cub, sample, "bubbles", np.zeros((4, 4), np.float32), budget=3)
    assert provenance.source == "bubbles" and grid_map.max() == pytest.approx(1.0)
    assert all(mask.shape == (64, 64) for mask in cub.evidence.values())

    study = abn.ABNStudy.create("smoke", tmp_path / "store", dataset="idrid",
                                data_root=write_idrid_segmentation_sample(tmp_path / "idrid"))
    idrid = study.data
    assert idrid.protocol == "folds" and len(idrid.splits) == study.settings.folds
    tests = [set(idrid.replicate(r)[1].ids) for r in range(len(idrid.splits))]
    assert set.union(*tests) == set(idrid.images.ids) and sum(map(len, tests)) == len(idrid.images)
    assert "segmentation" in idrid.sources
    diseased = [i for i, lab in zip(idrid.images.ids, idrid.images.labels, strict=True) if lab == 1]
    lesion, provenance = abn.human_map(idrid, diseased[0], "segmentation", np.zeros((4, 4), np.float32), budget=3)
    assert provenance.source == "segmentation" and lesion.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="replicate"):
        idrid.replicate(len(idrid.splits))


def test_cub_bubbles_csv_is_a_parameter_and_its_grid_maps_keep_pixel_centres(tmp_path):
    from attnlib.data.real.cub import CUBFormatError
    from attnlib.data.real.layout_samples import CUB_IMAGES, write_cub_bubbles, write_cub_sample

    root = write_cub_sample(tmp_path / "cub")
    write_cub_bubbles(root / "bubbles.csv")  # the default, which an explicit CSV replaces
    first = next(iter(CUB_IMAGES))  # 120 x 90 px (W x H)
    csv = tmp_path / "elsewhere" / "my_bubbles.csv"
    csv.parent.mkdir()
    # on a 4 x 4 grid a cell is 30 columns x 22.5 rows; cell (1, 1) is centred on the image point
    # (x, y) = (1.5 * 30 - 0.5, 1.5 * 22.5 - 0.5) = (44.5, 33.25); radius 30 = sigma 1 cell across, 4/3 down
    csv.write_text(f"image,worker,x,y,radius\n{first},w1,44.5,33.25,30\n")

    def cub(**options):
        return abn.ABNStudy.create("smoke", tmp_path / "store", dataset="cub", data_root=root, **options).data

    data = cub(bubbles_csv=csv)
    assert list(data.bubbles) == [first] and str(csv) in data.description
    grid_map, _ = abn.human_map(data, first, "bubbles", np.zeros((4, 4), np.float32), budget=3)
    assert grid_map[1, 1] == pytest.approx(1.0)
    assert grid_map[1, 0] == pytest.approx(np.exp(-0.5), rel=1e-5)
    assert grid_map[1, 2] == pytest.approx(grid_map[1, 0])
    assert grid_map[0, 1] == pytest.approx(np.exp(-0.5 * 0.75**2), rel=1e-5)
    assert grid_map[2, 1] == pytest.approx(grid_map[0, 1])
    assert len(cub().bubbles) == 6  # the default CSV: training images
    with pytest.raises(CUBFormatError, match="missing.csv: bubbles CSV not found"):
        cub(bubbles_csv=tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="bubbles_csv applies to cub only"):
        abn.ABNStudy.create("smoke", tmp_path / "store", dataset="idrid", data_root=tmp_path, bubbles_csv=csv)


def test_training_curves_continue_after_the_base_epochs(study):
    curves = study.training_curves(0)
    assert list(curves) == list(abn.ARMS)
    last = int(study.base(0).metrics["last_epoch"])
    assert curves[abn.ARMS[0]]["epoch"].max() == last
    assert curves[abn.ARMS[1]]["epoch"].min() == last + 1 and curves[abn.ARMS[2]]["epoch"].min() == last + 1


def test_figures_say_how_their_weights_were_chosen(study):
    figures = study.figures()
    assert len(figures) == 3
    assert "last" in figures[0].axes[0].get_title() and "last weights" in figures[1].axes[0].get_title()
    assert figures[2]._suptitle.get_text().startswith("replicate 0, last weights (ABN epoch 1")


def test_editor_edits_fine_tune_through_the_study(study):
    """Maps saved by the editor's session on a replicate are what ``human_edits=True`` fine-tunes on, unconverted."""
    base = study.base(0)
    session = study_session(study, 0, "lowest_confidence", 2, "tester")
    assert session.ids == study.edits(0).ids[:2] and session.model_key == base.spec.key
    assert session.folder == study.human_edits_folder(0)
    saved = {}
    for _ in session.ids:
        session.paint({"mode": "add", "radius": 6.0, "points": [[10.0, 10.0], [30.0, 20.0]]})
        session.save()
        saved[session.sample_id] = session.edited_map
        session.next()
    human = abn.ABNStudy.create("smoke", study.context.store.root, "cpu", data_root=study.data_root, human_edits=True)
    edits = human.edits(0)
    assert edits.ids == sorted(saved) and human.fine_tuned(0).spec.config["n_samples"] == 2
    assert edits.folder == study.maps_store.root / session.folder
    assert human.base(0).spec.key == base.spec.key and human.fine_tuned(0).spec.key != study.fine_tuned(0).spec.key
    stored = study.maps_store.load_all(session.folder)
    for sample_id, edited in saved.items():
        np.testing.assert_array_equal(stored[sample_id].map, edited)
        assert stored[sample_id].provenance.source == "editor"
    with pytest.raises(FileNotFoundError, match="04_attention_editor"):
        human.edits(1)
    queue = study_session(study, 0).ids  # misclassified first, then the rest
    train_predictions = base.predictions["train"]
    wrong = train_predictions.loc[train_predictions["pred"] != train_predictions["label"], "id"].astype(str)
    assert set(queue[: len(wrong)]) == set(wrong) and len(queue) == len(train_predictions)
    with pytest.raises(ValueError, match="selects no training image"):
        study_session(study, 0, [])
