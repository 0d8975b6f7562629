"""The CUB-200-2010 loader and bubbles CSV on a hand-made copy of the real layout, with known content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attnlib.data.maps.sources import bubble_map
from attnlib.data.real.cub import (
    CUB200,
    BBox,
    CUBFormatError,
    check_bubbles,
    class_file,
    list_file,
    read_bubbles,
    read_list,
    verify_cub,
)
from attnlib.data.real.layout_samples import (
    CUB_BUBBLE_OUTSIDE,
    CUB_BUBBLE_UNKNOWN,
    CUB_BUBBLES,
    CUB_CLASSES,
    CUB_HIDDEN,
    CUB_IMAGES,
    cub_segmentation,
    write_cub_bubbles,
    write_cub_sample,
)
from attnlib.data.real.manifest import load_manifest

TRAIN = [rel for rel, (split, _, _) in CUB_IMAGES.items() if split == "train"]
TEST = [rel for rel, (split, _, _) in CUB_IMAGES.items() if split == "test"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_cub_sample(tmp_path / "CUB_200_2010")


def _plain(root: Path, split: str = "train", size: int = 32) -> CUB200:
    return CUB200(root, split, image_size=size, standardize=False, cache=None)


def test_lists_skip_hidden_entries_and_labels_come_from_folder_numbers(root):
    assert CUB_HIDDEN in list_file(root, "train").read_text()
    assert read_list(list_file(root, "train")) == TRAIN
    train, test = _plain(root), _plain(root, "test")
    assert train.metadata["id"].tolist() == TRAIN and test.metadata["id"].tolist() == TEST
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2] and test.labels.tolist() == [0, 1, 2]
    assert train.label_names == ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
    assert train.class_counts == {"Black_footed_Albatross": 2, "Laysan_Albatross": 2, "Sooty_Albatross": 2}
    item = test[1]
    assert item["id"] == TEST[1] and item["lab"] == 1 and item["idx"] == 1


def test_images_are_resized_and_standardised(root):
    plain = _plain(root, size=48)
    img = plain[2]["img"].numpy()
    assert img.shape == (3, 48, 48) and img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
    # the sky is (120, 170, 230): the top-left corner of a Laysan image, outside the bird
    np.testing.assert_allclose(img[:, 0, 0], np.array([120, 170, 230]) / 255, atol=0.03)
    std = CUB200(root, "train", image_size=48, cache=None)[2]["img"].numpy()
    np.testing.assert_allclose(std[1], (img[1] - 0.456) / 0.224, atol=1e-5)
    assert plain.fingerprint != _plain(root, size=32).fingerprint


def test_annotation_original_size_and_segmentation(root):
    ds = _plain(root, size=40)
    for i, rel in enumerate(TRAIN):
        _, (width, height), box = CUB_IMAGES[rel]
        note = ds.annotation(i)
        assert ds.original_size(i) == (height, width)
        assert note.seg.shape == (height, width) and note.seg.dtype == np.uint8
        assert note.bbox == BBox(*map(float, box))
        rows, cols = np.nonzero(note.seg)
        assert (cols.min(), rows.min(), cols.max(), rows.max()) == box
    mask = ds.segmentation(0)
    assert mask.shape == (40, 40) and mask.dtype == bool
    # the bird's box of image 0 (120 x 90 px) is columns 20-90, rows 15-70: scaled to 40 px
    rows, cols = np.nonzero(mask)
    assert abs(cols.min() - 20 * 40 / 120) <= 1 and abs(cols.max() - 90 * 40 / 120) <= 1
    assert abs(rows.min() - 15 * 40 / 90) <= 1 and abs(rows.max() - 70 * 40 / 90) <= 1


def test_missing_annotation_and_corrupt_image_name_the_file(tmp_path):
    root = write_cub_sample(tmp_path / "cub", corrupt_image=True, missing_annotation=True)
    test = _plain(root, "test")
    stem = r"Black_footed_Albatross_0003_796136"
    with pytest.raises(CUBFormatError, match=rf"{stem}\.mat: annotation not found"):
        test.annotation(0)
    with pytest.raises(CUBFormatError, match=rf"{stem}\.jpg: unreadable image"):
        test[0]


def test_bad_lists_and_class_folders_are_reported(root):
    list_file(root, "test").write_text("Laysan_Albatross_0003_1033.jpg\n")
    with pytest.raises(CUBFormatError, match=r"test\.txt: line 1: .* is not a path like"):
        _plain(root, "test")
    list_file(root, "test").write_text("004.Groove_billed_Ani/Groove_billed_Ani_0001_1711.jpg\n")
    unknown = r"test\.txt: classes \['004\.Groove_billed_Ani'\]"
    with pytest.raises(CUBFormatError, match=rf"{unknown} are not in .*lists/classes\.txt"):
        _plain(root, "test")
    class_file(root).unlink()  # without the class list, the class folders are the classes
    with pytest.raises(CUBFormatError, match=rf"{unknown} have no folder in images/"):
        _plain(root, "test")
    list_file(root, "train").unlink()
    with pytest.raises(CUBFormatError, match=r"train\.txt: split list not found"):
        _plain(root)


def test_bubbles_round_trip_and_quirks(tmp_path):
    table = read_bubbles(write_cub_bubbles(tmp_path / "bubbles.csv"))
    assert list(table.columns) == ["image", "worker", "x", "y", "radius"]
    assert list(table.itertuples(index=False, name=None)) == CUB_BUBBLES
    assert table.index.tolist() == list(range(2, len(CUB_BUBBLES) + 2))  # CSV lines, header = 1
    quirky = tmp_path / "quirky.csv"
    quirky.write_text(" image ,worker , x,y ,radius ,\n"
                      f"{CUB_BUBBLES[0][0]}, w1 , 12.5, 7 ,3,\n,,,,,\n", encoding="utf-8-sig")
    table = read_bubbles(quirky)
    assert list(table.itertuples(index=False, name=None)) == [(CUB_BUBBLES[0][0], "w1", 12.5, 7.0, 3.0)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image,worker,x,y\na.jpg,w,1,2\n", r"missing columns \['radius'\]"),
        ("image,worker,x,y,radius\na/b.jpg,w,1,two,3\n", r"non-numeric 'y' on lines \[2\]"),
        ("image,worker,x,y,radius\na/b.jpg,w,1,2,3\na/b.jpg,w,1,2,0\n", r"radius must be > 0; lines \[3\]"),
    ],
)
def test_bad_bubble_csv_names_the_file(tmp_path, text, message):
    path = tmp_path / "bad_bubbles.csv"
    path.write_text(text)
    with pytest.raises(CUBFormatError, match=rf"bad_bubbles\.csv: {message}"):
        read_bubbles(path)


def test_unknown_image_and_outside_centre_name_csv_line_and_image(root, tmp_path):
    path = write_cub_bubbles(tmp_path / "bubbles.csv", unknown_image=True, outside_centre=True)
    sets = [_plain(root), _plain(root, "test")]
    problems = check_bubbles(read_bubbles(path), sets, path)
    n = len(CUB_BUBBLES)
    assert [(p.severity, p.path, p.message) for p in problems] == [
        ("error", path, f"line {n + 2}: image {CUB_BUBBLE_UNKNOWN[0]!r} is in no split list"),
        ("error", path,
         f"line {n + 3}: centre (x=131.5, y=20) lies outside {CUB_BUBBLE_OUTSIDE[0]} (128 x 96 px, W x H)"),
    ]
    assert check_bubbles(read_bubbles(write_cub_bubbles(tmp_path / "clean.csv")), sets, path) == []


def test_bubbles_feed_the_density_map_at_their_original_size(root, tmp_path):
    ds = _plain(root)
    table = read_bubbles(write_cub_bubbles(tmp_path / "bubbles.csv"))
    rows = table[table["image"] == TRAIN[0]]
    density = bubble_map(rows, ds.original_size(0))
    (_, _, box) = CUB_IMAGES[TRAIN[0]]
    peak = np.unravel_index(int(density.argmax()), density.shape)
    assert density.shape == (90, 120) and density.max() == pytest.approx(1.0)
    assert box[1] <= peak[0] <= box[3] and box[0] <= peak[1] <= box[2]
    assert cub_segmentation((120, 90), box)[peak] == 1


def test_verify_counts_and_problems(root, tmp_path):
    (root / "annotations-mat" / TEST[2]).with_suffix(".mat").unlink()
    bubbles = write_cub_bubbles(tmp_path / "bubbles.csv", unknown_image=True, outside_centre=True)
    counts, problems = verify_cub(root, bubbles, deep=True)
    # the unknown image's bubble counts among the rows only: 6 training images with 4 bubbles, one with 5
    assert counts == {
        "train_images": 6, "test_images": 3, "classes": 3, "hidden_list_entries_skipped": 1,
        "annotations_present": 8, "annotations_missing": 1, "bubbles": len(CUB_BUBBLES) + 2,
        "images_with_bubbles": 6, "train_images_without_bubbles": 0, "test_images_without_bubbles": 3,
        "bubbles_per_image_min": 4, "bubbles_per_image_mean": 4.17, "bubbles_per_image_max": 5,
    }
    found = {(p.severity, p.path.name, p.message) for p in problems}
    n = len(CUB_BUBBLES)
    assert found == {
        ("warning", "train.txt", "6 images, the release has 3000"),
        ("warning", "test.txt", "3 images, the release has 3033"),
        ("warning", "classes.txt", "3 classes, the release has 200"),
        ("warning", "Sooty_Albatross_0003_796339.mat", "annotation not found"),
        ("error", "bubbles.csv", f"line {n + 2}: image {CUB_BUBBLE_UNKNOWN[0]!r} is in no split list"),
        ("error", "bubbles.csv",
         f"line {n + 3}: centre (x=131.5, y=20) lies outside {CUB_BUBBLE_OUTSIDE[0]} (128 x 96 px, W x H)"),
        ("warning", "bubbles.csv", "3 test images have no bubbles"),
    }
    message = verify_cub(root / "missing")[1][0].message
    assert message.endswith("image folder not found: nothing else can be checked")


def test_verify_bubbles_of_unknown_images_only_and_images_without_bubbles_in_both_splits(root, tmp_path):
    path = tmp_path / "bubbles.csv"
    path.write_text("image,worker,x,y,radius\n" + ",".join(map(str, CUB_BUBBLE_UNKNOWN)) + "\n")
    counts, problems = verify_cub(root, path, deep=True)
    assert {k: v for k, v in counts.items() if "bubble" in k} == {
        "bubbles": 1, "images_with_bubbles": 0, "train_images_without_bubbles": 6,
        "test_images_without_bubbles": 3,
    }
    assert [(p.severity, p.message) for p in problems if p.path == path] == [
        ("error", f"line 2: image {CUB_BUBBLE_UNKNOWN[0]!r} is in no split list"),
        ("warning", "6 training images have no bubbles"),
        ("warning", "3 test images have no bubbles"),
    ]


def test_verify_without_deep_notes_what_it_did_not_decode(tmp_path):
    root = write_cub_sample(tmp_path / "cub", corrupt_image=True, missing_annotation=True)
    quick = verify_cub(root)[1]
    assert [p for p in quick if p.severity == "error"] == []  # the corrupt JPEG is not read
    assert [(p.severity, p.path, p.message) for p in quick if p.severity == "note"] == [
        ("note", root, "9 images not decoded; run with --deep to check them"),
        ("note", root, "8 annotations not decoded; run with --deep to check them"),
    ]
    deep = verify_cub(root, deep=True)[1]
    assert [(p.path.name, p.message.split(" (")[0]) for p in deep if p.severity == "error"] == [
        (Path(TEST[0]).name, "unreadable image")
    ]
    assert not [p for p in deep if p.severity == "note"]


def _drop_class(root: Path, folder: str) -> None:
    """Remove a class's folders and list lines, as a copy without that class would be."""
    for path in (root / "images" / folder, root / "annotations-mat" / folder):
        for file in path.iterdir():
            file.unlink()
        path.rmdir()
    for split in ("train", "test"):
        lines = list_file(root, split).read_text().splitlines()
        kept = [line for line in lines if not line.startswith(folder)]
        list_file(root, split).write_text("".join(f"{line}\n" for line in kept))


