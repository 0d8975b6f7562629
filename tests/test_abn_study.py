"""Paper 3's study pipeline: train, edit, fine-tune, explain; the maps' provenance and the statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from attnlib.data.defaults import synthetic_finegrained
from attnlib.edited_maps import EditedMapStore, Provenance
from attnlib.editing import edit_map
from attnlib.papers import abn
from attnlib.stats import paired_tests
from attnlib.training.runstore import RunStore


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> abn.StudyData:
    root = tmp_path_factory.mktemp("finegrained")
    return abn.load_data("synthetic", profile="smoke", data_root=synthetic_finegrained("smoke", root=root))


@pytest.fixture(scope="module")
def replicates(data, tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("runs") / "store")
    return store, [abn.run_replicate(store, data, r, "smoke", device="cpu") for r in (0, 1)]


def test_load_data(data):
    assert data.protocol == "seeds" and data.sources == ["editor", "bubbles"]
    train, test = data.replicate(0)
    assert len(train) + len(test) == len(data.images) and not set(train.ids) & set(test.ids)
    assert data.replicate(3)[0].ids == train.ids  # seeds: the same split for every replicate
    with pytest.raises(ValueError, match="unknown dataset"):
        abn.load_data("imagenet", profile="smoke")
    with pytest.raises(ValueError, match="needs data_root"):
        abn.load_data("cub", profile="smoke")


def test_human_map_sources(data):
    sample = data.images.ids[0]
    network = np.full((3, 3), 0.5, np.float32)
    edited, provenance = abn.human_map(data, sample, "editor", network, {"edit_budget": 3})
    assert provenance.source == "simulated" and provenance.strokes[0].mode == "add"
    np.testing.assert_array_equal(edit_map(network, data.image_size, provenance.strokes)[0], edited)
    bubbles, provenance = abn.human_map(data, sample, "bubbles", network, {})
    assert provenance.source == "bubbles" and bubbles.shape == (3, 3) and bubbles.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="segmentation"):
        abn.human_map(data, sample, "segmentation", network, {})


def test_replicate_runs_every_stage_and_is_reloaded(data, replicates):
    store, results = replicates
    res = results[0]
    settings = abn.study_settings("smoke")
    assert len(res.selected) == settings["edit_limit"]
    # the fine-tuned network's feature extractor equals the base network's: it was frozen
    base, tuned = res.base.state_dict("last"), res.fine_tuned.state_dict("last")
    features = [k for k in base if k.startswith("model.features.")]
    assert features and all(torch.equal(base[k], tuned[k]) for k in features)
    assert any(not torch.equal(base[k], tuned[k]) for k in base if k.startswith("model.attention."))
    assert not list(res.control.path.glob("weights_*.pt"))  # the gamma = 0 control: its scores, no weights
    assert res.fine_tuned.spec.config["gamma"] == settings["gamma"] and res.control.spec.config["gamma"] == 0
    again = abn.run_replicate(store, data, 0, "smoke", device="cpu")
    assert again.fine_tuned.path == res.fine_tuned.path and again.explain.path == res.explain.path


def test_edited_maps_are_stored_with_provenance(data, replicates):
    _, results = replicates
    res = results[0]
    store = EditedMapStore(res.train_maps.parent)
    train_maps = store.load_all(res.train_maps.name)
    assert sorted(train_maps) == sorted(res.selected)
    record = train_maps[res.selected[0]]
    assert record.provenance.model_key == res.base.spec.key
    assert record.provenance.checkpoint.startswith("last (epoch")
    # the strokes replay the stored map from the network's own map
    model = abn.load_abn(res.base, abn.study_settings("smoke"), data)
    train, _ = data.replicate(0)
    sample = train.subset([train.ids.index(res.selected[0])])
    network = abn.network_maps(model, sample, torch.device("cpu"))[0]
    np.testing.assert_allclose(
        edit_map(network, data.image_size, record.provenance.strokes)[0], record.map, atol=1e-6
    )


def test_fine_tune_takes_maps_from_any_store(data, replicates, tmp_path):
    """Maps written by another tool (e.g. the editor) into an EditedMapStore fine-tune unchanged."""
    store, results = replicates
    res = results[0]
    settings = abn.study_settings("smoke")
    maps = EditedMapStore(res.train_maps.parent).load_all(res.train_maps.name)
    again = abn.fine_tune(
        store, data, 0, res.base, maps, res.selected, settings["gamma"], settings, "smoke", "cpu"
    )
    assert again.path == res.fine_tuned.path  # same maps, same run
    assert all(v.provenance.source == "simulated" for v in maps.values())
    # a person re-paints them: the values are then the input (simulated maps are identified by their maker)
    painted = Provenance("editor", next(iter(maps.values())).provenance.grid_size, editor="someone")
    changed = {k: type(v)(np.clip(v.map + 0.1, 0, 1), painted) for k, v in maps.items()}
    other = abn.fine_tune(
        store, data, 0, res.base, changed, res.selected, settings["gamma"], settings, "smoke", "cpu"
    )
    assert other.path != res.fine_tuned.path


def test_tables_tests_and_verdict(data, replicates):
    _, results = replicates
    accuracy = abn.accuracy_frame(results)
    assert accuracy["arm"].tolist() == list(abn.ARMS) * 2
    assert accuracy["accuracy"].between(0, 1).all()
    explained = abn.explanation_frame(results)
    assert set(explained["method"]) == set(abn.EXPLANATIONS) and len(explained) == 8
    assert explained[["deletion", "insertion", "mse"]].apply(lambda c: c.between(0, 1)).all().all()
    table1 = abn.table1_frame(results)
    assert (table1["error_before"].dropna() == 1.0).all()  # misclassified images by definition
    tests = paired_tests(explained, "deletion", "method", [("fine-tuned", "ABN")])
    assert tests["test"].tolist() == ["paired t", "one-way ANOVA"]
    sentence = abn.verdict(accuracy, explained)
    assert sentence.startswith("On this data") and "deletion" in sentence and "gamma = 0" in sentence


def test_table1_errors_by_hand():
    class Fixed(torch.nn.Module):
        """Predicts class 1 unless the supplied map is all ones."""

        def forward(self, x, attention_map=None):
            logits = torch.zeros(len(x), 2)
            fixed = attention_map is not None and bool((attention_map == 1).all(dim=(1, 2, 3)).any())
            logits[:, 0 if fixed else 1] = 1.0
            return type("Out", (), {"perception_logits": logits})()

    labels = torch.tensor([0, 0])
    out = abn.table1_errors(
        Fixed(), torch.zeros(2, 3, 4, 4), labels, torch.ones(2, 1, 1, 1), torch.device("cpu")
    )
    assert out == {"n": 2, "error_before": 1.0, "error_after": 0.0}


def test_verdict_reports_a_significant_improvement():
    accuracy = pd.DataFrame(
        {
            "replicate": [0, 1, 2] * 3,
            "arm": [a for a in abn.ARMS for _ in range(3)],
            "accuracy": [0.5, 0.6, 0.7, 0.6, 0.71, 0.79, 0.5, 0.61, 0.69],
        }
    )
    explained = pd.DataFrame(
        {
            "replicate": [0, 1, 2] * 2,
            "method": ["ABN"] * 3 + ["fine-tuned"] * 3,
            "deletion": [0.3, 0.4, 0.5, 0.2, 0.31, 0.39],
            "insertion": [0.5] * 3 + [0.5, 0.5, 0.51],
            "mse": [0.2, 0.3, 0.25, 0.2, 0.3, 0.25],
        }
    )
    sentence = abn.verdict(accuracy, explained)
    assert "+0.100 (an improvement at p < 0.05" in sentence
    assert "deletion 0.400 -> 0.300 (an improvement at p < 0.05" in sentence


def test_real_layouts_load_with_their_knowledge(tmp_path):
    """CUB (images, segmentations, bubbles) and the IDRiD lesion task (folds, lesion maps) from layout samples."""
    from attnlib.data.layout_samples import (
        write_cub_bubbles,
        write_cub_sample,
        write_idrid_segmentation_sample,
    )

    cub_root = write_cub_sample(tmp_path / "cub")
    write_cub_bubbles(cub_root / "bubbles.csv")
    cub = abn.load_data("cub", cub_root, profile="smoke")
    train, test = cub.replicate(0)
    assert cub.protocol == "seeds" and len(train) and len(test) and cub.image_size == (64, 64)
    assert cub.sources == ["editor", "bubbles"]
    sample = next(iter(cub.bubbles))
    grid_map, provenance = abn.human_map(cub, sample, "bubbles", np.zeros((4, 4), np.float32), {})
    assert provenance.source == "bubbles" and grid_map.max() == pytest.approx(1.0)
    assert all(mask.shape == (64, 64) for mask in cub.evidence.values())

    idrid = abn.load_data("idrid", write_idrid_segmentation_sample(tmp_path / "idrid"), profile="smoke")
    assert idrid.protocol == "folds" and len(idrid.splits) == abn.study_settings("smoke")["folds"]
    tests = [set(idrid.replicate(r)[1].ids) for r in range(len(idrid.splits))]
    assert set.union(*tests) == set(idrid.images.ids) and sum(map(len, tests)) == len(idrid.images)
    assert "segmentation" in idrid.sources
    diseased = [i for i, lab in zip(idrid.images.ids, idrid.images.labels, strict=True) if lab == 1]
    lesion, provenance = abn.human_map(idrid, diseased[0], "segmentation", np.zeros((4, 4), np.float32), {})
    assert provenance.source == "segmentation" and lesion.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="replicate"):
        idrid.replicate(len(idrid.splits))


def test_cub_bubbles_csv_is_a_parameter_and_its_grid_maps_keep_pixel_centres(tmp_path):
    from attnlib.data.cub import CUBFormatError
    from attnlib.data.layout_samples import CUB_IMAGES, write_cub_bubbles, write_cub_sample

    root = write_cub_sample(tmp_path / "cub")
    write_cub_bubbles(root / "bubbles.csv")  # the default, which an explicit CSV replaces
    first = next(iter(CUB_IMAGES))  # 120 x 90 px (W x H)
    csv = tmp_path / "elsewhere" / "my_bubbles.csv"
    csv.parent.mkdir()
    # on a 4 x 4 grid a cell is 30 columns x 22.5 rows; cell (1, 1) is centred on the image point
    # (x, y) = (1.5 * 30 - 0.5, 1.5 * 22.5 - 0.5) = (44.5, 33.25); radius 30 = sigma 1 cell across, 4/3 down
    csv.write_text(f"image,worker,x,y,radius\n{first},w1,44.5,33.25,30\n")
    cub = abn.load_data("cub", root, profile="smoke", bubbles_csv=csv)
    assert list(cub.bubbles) == [first] and str(csv) in cub.description
    grid_map, _ = abn.human_map(cub, first, "bubbles", np.zeros((4, 4), np.float32), {})
    assert grid_map[1, 1] == pytest.approx(1.0)
    assert grid_map[1, 0] == pytest.approx(np.exp(-0.5), rel=1e-5)
    assert grid_map[1, 2] == pytest.approx(grid_map[1, 0])
    assert grid_map[0, 1] == pytest.approx(np.exp(-0.5 * 0.75**2), rel=1e-5)
    assert grid_map[2, 1] == pytest.approx(grid_map[0, 1])
    assert len(abn.load_data("cub", root, profile="smoke").bubbles) == 6  # the default CSV: training images
    with pytest.raises(CUBFormatError, match="missing.csv: bubbles CSV not found"):
        abn.load_data("cub", root, profile="smoke", bubbles_csv=tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="bubbles_csv applies to cub only"):
        abn.load_data("idrid", tmp_path, profile="smoke", bubbles_csv=csv)


def test_training_curves_continue_after_the_base_epochs(replicates):
    _, results = replicates
    curves = abn.training_curves(results[0])
    assert list(curves) == list(abn.ARMS)
    last = int(results[0].base.metrics["last_epoch"])
    assert curves[abn.ARMS[0]]["epoch"].max() == last
    assert curves[abn.ARMS[1]]["epoch"].min() == last + 1 and curves[abn.ARMS[2]]["epoch"].min() == last + 1


def test_editor_edits_fine_tune_through_the_study(data, replicates):
    """Maps saved by the editor are what ``run_replicate(human_edits=True)`` fine-tunes on, unconverted."""
    store, results = replicates
    settings = abn.study_settings("smoke")
    base = results[0].base
    session = abn.editor_session(store, data, 0, base, settings, "lowest_confidence", 2, "tester", "cpu")
    assert session.ids == results[0].selected[:2] and session.model_key == base.spec.key
    assert session.folder == abn.human_edits_folder(data, base, 0)
    saved = {}
    for _ in session.ids:
        session.paint({"mode": "add", "radius": 6.0, "points": [[10.0, 10.0], [30.0, 20.0]]})
        session.save()
        saved[session.sample_id] = session.edited_map
        session.next()
    res = abn.run_replicate(store, data, 0, "smoke", device="cpu", human_edits=True)
    assert res.selected == sorted(saved) and res.fine_tuned.spec.config["n_samples"] == 2
    assert res.train_maps == abn.edited_map_store(store).root / session.folder
    assert res.base.spec.key == base.spec.key and res.fine_tuned.spec.key != results[0].fine_tuned.spec.key
    stored = abn.edited_map_store(store).load_all(session.folder)
    for sample_id, edited in saved.items():
        np.testing.assert_array_equal(stored[sample_id].map, edited)
        assert stored[sample_id].provenance.source == "editor"
    with pytest.raises(FileNotFoundError, match="04_attention_editor"):
        abn.run_replicate(store, data, 1, "smoke", device="cpu", human_edits=True)
    queue = abn.editor_session(store, data, 0, base, settings, "misclassified", None, None, "cpu").ids
    train_predictions = base.predictions["train"]
    wrong = train_predictions.loc[train_predictions["pred"] != train_predictions["label"], "id"].astype(str)
    assert set(queue[: len(wrong)]) == set(wrong) and len(queue) == len(train_predictions)
    with pytest.raises(ValueError, match="selects no training image"):
        abn.editor_session(store, data, 0, base, settings, [], None, None, "cpu")
