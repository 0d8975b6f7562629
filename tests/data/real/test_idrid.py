"""The IDRiD Disease Grading loader on a hand-made copy of the real layout, with exactly known content."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attnlib.data.cache import ArrayCache
from attnlib.data.real.idrid import (
    GRADING_DIR,
    IDRiD,
    IDRiDFormatError,
    IDRiDSettings,
    crop_bounds,
    detect_laterality,
    image_dir,
    label_file,
    laterality_disagreements,
    paper_right_eyes,
    read_fundus,
    read_grading_csv,
    verify_idrid,
)
from attnlib.data.real.layout_samples import (
    IDRID_CORRUPT,
    IDRID_DISC,
    IDRID_ROWS,
    IDRID_SIZE,
    write_grading_csv,
    write_idrid_sample,
)
from attnlib.data.real.manifest import Problem

W, H = IDRID_SIZE
# id -> optic-disc side; IDRiD_004 is a right eye by its disc but not in the paper's list (index 3)
TRAIN_DISC = IDRID_DISC["train"]
# CSV rows (id, retinopathy, edema); IDRiD_007 has no image, IDRiD_008's image has no row
TRAIN_ROWS = IDRID_ROWS["train"]
TEST_ROWS = IDRID_ROWS["test"]  # IDRiD_003.jpg is corrupt


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_idrid_sample(tmp_path / "IDRiD", corrupt_image=True, row_without_image=True,
                              image_without_row=True)


def _plain(root: Path, **changes) -> IDRiD:
    return IDRiD(root, settings=IDRiDSettings(standardize=False, **changes), cache=None)


def test_csv_quirks_are_tolerated(root):
    table = read_grading_csv(label_file(root, "train"))
    assert list(table.columns) == ["id", "retinopathy", "macular_edema"]
    assert table["id"].tolist() == [r[0] for r in TRAIN_ROWS]
    assert table["retinopathy"].tolist() == [r[1] for r in TRAIN_ROWS]


def test_labels_class_counts_and_log_line(root, caplog):
    with caplog.at_level(logging.INFO, logger="attnlib.data.real.idrid"):
        dr = IDRiD(root, "train", "retinopathy", cache=None)
    assert "7 CSV rows, 7 images; skipped 1 CSV rows without an image ['IDRiD_007']" in caplog.text
    assert "ignored 1 images without a CSV row ['IDRiD_008']" in caplog.text
    assert (dr.n_rows_without_image, dr.n_images_without_row) == (1, 1)
    assert dr.metadata["id"].tolist() == [f"IDRiD_00{i}" for i in range(1, 7)]
    assert dr.labels.tolist() == [0, 1, 2, 3, 4, 2]
    assert dr.label_names == ["DR0", "DR1", "DR2", "DR3", "DR4"]
    assert dr.class_counts == {"DR0": 1, "DR1": 1, "DR2": 2, "DR3": 1, "DR4": 1}
    me = IDRiD(root, "train", "macular_edema", cache=None)
    assert me.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert me.class_counts == {"ME0": 2, "ME1": 2, "ME2": 2}
    test = IDRiD(root, "test", "retinopathy", cache=None)
    assert test.labels.tolist() == [1, 0, 3]
    assert test.label_names == dr.label_names  # classes from both official CSVs
    assert test[1]["lab"] == 0 and test[1]["id"] == "IDRiD_002"


def test_crop_bounds_scale_and_resize_shape(root):
    assert crop_bounds(4288) == (260, 3686)
    assert crop_bounds(428) == (26, 368)
    path = image_dir(root, "train") / "IDRiD_001.jpg"
    assert read_fundus(path, size=None).shape == (3, H, 368 - 26)
    assert read_fundus(path, crop=False, size=None).shape == (3, H, W)
    img = _plain(root)[0]["img"].numpy()
    assert img.shape == (3, 224, 224) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0


def test_paper_flip_is_exact_mirror_from_the_index_lists(root):
    assert {"IDRiD_001", "IDRiD_007", "IDRiD_413"} <= paper_right_eyes("train")
    assert "IDRiD_002" not in paper_right_eyes("train")
    assert "IDRiD_002" in paper_right_eyes("test") and "IDRiD_001" not in paper_right_eyes("test")
    paper, none = _plain(root), _plain(root, flip="none")
    assert paper.flips(0) and not paper.flips(1)
    np.testing.assert_array_equal(paper[0]["img"].numpy(), np.flip(none[0]["img"].numpy(), axis=2))
    np.testing.assert_array_equal(paper[1]["img"].numpy(), none[1]["img"].numpy())
    test = IDRiD(root, "test", settings=IDRiDSettings(standardize=False), cache=None)
    flat = test.with_settings(flip="none")
    np.testing.assert_array_equal(test[1]["img"].numpy(), np.flip(flat[1]["img"].numpy(), axis=2))


def test_automatic_laterality_and_disagreements(root):
    for image_id, side in TRAIN_DISC.items():
        assert detect_laterality(image_dir(root, "train") / f"{image_id}.jpg") == side
    auto = _plain(root, flip="auto")
    assert [auto.flips(i) for i in range(len(auto))] == [True, False, False, True, False, False]
    report = laterality_disagreements(root, "train")
    assert report[["id", "paper_right", "auto_right"]].values.tolist() == [["IDRiD_004", False, True]]
    assert report["disc_x"].iloc[0] > 0.5
    assert report["problem"].isna().all()


def test_laterality_report_goes_on_past_unreadable_images(root, caplog):
    # a truncated training JPEG sorts before IDRiD_004, the real disagreement
    truncated = image_dir(root, "train") / "IDRiD_002.jpg"
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with caplog.at_level(logging.INFO, logger="attnlib.data.real.idrid"):
        report = laterality_disagreements(root, "train")
    assert "disagree on 1 images; 1 images could not be read" in caplog.text
    assert report["id"].tolist() == ["IDRiD_002", "IDRiD_004"]
    bad, real = report.iloc[0], report.iloc[1]
    assert bad["problem"].startswith(f"{truncated}: unreadable image (image file is truncated")
    assert not bad["paper_right"] and pd.isna(bad["auto_right"]) and np.isnan(bad["disc_x"])
    assert (real["paper_right"], real["auto_right"]) == (False, True) and pd.isna(real["problem"])
    split, image_id = IDRID_CORRUPT  # not a JPEG at all
    report = laterality_disagreements(root, split)
    assert report["id"].tolist() == [image_id]
    assert report["problem"].iloc[0].startswith(f"{image_dir(root, split) / image_id}.jpg: unreadable image")


def test_imagenet_standardisation(root):
    raw = _plain(root)[2]["img"].numpy().astype(np.float64)
    std = IDRiD(root, cache=None)[2]["img"].numpy()
    for c, (m, s) in enumerate(((0.485, 0.229), (0.456, 0.224), (0.406, 0.225))):
        np.testing.assert_allclose(std[c], (raw[c] - m) / s, atol=1e-5)


def test_corrupt_jpeg_error_names_the_file(root):
    test = IDRiD(root, "test", cache=None)
    with pytest.raises(IDRiDFormatError, match=r"IDRiD_003\.jpg: unreadable image"):
        test[2]


def test_cache_hit_and_settings_in_key(root, tmp_path):
    cache = ArrayCache(tmp_path / "cache")
    ds = IDRiD(root, cache=cache)
    first = ds[0]["img"]
    again = ds[0]["img"]
    assert (cache.misses, cache.hits) == (1, 1)
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    ds.with_settings(size=(112, 112))[0]
    assert (cache.misses, cache.hits) == (2, 1)


def test_verify_idrid_lists_every_problem(root):
    write_grading_csv(label_file(root, "test"), [*TEST_ROWS[:2], ("IDRiD_003", 5, 3)])
    problems = verify_idrid(root, deep=True)
    corrupt = [p for p in problems if p.path.name == "IDRiD_003.jpg"]
    assert len(corrupt) == 1 and corrupt[0].severity == "error"
    assert corrupt[0].message.startswith("unreadable image")
    found = {(p.severity, p.path.name, p.message) for p in problems if p not in corrupt}
    train_csv, test_csv = label_file(root, "train").name, label_file(root, "test").name
    assert found == {
        ("warning", "a. Training Set", "7 images, the release has 413"),
        ("warning", "b. Testing Set", "3 images, the release has 103"),
        ("error", train_csv, f"IDRiD_007: no image {image_dir(root, 'train') / 'IDRiD_007'}.jpg"),
        ("error", "IDRiD_008.jpg", "image has no row in the grading CSV"),
        ("error", test_csv, "IDRiD_003: 'Retinopathy grade' = 5 outside 0-4"),
        ("error", test_csv, "IDRiD_003: 'Risk of macular edema' = 3 outside 0-2"),
    }
    assert verify_idrid(root / "missing")[0].message.startswith("Disease Grading folder not found")


def test_verify_notes_the_images_it_did_not_decode(tmp_path, capsys):
    from attnlib.cli import main

    root = write_idrid_sample(tmp_path / "IDRiD", corrupt_image=True)  # otherwise clean: 6 + 3 images
    note = Problem("note", root / GRADING_DIR, "9 images not decoded; run with --deep to check them")
    assert [p for p in verify_idrid(root) if p.severity == "note"] == [note]
    assert all(p.severity != "note" for p in verify_idrid(root, deep=True))
    assert main(["data", "verify", "idrid", "--root", str(root)]) == 0
    out = capsys.readouterr()
    assert f"{note}\n" in out.out and "0 errors, 2 warnings" in out.out and not out.err
    assert main(["data", "verify", "idrid", "--root", str(root), "--deep"]) == 1
    out = capsys.readouterr()
    assert "not decoded" not in out.out and "IDRiD_003.jpg: unreadable image" in out.err


def test_cli_verify_idrid_exit_code(root, capsys):
    from attnlib.cli import main

    code = main(["data", "verify", "idrid", "--root", str(root)])
    out = capsys.readouterr()
    assert code == 1  # the fixture has a CSV row without an image
    assert "errors" in out.out and "ERROR" in out.err
