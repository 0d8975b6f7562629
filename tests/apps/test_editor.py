"""The attention-map editor's Python side, driven without a browser: brush, undo/redo, save, predictions."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnlib.apps.editor import AttentionEditor, EditorSession
from attnlib.apps.editor import widget as widget_module
from attnlib.apps.editor.widget import HEADLESS
from attnlib.data.arrays import ArrayDataset
from attnlib.data.maps import edited_maps
from attnlib.data.maps.edited_maps import EditedMapStore
from attnlib.data.maps.editing import Stroke, edit_map, upsample
from attnlib.methods.abn import table1_errors
from attnlib.models.registry import create_model

SIZE = 32  # images 32 x 32 -> ResNet-18 + ABN map 2 x 2


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("resnet18", 3, 3, pretrained=False, head="abn").eval()


@pytest.fixture(scope="module")
def dataset():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(6, 3, SIZE, SIZE, generator=generator)
    return ArrayDataset(images, [0, 1, 2, 0, 1, 2], [f"s{i}" for i in range(6)], ["cat", "dog", "owl"], "fp")


def _session(model, dataset, root, ids=("s3", "s1", "s5"), **kwargs):
    kwargs = {"model_key": "run123", "checkpoint": "last (epoch 7)", "editor": "tester", **kwargs}
    return EditorSession(model, dataset, EditedMapStore(root), "cats-human", list(ids), **kwargs)


ADD = Stroke("add", 5.0, [(3.0, 4.0), (20.0, 25.0)])
REMOVE = Stroke("remove", 9.0, [(16.0, 16.0)], strength=0.5)


def test_queue_order_and_current_sample(model, dataset, tmp_path):
    session = _session(model, dataset, tmp_path)
    assert session.sample_id == "s3" and session.label_name == "cat" and session.image_size == (SIZE, SIZE)
    torch.testing.assert_close(session.image, dataset.images[3])
    with torch.no_grad():
        expected = model(dataset.images[3:4]).predicted_map[0, 0].numpy()
    np.testing.assert_allclose(session.network_map, expected, atol=1e-6)
    assert session.grid_size == (2, 2)
    session.next(), session.next(), session.next()  # stays on the last
    assert session.sample_id == "s5"
    session.previous()
    assert session.sample_id == "s1"
    session.open("s3")
    assert session.index == 0
    with pytest.raises(ValueError, match="not in this session's queue"):
        session.open("s0")
    with pytest.raises(ValueError, match="not in the dataset"):
        _session(model, dataset, tmp_path, ids=["s1", "nope"])


def test_brush_is_the_shared_edit_module(model, dataset, tmp_path):
    session = _session(model, dataset, tmp_path)
    m = session.network_map
    session.paint(ADD)
    session.paint(REMOVE.to_dict())  # the browser sends the dict form
    grid, _ = edit_map(m, (SIZE, SIZE), [ADD, REMOVE])
    np.testing.assert_array_equal(session.edited_map, grid)
    np.testing.assert_array_equal(session.display_map, upsample(grid, (SIZE, SIZE)))
    assert not np.array_equal(grid, m)
    with pytest.raises(ValueError, match="outside the 32 x 32 image"):
        session.paint(Stroke("add", 2.0, [(40.0, 1.0)]))
    assert session.strokes == (ADD, REMOVE)


def test_undo_redo_reset(model, dataset, tmp_path):
    session = _session(model, dataset, tmp_path)
    m = session.network_map.copy()
    assert not session.undo() and not session.redo()
    session.paint(ADD), session.paint(REMOVE)
    assert session.undo() and session.strokes == (ADD,)
    np.testing.assert_array_equal(session.edited_map, edit_map(m, (SIZE, SIZE), [ADD])[0])
    assert session.redo() and session.strokes == (ADD, REMOVE) and not session.can_redo
    session.undo()
    session.paint(REMOVE.to_dict() | {"mode": "add"})  # a new stroke drops the redo stack
    assert not session.can_redo and len(session.strokes) == 2
    session.reset()
    np.testing.assert_array_equal(session.edited_map, m)
    assert session.redo() and session.strokes == (ADD,)  # reset is undoable stroke by stroke
    # each sample keeps its own unsaved strokes while navigating
    session.next()
    assert session.strokes == () and not session.dirty
    session.previous()
    assert session.strokes == (ADD,) and session.dirty


def test_save_round_trip_and_provenance(model, dataset, tmp_path):
    session = _session(model, dataset, tmp_path)
    session.paint(ADD), session.paint(REMOVE)
    assert session.dirty and not session.saved
    record_path = session.save()
    assert session.saved and not session.dirty
    stored = EditedMapStore(tmp_path).load("cats-human", "s3")
    np.testing.assert_array_equal(stored.map, session.edited_map)
    p = stored.provenance
    assert (p.source, p.editor, p.model_key, p.checkpoint) == ("editor", "tester", "run123", "last (epoch 7)")
    assert p.strokes == (ADD, REMOVE) and p.grid_size == (2, 2) and p.image_size == (SIZE, SIZE)
    assert json.loads(record_path.read_text())["sample_id"] == "s3"
    # the saved strokes replay on the network's map to the saved map
    np.testing.assert_array_equal(edit_map(session.network_map, p.image_size, p.strokes)[0], stored.map)
    # a new session (e.g. after a kernel restart) reopens the saved edit
    again = _session(model, dataset, tmp_path)
    assert again.strokes == (ADD, REMOVE) and again.saved and not again.dirty and not again.notice
    np.testing.assert_array_equal(again.edited_map, stored.map)
    assert again.undo() and again.dirty


def test_reopening_against_another_model_says_so(model, dataset, tmp_path):
    session = _session(model, dataset, tmp_path)
    session.paint(ADD)
    session.save()
    torch.manual_seed(5)
    other = create_model("resnet18", 3, 3, pretrained=False, head="abn").eval()
    again = _session(other, dataset, tmp_path, model_key="run999")
    assert again.strokes == (ADD,) and "run123" in again.notice


def test_save_is_atomic_when_the_record_write_fails(model, dataset, tmp_path, monkeypatch):
    session = _session(model, dataset, tmp_path)
    session.paint(ADD)
    session.save()
    first = EditedMapStore(tmp_path).load("cats-human", "s3").map
    session.paint(REMOVE)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(edited_maps, "atomic_write_json", crash)
    widget = AttentionEditor(session)
    widget.handle({"action": "save"})
    assert widget.message == "error: disk full" and widget.dirty
    monkeypatch.undo()
    np.testing.assert_array_equal(EditedMapStore(tmp_path).load("cats-human", "s3").map, first)
    assert _session(model, dataset, tmp_path).strokes == (ADD,)  # the earlier save is intact
    widget.handle({"action": "save"})  # the strokes were kept, so the retry saves them
    assert EditedMapStore(tmp_path).load("cats-human", "s3").provenance.strokes == (ADD, REMOVE)


def test_predictions_feed_the_edited_map(model, dataset, tmp_path):
    session = _session(model, dataset, tmp_path)
    session.paint(REMOVE)
    x = dataset.images[3:4]
    with torch.no_grad():
        edited = model(x, attention_map=torch.from_numpy(session.edited_map)[None, None]).perception_logits
        plain = model(x).perception_logits
    for probs, got in (
        (edited.softmax(1)[0], session.predictions()),
        (plain.softmax(1)[0], session.predictions(False)),
    ):
        order = probs.argsort(descending=True)
        assert [name for name, _ in got] == [dataset.label_names[i] for i in order]
        np.testing.assert_allclose([p for _, p in got], probs[order].numpy(), rtol=1e-5)
    assert len(_session(model, dataset, tmp_path, top_k=2).predictions()) == 2


def test_table1_and_summary_count_only_saved_edits(model, dataset, tmp_path):
    session = _session(model, dataset, tmp_path)
    assert session.table1()["n"] == 0 and session.saved_edits().empty
    session.paint(REMOVE), session.save()
    session.next()
    session.paint(ADD)  # unsaved: not counted
    out = session.table1()
    maps = torch.from_numpy(EditedMapStore(tmp_path).load("cats-human", "s3").map)[None, None]
    expected = table1_errors(model, dataset.images[3:4], torch.tensor([0]), maps, torch.device("cpu"))
    assert out == expected
    frame = session.saved_edits()
    assert (
        frame["id"].tolist() == ["s3"] and frame.loc[0, "strokes"] == 1 and frame.loc[0, "editor"] == "tester"
    )
    assert session.sample_id == "s1" and session.strokes == (ADD,)  # the summary leaves the session as it was
    views = session.overview()
    assert len(views["images"]) == 1 and views["maps"][0][1].shape == (2, 2)


def test_widget_actions_and_synced_state(model, dataset, tmp_path):
    widget = AttentionEditor(_session(model, dataset, tmp_path))
    assert widget.sample_id == "s3" and widget.position == "1 / 3" and widget.true_label == "cat"
    assert widget.grid_size == [2, 2] and widget.image_size == [SIZE, SIZE] and not widget.can_undo
    image = Image.open(io.BytesIO(base64.b64decode(widget.overlay.split(",", 1)[1])))
    assert image.size == (SIZE, SIZE) and image.mode == "RGB"
    revision = widget.revision
    widget.handle({"action": "stroke", "stroke": ADD.to_dict()})
    np.testing.assert_allclose(
        widget.edited_map, edit_map(widget.session.network_map, (SIZE, SIZE), [ADD])[0].ravel()
    )
    assert widget.revision == revision + 1 and widget.can_undo and widget.dirty and widget.n_strokes == 1
    probs = [p["probability"] for p in widget.predictions]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True)
    widget.handle({"action": "stroke", "stroke": {"mode": "add", "radius": 2, "points": [[99, 0]]}})
    assert widget.message.startswith("error: stroke point") and widget.n_strokes == 1
    widget.handle({"action": "explode"})
    assert "unknown editor action" in widget.message
    widget.handle({"action": "save"})
    assert widget.saved and not widget.dirty and widget.message.startswith("saved s3.json")
    widget.handle({"action": "next"})
    assert widget.sample_id == "s1" and widget.n_strokes == 0 and not widget.saved
    widget.handle({"action": "undo"})  # nothing to undo: no error, no change
    assert widget.message == "" and widget.n_strokes == 0
    assert HEADLESS in repr(widget) and "cats-human" in repr(widget)


def test_widget_ships_its_browser_code():
    esm = Path(widget_module.__file__).with_name("editor.js").read_text(encoding="utf-8")
    assert "export default { render }" in esm
    assert not re.search(
        r"^\s*import\b|\bimport\(|https?://", esm, re.MULTILINE
    )  # no imports, nothing fetched
