"""The ABN paper's IDRiD task (lesion vs healthy grading images) on a hand-made copy of the real layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnlib.data.cache import ArrayCache
from attnlib.data.real.idrid import GRADING_DIR, IDRiDFormatError, IDRiDSettings, crop_bounds
from attnlib.data.real.idrid_lesions import (
    SEGMENTATION_DIR,
    IDRiDLesions,
    lesion_file,
    read_mask,
    segmentation_image_dir,
    verify_idrid_lesions,
)
from attnlib.data.real.layout_samples import (
    IDRID_LESION_COLOURS,
    IDRID_RGB_MASK,
    IDRID_SEGMENTATION,
    IDRID_SIZE,
    write_idrid_segmentation_sample,
)
from attnlib.data.real.manifest import Problem

W, H = IDRID_SIZE
S = 171  # half the cropped width (342 px), so the crop-and-resize maps column x to (x - 26) / 2
DISEASED = ["segmentation/train/IDRiD_01", "segmentation/train/IDRiD_02", "segmentation/test/IDRiD_55",
            "segmentation/test/IDRiD_56"]
HEALTHY = ["grading/train/IDRiD_001", "grading/test/IDRiD_002"]  # grade 0 and risk 0 in the grading sample


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_idrid_segmentation_sample(tmp_path / "IDRiD")


def _plain(root: Path, **changes) -> IDRiDLesions:
    with pytest.warns(UserWarning, match="the paper has"):
        settings = IDRiDSettings(standardize=False, **changes)
        return IDRiDLesions(root, image_size=S, settings=settings, cache=None)


def test_classes_from_lesion_presence_and_healthy_grades(root):
    with pytest.warns(UserWarning, match=r"4 diseased and 2 healthy images \(asked for 120 healthy\)"):
        ds = IDRiDLesions(root, image_size=S, cache=None)
    assert ds.metadata["id"].tolist() == DISEASED + HEALTHY
    assert ds.metadata["lesions"].tolist() == ["HE+EX+SE", "EX", "SE", "HE", "", ""]
    assert ds.labels.tolist() == [1, 1, 1, 1, 0, 0]
    assert ds.label_names == ["healthy", "diseased"] and ds.class_counts == {"healthy": 2, "diseased": 4}
    item = ds[4]
    assert item["id"] == HEALTHY[0] and item["lab"] == 0 and tuple(item["img"].shape) == (3, S, S)
    assert len(ds.fingerprint) == 12
    # IDRiD_03 shows microaneurysms only and its HE mask is all zero: not diseased
    assert read_mask(lesion_file(root, "train", "IDRiD_03", "HE")).sum() == 0


def test_n_healthy_takes_training_before_testing(root):
    with pytest.warns(UserWarning):
        ds = IDRiDLesions(root, image_size=32, n_healthy=1, cache=None)
    assert ds.metadata.loc[ds.labels == 0, "id"].tolist() == [HEALTHY[0]]


def test_empty_class_is_an_error(root):
    with pytest.raises(IDRiDFormatError, match="no healthy images found"):
        IDRiDLesions(root, image_size=32, n_healthy=0, cache=None)
    for split in ("train", "test"):
        for path in segmentation_image_dir(root, split).iterdir():
            path.unlink()
    with pytest.raises(IDRiDFormatError, match="no diseased images found"):
        IDRiDLesions(root, image_size=32, cache=None)


def test_masks_read_76_and_multichannel(root):
    split, image_id, lesion = IDRID_RGB_MASK
    path = lesion_file(root, split, image_id, lesion)
    with Image.open(path) as im:
        assert im.mode == "RGB"
    x0, y0, x1, y1 = IDRID_SEGMENTATION[split][image_id][1][lesion]
    mask = read_mask(path)
    assert mask.shape == (H, W) and mask.sum() == (x1 - x0 + 1) * (y1 - y0 + 1)
    with Image.open(lesion_file(root, "train", "IDRiD_01", "HE")) as im:
        assert set(np.unique(np.asarray(im)).tolist()) == {0, 76}


def _write_mask(path: Path, lesion: np.ndarray, mode: str) -> None:
    """``lesion`` (bool H x W) as a TIFF mask of PIL ``mode``: background black, alpha (if any) opaque."""
    value = lesion.astype(np.uint8) * 76
    zero, opaque = np.zeros_like(value), np.full_like(value, 255)
    if mode == "P":  # palette index 0 is the lesion's red: a reader of indices sees the background as lesion
        im = Image.fromarray(np.where(lesion, 0, 1).astype(np.uint8))
        im.putpalette([255, 0, 0, 0, 0, 0])
    else:
        im = Image.fromarray({
            "1": lesion, "L": value, "LA": np.stack([value, opaque], axis=-1),
            "RGB": np.stack([zero, zero, value], axis=-1),
            "RGBA": np.stack([value, zero, zero, opaque], axis=-1),
            "I;16": lesion.astype(np.uint16) * 1000, "I": lesion.astype(np.int32) * 76,
            "F": lesion.astype(np.float32) / 2,
        }[mode])
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format="TIFF")
    with Image.open(path) as written:
        assert written.mode == mode


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "F"])
def test_every_mask_mode_reads_exactly_the_lesion_pixels(tmp_path, mode):
    lesion = np.zeros((H, W), dtype=bool)
    lesion[100:103, 200:205] = True  # 15 pixels
    path = lesion_file(tmp_path / "IDRiD", "train", "IDRiD_01", "HE")
    _write_mask(path, lesion, mode)
    mask = read_mask(path)
    assert mask.dtype == bool and mask.sum() == 15
    np.testing.assert_array_equal(mask, lesion)


def test_unsupported_mask_mode_is_named(tmp_path):
    path = lesion_file(tmp_path / "IDRiD", "train", "IDRiD_01", "HE")
    path.parent.mkdir(parents=True)
    Image.new("CMYK", (W, H)).save(path, format="TIFF")
    with pytest.raises(IDRiDFormatError, match=r"IDRiD_01_HE\.tif: unsupported mask mode 'CMYK'"):
        read_mask(path)


def test_alpha_channel_is_no_lesion_for_the_verifier_and_the_loader(root):
    # IDRiD_03's HE mask is all zero: as RGBA with an opaque alpha it must stay empty
    _write_mask(lesion_file(root, "train", "IDRiD_03", "HE"), np.zeros((H, W), dtype=bool), "RGBA")
    counts = verify_idrid_lesions(root)[0]
    assert (counts["with_HE"], counts["diseased"], counts["without_lesions"]) == (2, 4, 1)
    assert _plain(root).metadata["id"].tolist() == DISEASED + HEALTHY


def test_lesion_union_is_cropped_and_resized_like_the_image(root):
    ds = _plain(root, flip="none")
    assert crop_bounds(W) == (26, 368) and S == (368 - 26) // 2
    union = ds.lesion_mask(0)
    assert union.shape == (S, S) and union.dtype == bool
    expected = np.zeros((S, S), dtype=bool)
    for x0, y0, x1, y1 in IDRID_SEGMENTATION["train"]["IDRiD_01"][1].values():
        # PIL's area (BOX) resize gives an output pixel the input pixels whose centres fall in its box
        rows = slice(int((y0 + 0.5) * S / H), int((y1 + 0.5) * S / H) + 1)
        expected[rows, (x0 - 26) // 2:(x1 - 26) // 2 + 1] = True
    np.testing.assert_array_equal(union, expected)
    # the RGB mask of IDRiD_02 counts as well
    x0, _, x1, _ = IDRID_SEGMENTATION["train"]["IDRiD_02"][1]["EX"]
    cols = np.flatnonzero(ds.lesion_mask(1).any(axis=0))
    assert cols.tolist() == list(range((x0 - 26) // 2, (x1 - 26) // 2 + 1))
    assert not ds.lesion_mask(4).any() and ds.lesion_mask(4).shape == (S, S)


def test_flip_moves_the_lesion_with_the_image(root):
    flipped, kept = _plain(root), _plain(root, flip="none")
    assert [flipped.flips(i) for i in range(6)] == [True, False, False, True, True, True]
    np.testing.assert_array_equal(flipped.lesion_mask(0), kept.lesion_mask(0)[:, ::-1])
    np.testing.assert_array_equal(flipped.image(0), kept.image(0)[:, :, ::-1])
    # IDRiD_01 (a right eye) has a haemorrhage on the image's left (x 90-120, y 120-150): after the flip
    # it lies on the right, where the flipped image shows the haemorrhage's dark red
    row, col = int(135 * S / H), (105 - 26) // 2
    mask, img = flipped.lesion_mask(0), flipped.image(0)
    assert mask[row, S - 1 - col] and not mask[row, col]
    haemorrhage = np.array(IDRID_LESION_COLOURS["HE"]) / 255
    np.testing.assert_allclose(img[:, row, S - 1 - col], haemorrhage, atol=0.04)
    assert img[0, row, col] > 0.5  # the fundus' orange where the haemorrhage was before the flip


def test_laterality_without_optic_disc_mask_falls_back_to_the_image(root):
    lesion_file(root, "test", "IDRiD_56", "OD").unlink()
    assert _plain(root).flips(3)  # its disc is drawn on the right


def test_cache_gives_the_same_arrays(root, tmp_path):
    cache = ArrayCache(tmp_path / "cache")
    with pytest.warns(UserWarning):
        cached = IDRiDLesions(root, image_size=S, settings=IDRiDSettings(standardize=False), cache=cache)
    plain = _plain(root)
    for _ in range(2):
        np.testing.assert_array_equal(cached.lesion_mask(0), plain.lesion_mask(0))
        np.testing.assert_array_equal(cached.image(3), plain.image(3))
    assert cache.hits > 0


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_verify_counts_and_mask_problems(root):
    counts, problems = verify_idrid_lesions(root, deep=True)
    assert counts == {
        "segmentation_train_images": 3, "segmentation_test_images": 2,
        "with_HE": 2, "with_EX": 2, "with_SE": 2,
        "diseased": 4, "without_lesions": 1, "healthy_candidates_train": 1, "healthy_candidates_test": 1,
    }
    assert all(p.severity == "warning" for p in problems)
    assert {p.message for p in problems} >= {
        "3 images, the release has 54",
        "4 diseased images, the paper uses 81",
        "2 healthy images, the paper uses 120",
    }
    Image.new("L", (10, 10), 76).save(lesion_file(root, "test", "IDRiD_55", "SE"), format="TIFF")
    lesion_file(root, "train", "IDRiD_02", "EX").write_bytes(b"II*\x00broken")
    problems = verify_idrid_lesions(root)[1]
    errors = {(p.path.name, p.message.split(" (")[0]) for p in problems if p.severity == "error"}
    assert errors == {
        ("IDRiD_55_SE.tif", f"mask is 10x10, its image {H}x{W}"), ("IDRiD_02_EX.tif", "unreadable mask"),
    }


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_verify_notes_the_images_it_did_not_decode(tmp_path):
    root = write_idrid_segmentation_sample(tmp_path / "IDRiD", corrupt_image=True)
    message = "images not decoded; run with --deep to check them"
    notes = [p for p in verify_idrid_lesions(root)[1] if p.severity == "note"]
    assert notes == [Problem("note", root / SEGMENTATION_DIR, f"5 {message}"),
                     Problem("note", root / GRADING_DIR, f"9 {message}")]
    problems = verify_idrid_lesions(root, deep=True)[1]
    assert all(p.severity != "note" for p in problems)
    errors = [p for p in problems if p.severity == "error"]  # --deep decodes the grading images too
    assert [p.path.name for p in errors] == ["IDRiD_003.jpg"] and errors[0].message.startswith("unreadable")


def test_cli_verify_idrid_lesions(root, capsys):
    from attnlib.cli import main

    code = main(["data", "verify", "idrid-lesions", "--root", str(root)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "diseased: 4\n" in out.out and "with_HE: 2\n" in out.out and "0 errors" in out.out
