"""Attention-map editing (brush, resampling, replay) and the edited-map store."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from attnlib.data.maps import edited_maps
from attnlib.data.maps.edited_maps import EditedMapStore, Provenance
from attnlib.data.maps.editing import Stroke, apply_strokes, downsample, edit_map, upsample


def disk(size: int, centre: tuple[int, int], radius: float) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


# --- brush --------------------------------------------------------------------------------------


def test_dab_sets_exactly_the_disk():
    out = apply_strokes(np.zeros((9, 9)), [Stroke("add", 2, [(4, 4)])])
    expected = disk(9, (4, 4), 2)
    assert expected.sum() == 13
    np.testing.assert_array_equal(out, expected.astype(np.float32))
    assert out.dtype == np.float32


def test_two_point_stroke_covers_the_segment():
    out = apply_strokes(np.zeros((9, 9)), [Stroke("add", 1, [(4, 1), (4, 7)])])
    expected = np.zeros((9, 9), dtype=bool)
    expected[3:6, 1:8] = True  # rows 3..5 along the segment
    expected[4, 0] = expected[4, 8] = True  # round caps at both ends
    np.testing.assert_array_equal(out.astype(bool), expected)


def test_fast_diagonal_drag_leaves_no_gaps():
    out = apply_strokes(np.zeros((20, 20)), [Stroke("add", 0.75, [(0, 0), (19, 19)])])
    assert all(out[i, i] == 1 for i in range(20))


def test_remove_sets_to_zero_and_leaves_the_rest():
    start = np.full((9, 9), 0.6, dtype=np.float32)
    out = apply_strokes(start, [Stroke("remove", 2, [(4, 4)])])
    mask = disk(9, (4, 4), 2)
    assert (out[mask] == 0).all() and (out[~mask] == np.float32(0.6)).all()
    assert (start == np.float32(0.6)).all()  # input untouched


def test_strength_blends_once_per_stroke():
    start = np.full((9, 9), 0.2, dtype=np.float32)
    # the two segments overlap around (4, 4): still blended only once
    out = apply_strokes(start, [Stroke("add", 1, [(4, 2), (4, 4), (4, 2)], strength=0.5)])
    assert out[4, 3] == np.float32(0.2 + 0.5 * 0.8)
    assert out[0, 0] == np.float32(0.2)
    out = apply_strokes(start, [Stroke("remove", 1, [(4, 4)], strength=0.5)])
    assert out[4, 4] == np.float32(0.1)


def test_order_matters():
    add, remove = Stroke("add", 2, [(4, 4)]), Stroke("remove", 1, [(4, 4)])
    start = np.zeros((9, 9))
    assert apply_strokes(start, [add, remove])[4, 4] == 0
    assert apply_strokes(start, [remove, add])[4, 4] == 1


def test_values_stay_in_unit_interval():
    rng = np.random.default_rng(0)
    strokes = [
        Stroke("add" if i % 2 else "remove", 3, rng.uniform(0, 31, (4, 2)), strength=0.7) for i in range(10)
    ]
    out = apply_strokes(rng.random((32, 32)), strokes)
    assert out.min() >= 0 and out.max() <= 1


# --- resampling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("image_size", [(224, 224), (360, 360), (30, 23)])
def test_constant_map_round_trip_is_exact(image_size):
    grid = np.full((14, 14), np.float32(0.3))
    image_map = upsample(grid, image_size)
    assert image_map.shape == image_size
    np.testing.assert_array_equal(image_map, np.full(image_size, np.float32(0.3)))
    np.testing.assert_array_equal(downsample(image_map, (14, 14)), grid)


def test_downsample_of_edited_map_is_the_block_means():
    rng = np.random.default_rng(1)
    grid = rng.random((14, 14)).astype(np.float32)
    strokes = [Stroke("add", 10, [(30, 40), (100, 180)]), Stroke("remove", 6, [(200, 20)], strength=0.5)]
    edited, image_map = edit_map(grid, (224, 224), strokes)
    np.testing.assert_array_equal(image_map, apply_strokes(upsample(grid, (224, 224)), strokes))
    blocks = image_map.astype(np.float64).reshape(14, 16, 14, 16).mean(axis=(1, 3))
    np.testing.assert_allclose(edited, blocks, rtol=0, atol=1e-7)
    assert edited.shape == (14, 14) and edited.dtype == np.float32


def test_upsample_is_bilinear_without_aligned_corners():
    out = upsample(np.array([[0.0, 1.0]]), (1, 4))
    np.testing.assert_allclose(out, [[0.0, 0.25, 0.75, 1.0]])


# --- replay and validation ----------------------------------------------------------------------


def test_replay_from_json_is_bit_for_bit():
    rng = np.random.default_rng(2)
    grid = rng.random((14, 14)).astype(np.float32)
    strokes = [
        Stroke("add", 7.3, [tuple(p) for p in rng.uniform(0, 223, (6, 2))], strength=0.37),
        Stroke("remove", 4, [(np.float32(12.25), 200)]),
        Stroke("add", 2.5, [(0, 0), (223.5, 223.5)]),
    ]
    saved = json.loads(json.dumps([s.to_dict() for s in strokes]))
    replayed = [Stroke.from_dict(d) for d in saved]
    assert replayed == strokes
    first, second = edit_map(grid, (224, 224), strokes), edit_map(grid, (224, 224), replayed)
    assert first[0].tobytes() == second[0].tobytes() and first[1].tobytes() == second[1].tobytes()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "paint"}, "mode"),
        ({"radius": 0}, "radius"),
        ({"radius": float("inf")}, "radius"),
        ({"strength": 0}, "strength"),
        ({"strength": 1.5}, "strength"),
        ({"points": []}, "at least one point"),
        ({"points": [(1.0, float("nan"))]}, "not finite"),
        ({"points": [(1, 2, 3)]}, r"\(row, col\)"),
    ],
)
def test_stroke_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Stroke(**{"mode": "add", "radius": 2, "points": [(1, 1)], **kwargs})


def test_out_of_image_point_is_named_when_applied():
    stroke = Stroke("add", 2, [(4, 4), (9, 4)])
    with pytest.raises(ValueError, match=r"\(9\.0, 4\.0\) lies outside the 9 x 9 image"):
        apply_strokes(np.zeros((9, 9)), [stroke])
    apply_strokes(np.zeros((9, 9)), [Stroke("add", 2, [(-0.5, 8.5)])])  # edges are inside


def test_bad_maps_and_dicts_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        apply_strokes(np.full((4, 4), 2.0), [])
    with pytest.raises(ValueError, match="H x W"):
        upsample(np.zeros((1, 4, 4)), (8, 8))
    with pytest.raises(ValueError, match="unknown keys"):
        Stroke.from_dict({"mode": "add", "radius": 1, "points": [[0, 0]], "colour": "red"})


# --- store --------------------------------------------------------------------------------------


def provenance(**overrides) -> Provenance:
    fields = {
        "source": "editor",
        "grid_size": (14, 14),
        "image_size": (224, 224),
        "strokes": [
            Stroke("add", 8, [(10, 10), (50, 60)]),
            Stroke("remove", 3, [(100, 100)], strength=0.5),
        ],
        "editor": "alice",
        "model_key": "abn/3f2a9c1b0d4e/seed0",
        "checkpoint": "best",
    }
    return Provenance(**{**fields, **overrides})


def test_store_round_trip(tmp_path):
    store = EditedMapStore(tmp_path)
    grid = np.random.default_rng(3).random((14, 14)).astype(np.float32)
    prov = provenance()
    edited, _ = edit_map(grid, prov.image_size, prov.strokes)
    path = store.save("cub", "Black_Footed_Albatross_0001", edited, prov)
    assert path == tmp_path / "cub" / "Black_Footed_Albatross_0001.json"
    loaded = store.load("cub", "Black_Footed_Albatross_0001")
    assert loaded.map.dtype == np.float32 and loaded.map.tobytes() == edited.tobytes()
    assert loaded.provenance == prov
    record = json.loads(path.read_text())
    assert record["format_version"] == 1 and record["source"] == "editor"
    assert record["grid_size"] == [14, 14] and record["image_size"] == [224, 224]
    assert record["editor"] == "alice" and record["checkpoint"] == "best"
    assert record["created_utc"].endswith("+00:00")
    # the stored strokes replay the stored map from the original one
    replayed = [Stroke.from_dict(d) for d in record["strokes"]]
    assert edit_map(grid, tuple(record["image_size"]), replayed)[0].tobytes() == loaded.map.tobytes()


def test_ids_load_all_and_overwrite(tmp_path):
    store = EditedMapStore(tmp_path)
    prov = provenance(source="segmentation", strokes=())
    assert store.ids("idrid") == []
    for sample_id, value in [("IDRiD_02", 0.2), ("IDRiD_01", 0.1)]:
        store.save("idrid", sample_id, np.full((14, 14), value), prov)
    store.save("idrid", "IDRiD_01", np.full((14, 14), 0.9), prov)
    assert store.ids("idrid") == ["IDRiD_01", "IDRiD_02"]
    maps = store.load_all("idrid")
    assert maps["IDRiD_01"].map[0, 0] == np.float32(0.9) and maps["IDRiD_02"].map[0, 0] == np.float32(0.2)
    assert len(list((tmp_path / "idrid").glob("IDRiD_01.*.npz"))) == 1  # the old map file is gone


def test_crash_between_writes_keeps_the_previous_state(tmp_path, monkeypatch):
    store = EditedMapStore(tmp_path)
    store.save("cub", "a", np.full((14, 14), 0.25), provenance(editor="old"))

    def crash(path, obj):
        raise KeyboardInterrupt("killed before the record was written")

    monkeypatch.setattr(edited_maps, "atomic_write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        store.save("cub", "a", np.full((14, 14), 0.75), provenance(editor="new"))
    with pytest.raises(KeyboardInterrupt):
        store.save("cub", "b", np.full((14, 14), 0.75), provenance())
    monkeypatch.undo()

    assert store.ids("cub") == ["a"]  # the new sample without a record is not stored
    kept = store.load("cub", "a")
    assert kept.provenance.editor == "old" and (kept.map == np.float32(0.25)).all()
    with pytest.raises(FileNotFoundError, match=r"b\.json"):
        store.load("cub", "b")
    store.save("cub", "a", np.full((14, 14), 0.5), provenance(editor="again"))
    assert len(list((tmp_path / "cub").glob("a.*.npz"))) == 1  # orphan removed by the next save


def test_concurrent_saves_of_one_sample_leave_a_loadable_record(tmp_path, monkeypatch):
    """Editor A is between its map and its record when editor B saves the same sample: B waits for A's
    lock, so A's record never names a map file that B deleted (without the lock, load would fail)."""
    store = EditedMapStore(tmp_path)
    original = edited_maps.atomic_write_json
    a_between_writes = threading.Event()

    def slow_for_a(path, obj):
        if threading.current_thread().name == "editor-a":
            a_between_writes.set()
            time.sleep(0.5)
        return original(path, obj)

    monkeypatch.setattr(edited_maps, "atomic_write_json", slow_for_a)
    a = threading.Thread(
        target=store.save, args=("cub", "x", np.full((14, 14), 0.25), provenance(editor="a")), name="editor-a"
    )
    a.start()
    assert a_between_writes.wait(10)
    store.save("cub", "x", np.full((14, 14), 0.75), provenance(editor="b"))
    a.join()
    kept = store.load("cub", "x")
    assert kept.provenance.editor == "b" and (kept.map == np.float32(0.75)).all()  # the last save wins
    assert len(list((tmp_path / "cub").glob("x.*.npz"))) == 1
    assert store.ids("cub") == ["x"]  # the lock file is not a sample
    assert not list((tmp_path / "cub").glob(".*.lock"))  # and it is removed after use


