"""The JAFFE loader on a hand-made copy of the distribution layout, with exactly known content."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from attnlib.data.cache import ArrayCache
from attnlib.data.real.jaffe import (
    JAFFE,
    LABEL_NAMES,
    NAME_PATTERN,
    POSES,
    RATING_COLUMNS,
    SUBJECTS,
    JAFFEFormatError,
    JAFFESettings,
    find_ratings_readme,
    read_ratings,
    verify_jaffe,
)
from attnlib.data.real.layout_samples import (
    JAFFE_BADLY_NAMED,
    JAFFE_CORRUPT,
    JAFFE_IMAGES,
    JAFFE_RATINGS,
    JAFFE_README,
    JAFFE_UNRATED,
    jaffe_readme_text,
    write_jaffe_sample,
)
from attnlib.data.real.manifest import Problem, load_manifest

FIRST = JAFFE_RATINGS  # key -> (HAP, SAD, SUR, ANG, DIS, FEA) of the first table; NM-SU2 ties SUR and DIS
IMAGES = JAFFE_IMAGES  # file name -> label; 8-bit images for even positions, 16-bit for odd
CORRUPT = JAFFE_CORRUPT  # rated (sadness), not a TIFF inside
UNRATED = JAFFE_UNRATED
BADLY_NAMED = JAFFE_BADLY_NAMED
README = JAFFE_README


@pytest.fixture
def jaffe_root(tmp_path):
    return write_jaffe_sample(tmp_path / "jaffe", corrupt_image=True, unrated_image=True,
                              badly_named_image=True)


@pytest.fixture
def unpacked(tmp_path):
    """A re-distribution's layout: the ratings README beside the ``jaffe/`` folder of the (clean) sample."""
    parent = tmp_path / "JAFFE-dist"
    write_jaffe_sample(parent / "jaffe")
    (parent / "jaffe" / README).rename(parent / README)
    return parent


def test_readme_search_skips_files_without_the_header(jaffe_root):
    assert find_ratings_readme(jaffe_root) == jaffe_root / README
    parent_readme = jaffe_root.parent / "README.txt"
    parent_readme.write_text(jaffe_readme_text(), encoding="utf-8")
    assert find_ratings_readme(jaffe_root) == jaffe_root / README  # the TIFFs' folder first
    (jaffe_root / README).unlink()
    assert find_ratings_readme(jaffe_root) == parent_readme
    parent_readme.unlink()
    with pytest.raises(JAFFEFormatError, match=r"no README\* file here or in the parent folder holds the "
                       r"ratings header.*\(looked at \['jaffe/README.md'\]\)"):
        find_ratings_readme(jaffe_root)


def test_ratings_first_table_only_exact_values(jaffe_root):
    ratings = read_ratings(jaffe_root / README)
    assert list(ratings.columns) == ["row", *RATING_COLUMNS, "PIC"]
    expected = pd.DataFrame(
        [
            {"row": i, **dict(zip(RATING_COLUMNS, v, strict=True)), "PIC": k}
            for i, (k, v) in enumerate(FIRST.items(), 1)
        ]
    )
    pd.testing.assert_frame_equal(ratings, expected)
    assert ratings.set_index("PIC").at["YM-FE1", "FEA"] == 3.30  # not the "Fear Excluded" row


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ("6 1.20 2.80 x 1.80 2.90 3.60 MK-FE1", r"not a ratings row"),
        ("6 1.20 2.80 3.10 1.80 2.90 MK-FE1", r"expected 8 fields, got 7"),
        ("6 1.20 2.80 3.10 1.80 2.90 3.60 MK_FE1", r"not a key like"),
        ("6 1.20 2.80 3.10 1.80 2.90 7.60 MK-FE1", r"outside \[1, 5\]"),
        ("6 1.20 2.80 3.10 1.80 2.90 3.60 KA-AN1", r"KA-AN1 repeats the row on line 8"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, bad_row, message):
    rows = jaffe_readme_text().splitlines()[7:12] + [bad_row]
    path = tmp_path / README
    path.write_text(jaffe_readme_text(rows), encoding="utf-8")
    # header on line 6, blank line 7, rows on lines 8-12, a blank line, the bad row on line 14
    with pytest.raises(JAFFEFormatError, match=rf"{README}: line 14: .*{message}"):
        read_ratings(path)