def test_classes_come_from_classes_txt_and_a_class_without_images_needs_no_folder(root):
    assert class_file(root).read_text().splitlines() == list(CUB_CLASSES)
    _drop_class(root, CUB_CLASSES[1])
    with class_file(root).open("a") as f:
        f.write("004.Groove_billed_Ani\n")  # a class with neither folder nor images
    train, test = _plain(root), _plain(root, "test")
    assert train.label_names == ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross",
                                 "Groove_billed_Ani"]
    assert train.labels.tolist() == [0, 0, 2, 2] and test.labels.tolist() == [0, 2]
    assert test.class_counts == {"Black_footed_Albatross": 1, "Laysan_Albatross": 0, "Sooty_Albatross": 1,
                                 "Groove_billed_Ani": 0}
    counts, problems = verify_cub(root, deep=True)
    assert counts["classes"] == 4 and counts["train_images"] == 4 and counts["test_images"] == 2
    assert not [p for p in problems if p.severity == "error"]
    class_file(root).unlink()  # the fallback, the class folders, must run 001 ... K
    with pytest.raises(CUBFormatError, match=r"class folders must be numbered 001 \.\.\. K; missing \[2\]"):
        _plain(root)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("002.Laysan_Albatross\n", r"line 1: class 002 where 001 is due"),
        ("001.Black_footed_Albatross\n\nLaysan\n", r"line 3: 'Laysan' is not NNN\.Class_Name"),
    ],
)
def test_bad_classes_txt_names_the_line(root, text, message):
    class_file(root).write_text(text)
    with pytest.raises(CUBFormatError, match=rf"classes\.txt: {message}"):
        _plain(root)


def test_manifest_matches_the_loader():
    manifest = load_manifest("cub200-2010")
    expected = manifest["expected_counts"]
    assert expected["train"] + expected["test"] == expected["images"]
    assert list(manifest["bubbles"]["columns"]) == ["image", "worker", "x", "y", "radius"]


def test_cli_verify_cub_prints_counts(root, tmp_path, capsys):
    from attnlib.cli import main

    bubbles = write_cub_bubbles(tmp_path / "bubbles.csv")
    code = main(["data", "verify", "cub", "--root", str(root), "--bubbles", str(bubbles)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "train_images: 6\ntest_images: 3\nclasses: 3\n" in out.out
    assert f"bubbles: {len(CUB_BUBBLES)}\n" in out.out and "0 errors, 4 warnings" in out.out
    assert main(["data", "verify", "cub", "--root", str(root), "--bubbles", str(write_cub_bubbles(
        tmp_path / "bad.csv", unknown_image=True))]) == 1