@pytest.mark.parametrize("bad", ["", "..", ".hidden", "a/b", "a\\b", "../x", "x\0y"])
def test_bad_ids_are_refused(tmp_path, bad):
    store = EditedMapStore(tmp_path)
    with pytest.raises(ValueError, match="plain file name"):
        store.save("cub", bad, np.zeros((14, 14)), provenance())
    with pytest.raises(ValueError, match="plain file name"):
        store.load(bad, "a")


def test_save_validates_map_and_provenance(tmp_path):
    store = EditedMapStore(tmp_path)
    with pytest.raises(ValueError, match="grid_size"):
        store.save("cub", "a", np.zeros((7, 7)), provenance())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        store.save("cub", "a", np.full((14, 14), np.nan), provenance())
    with pytest.raises(ValueError, match="source"):
        provenance(source="guess")
    with pytest.raises(ValueError, match="image_size"):
        provenance(image_size=None)
    with pytest.raises(ValueError, match="outside the 32 x 32 image"):
        provenance(image_size=(32, 32))


def test_corrupt_and_missing_files_are_named(tmp_path):
    store = EditedMapStore(tmp_path)
    record = store.save("cub", "a", np.full((14, 14), 0.5), provenance())
    map_file = tmp_path / "cub" / json.loads(record.read_text())["map_file"]

    good = map_file.read_bytes()
    map_file.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=f"{map_file.name}: corrupt"):
        store.load("cub", "a")
    np.savez(map_file, map=np.full((14, 14), 0.6, dtype=np.float32))
    with pytest.raises(ValueError, match=f"{map_file.name}: map does not match"):
        store.load("cub", "a")
    map_file.unlink()
    with pytest.raises(FileNotFoundError, match=map_file.name):
        store.load("cub", "a")
    map_file.write_bytes(good)
    store.load("cub", "a")

    record.write_text("{ truncated")
    with pytest.raises(ValueError, match=r"a\.json: corrupt"):
        store.load("cub", "a")
    record.write_text(json.dumps({"format_version": 1, "source": "editor"}))
    with pytest.raises(ValueError, match=r"a\.json: corrupt"):
        store.load("cub", "a")
    with pytest.raises(FileNotFoundError, match=r"zzz\.json"):
        store.load("cub", "zzz")