def test_labels_metadata_and_counts_logged(jaffe_root, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="attnlib.data.real.jaffe"):
        ds = JAFFE(jaffe_root, cache=ArrayCache(tmp_path / "cache"))
    assert ds.label_names == list(LABEL_NAMES)
    assert dict(zip(ds.metadata["file"], ds.labels.tolist(), strict=True)) == {**IMAGES, CORRUPT: 1}
    row = ds.metadata.set_index("id").loc["MK.FE1.131"]
    assert (row["subject"], row["pose"], row["n"], row["index"], row["key"]) == ("MK", "FE", 1, 131, "MK-FE1")
    assert ds.metadata.set_index("id").at["NA.NE1.202", "pose"] == "NE"
    assert (
        "13 TIFFs named <SUBJ>.<POSE><n>.<idx>.tiff; skipped 1 without ratings in README_FIRST.txt "
        "['YM.DI3.60.tiff']; ignored 1 TIFFs named otherwise ['KA_AN3_40.tiff']; kept 12 images"
    ) in caplog.text
    assert len(ds.fingerprint) == 12
    assert JAFFE(jaffe_root, cache=None).fingerprint == ds.fingerprint
    assert JAFFE(jaffe_root, JAFFESettings(channels=3), cache=None).fingerprint != ds.fingerprint


def test_items_8_and_16_bit_and_cache_hit(jaffe_root, tmp_path):
    cache = ArrayCache(tmp_path / "cache")
    ds = JAFFE(jaffe_root, cache=cache)
    ids = ds.metadata["id"].tolist()
    for name in ("KA.AN1.39", "KA.HA1.29"):  # written as 8-bit and 16-bit
        item = ds[ids.index(name)]
        img = item["img"].numpy()
        assert item["id"] == name and item["lab"] == IMAGES[f"{name}.tiff"]
        assert img.shape == (1, 256, 256) and img.dtype == np.float32
        assert img[0, 0, 0] == 1.0 and img[0, 0, 1] == 0.0 and img[0, 5, 5] == pytest.approx(0.5, abs=3e-3)
    assert (cache.hits, cache.misses) == (0, 2)
    ds[ids.index("KA.AN1.39")]
    assert (cache.hits, cache.misses) == (1, 2)
    small = JAFFE(jaffe_root, JAFFESettings(image_size=(64, 48), channels=3), cache=cache)
    img = small[ids.index("KA.AN1.39")]["img"]
    assert img.shape == (3, 64, 48) and float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    assert (img[0] == img[2]).all() and cache.misses == 3


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_corrupt_tiff_error_names_file(jaffe_root, tmp_path):
    ds = JAFFE(jaffe_root, cache=ArrayCache(tmp_path / "cache"))
    with pytest.raises(JAFFEFormatError, match=rf"{CORRUPT}: unreadable TIFF"):
        ds[ds.metadata["file"].tolist().index(CORRUPT)]


def test_settings_are_checked():
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        JAFFESettings(channels=2)


def test_manifest_matches_loader_constants():
    spec = load_manifest("jaffe")["files"]["images"]
    assert spec["name_pattern"] == NAME_PATTERN
    assert tuple(spec["subjects"]) == SUBJECTS and tuple(spec["poses"]) == POSES


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_verify_lists_every_problem(jaffe_root):
    shutil.copy(jaffe_root / "KA.AN1.39.tiff", jaffe_root / "ZZ.XX1.5.tiff")
    found = {(p.severity, p.path.name, p.message) for p in verify_jaffe(jaffe_root, deep=True)}
    corrupt = {f for f in found if f[1] == CORRUPT}
    assert len(corrupt) == 1 and corrupt.pop()[2].startswith("unreadable TIFF")
    assert {f for f in found if f[1] != CORRUPT} == {
        ("warning", BADLY_NAMED, "name is not <SUBJ>.<POSE><n>.<idx>.tiff; the loader ignores it"),
        ("warning", "jaffe", "14 images, the release has 213"),
        ("error", "ZZ.XX1.5.tiff", "unknown subject 'ZZ'"),
        ("error", "ZZ.XX1.5.tiff", "unknown pose 'XX'"),
        ("error", "ZZ.XX1.5.tiff", "no ratings row for ZZ-XX1"),
        ("error", UNRATED, "no ratings row for YM-DI3"),
    }


def test_verify_reports_ratings_problems(jaffe_root):
    text = (jaffe_root / README).read_text(encoding="utf-8").replace(" KL-SA1", " KL-SA1 extra")
    (jaffe_root / README).write_text(text, encoding="utf-8")
    problems = [(p.severity, p.path.name, p.message) for p in verify_jaffe(jaffe_root)]
    assert ("error", README, "line 10: expected 8 fields, got 9") in problems
    (jaffe_root / README).unlink()
    missing = ("no README* file here or in the parent folder holds the ratings header "
               "'# HAP SAD SUR ANG DIS FEA PIC' (looked at ['jaffe/README.md'])")
    assert ("error", "jaffe", missing) in [
        (p.severity, p.path.name, p.message) for p in verify_jaffe(jaffe_root)
    ]


def test_cli_verify_jaffe_exit_code(jaffe_root, capsys):
    from attnlib.cli import main

    code = main(["data", "verify", "jaffe", "--root", str(jaffe_root)])
    out = capsys.readouterr()
    assert code == 1  # the fixture has an image without ratings
    assert "errors" in out.out and "ERROR" in out.err


def test_loader_finds_the_tiffs_and_the_readme_from_the_parent_or_the_child(unpacked, tmp_path):
    for root in (unpacked, unpacked / "jaffe"):
        ds = JAFFE(root, cache=None)
        assert (ds.root, ds.readme) == (unpacked / "jaffe", unpacked / README)
        assert dict(zip(ds.metadata["file"], ds.labels.tolist(), strict=True)) == {**IMAGES, CORRUPT: 1}
        assert ds[0]["img"].shape == (1, 256, 256)
    elsewhere = tmp_path / "notes" / "ratings.txt"
    elsewhere.parent.mkdir()
    (unpacked / README).rename(elsewhere)
    with pytest.raises(JAFFEFormatError, match="no README"):
        JAFFE(unpacked, cache=None)
    assert len(JAFFE(unpacked, readme=elsewhere, cache=None)) == 12


def test_cli_verify_jaffe_layouts(unpacked, tmp_path, capsys):
    from attnlib.cli import main

    def verify(root, *options):
        code = main(["data", "verify", "jaffe", "--root", str(root), *options])
        return code, capsys.readouterr()

    for root in (unpacked, unpacked / "jaffe"):
        code, out = verify(root)
        assert code == 0, out.err
        assert "WARNING" in out.out and "12 images, the release has 213" in out.out and not out.err
    elsewhere = tmp_path / "notes" / "ratings.txt"
    elsewhere.parent.mkdir()
    (unpacked / README).rename(elsewhere)
    code, out = verify(unpacked)
    assert code == 1 and "no README* file here or in the parent folder" in out.err
    assert verify(unpacked, "--readme", str(elsewhere))[0] == 0
    with pytest.raises(SystemExit, match="--readme applies to jaffe only, not idrid"):
        main(["data", "verify", "idrid", "--root", str(unpacked), "--readme", str(elsewhere)])
    (unpacked / "jaffe").rename(unpacked / "images")  # only the README and a folder of another name
    code, out = verify(unpacked, "--readme", str(elsewhere))
    assert code == 1
    assert f"ERROR   {unpacked}: no images named <SUBJ>.<POSE><n>.<idx>.tiff (the release has 213)" in out.err
    assert verify(unpacked / "images", "--readme", str(elsewhere))[0] == 0


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_verify_notes_the_images_it_did_not_decode(tmp_path, capsys):
    from attnlib.cli import main

    root = write_jaffe_sample(tmp_path / "jaffe", corrupt_image=True)  # otherwise clean: 12 images
    note = Problem("note", root, "12 images not decoded; run with --deep to check them")
    assert [p for p in verify_jaffe(root) if p.severity == "note"] == [note]
    assert all(p.severity != "note" for p in verify_jaffe(root, deep=True))
    assert main(["data", "verify", "jaffe", "--root", str(root)]) == 0
    out = capsys.readouterr()
    assert f"{note}\n" in out.out and "0 errors, 1 warnings" in out.out
    assert main(["data", "verify", "jaffe", "--root", str(root), "--deep"]) == 1
    out = capsys.readouterr()
    assert "not decoded" not in out.out and f"{CORRUPT}: unreadable TIFF" in out.err
