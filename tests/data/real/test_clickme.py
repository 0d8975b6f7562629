"""The ClickMe loaders (npz, raw float32 and JPEG TFRecords) on samples written in the real formats."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from tfrecord.example_pb2 import Example
from tfrecord.reader import tfrecord_iterator
from tfrecord.writer import TFRecordWriter
from torch.utils.data import DataLoader
from torchvision.transforms.v2.functional import gaussian_blur, resize

from attnlib.data.real.clickme import (
    ClickMe,
    ClickMeFormatError,
    TFRecordError,
    decode_example,
    encode_example,
    example_keys,
    index_tfrecord,
    iter_tfrecord,
    masked_crc32c,
    read_tfrecord,
    split_of,
    verify_clickme,
    write_tfrecord,
)
from attnlib.data.real.layout_samples import (
    CLICKME_FILES,
    CLICKME_IMAGES,
    clickme_arrays,
    write_clickme_sample,
)
from attnlib.data.real.manifest import load_manifest

FORMS = ("npz", "raw", "jpeg")


def _plain(root: Path, **kwargs) -> ClickMe:
    return ClickMe(root, image_size=None, blur=None, **kwargs)


def test_framing_matches_the_tfrecord_package(tmp_path):
    payloads = [b"", b"a", bytes(range(256)) * 3]
    ours = write_tfrecord(tmp_path / "ours.tfrecords", payloads)
    assert [bytes(r) for r in tfrecord_iterator(str(ours))] == payloads
    theirs = TFRecordWriter(str(tmp_path / "theirs.tfrecords"))
    for value in (1, 2):
        theirs.write({"label": (value, "int")})
    theirs.close()
    records = list(iter_tfrecord(tmp_path / "theirs.tfrecords"))
    again = write_tfrecord(tmp_path / "again.tfrecords", records)
    assert again.read_bytes() == (tmp_path / "theirs.tfrecords").read_bytes()
    assert masked_crc32c(b"") == int.from_bytes(TFRecordWriter.masked_crc(b""), "little")
    offsets = index_tfrecord(ours)
    assert offsets == [0, 16, 33] and read_tfrecord(ours, offsets[2], 2) == payloads[2]


@pytest.mark.parametrize("form", FORMS)
def test_items_round_trip(tmp_path, form):
    root = write_clickme_sample(tmp_path / form, form)
    ds = _plain(root)
    assert len(ds) == len(CLICKME_IMAGES) and ds.form == ("npz" if form == "npz" else "tfrecord")
    files = [rel for rel, indices in CLICKME_FILES[form].items() for _ in indices]
    assert ds.metadata["file"].tolist() == files
    assert ds.metadata["split"].tolist() == [split for split, _, _, _ in CLICKME_IMAGES]
    assert ds.label_names[:3] == ["0", "1", "2"] and len(ds.label_names) == 1000
    for i, (_, label, clicks, bbox) in enumerate(CLICKME_IMAGES):
        item, record = ds[i], ds.record(i)
        image, heatmap = clickme_arrays(i)
        assert item["idx"] == i and item["lab"] == label
        assert item["img"].shape == (3, 256, 256) and item["map"].shape == (1, 256, 256)
        assert item["img"].dtype == item["map"].dtype == torch.float32
        if form == "jpeg":
            assert item["click_count"] == -1 and record.bbox is None and record.encoding == "jpeg"
            assert np.abs(item["img"].numpy() - image.transpose(2, 0, 1)).mean() < 0.01
            np.testing.assert_allclose(item["map"][0].numpy(), heatmap, atol=0.02)
        else:
            assert item["click_count"] == clicks
            assert record.bbox == (tuple(map(float, bbox)) if form == "raw" else None)
            np.testing.assert_array_equal(item["img"].numpy(), image.transpose(2, 0, 1))
            np.testing.assert_array_equal(item["map"][0].numpy(), heatmap)
    expected_id = {"npz": "train/00000", "raw": "train-00000-of-00002#0", "jpeg": "train/train-0.tfrecords#0"}
    assert ds[0]["id"] == expected_id[form]
    val = _plain(root, split="val")
    assert len(val) == 2 and val[1]["lab"] == CLICKME_IMAGES[4][1]
    assert val.fingerprint != ds.fingerprint


def test_blur_and_resize_follow_torchvision(tmp_path):
    root = write_clickme_sample(tmp_path / "raw", "raw")
    heatmap = torch.from_numpy(clickme_arrays(0)[1])[None]
    blurred = ClickMe(root, image_size=None)[0]["map"]
    torch.testing.assert_close(blurred, gaussian_blur(heatmap, [49, 49], [7.7, 7.7]))
    assert not torch.equal(blurred, heatmap)
    item = ClickMe(root)[0]
    assert item["img"].shape == (3, 224, 224) and item["map"].shape == (1, 224, 224)
    torch.testing.assert_close(item["map"], resize(blurred, [224, 224], antialias=True))
    standardized = ClickMe(root, standardize=True)[0]["img"]
    torch.testing.assert_close(standardized[0], (item["img"][0] - 0.485) / 0.229)
    one_file = ClickMe(root / "val-00000-of-00001", blur=9, blur_sigma=2.0, image_size=None)
    assert len(one_file) == 2 and one_file.metadata["id"][0] == "val-00000-of-00001#0"
    expected = gaussian_blur(torch.from_numpy(clickme_arrays(3)[1])[None], [9, 9], [2.0, 2.0])
    torch.testing.assert_close(one_file[0]["map"], expected)


@pytest.mark.parametrize("form", ["raw", "jpeg"])
def test_truncated_file_keeps_its_intact_records(tmp_path, form, caplog):
    root = write_clickme_sample(tmp_path / form, form, truncated=True)
    path = root / next(iter(CLICKME_FILES[form]))
    records = iter_tfrecord(path)
    first = next(records)
    assert decode_example(first, "record 0").label == CLICKME_IMAGES[0][1]
    with pytest.raises(TFRecordError, match=r"record 1: truncated") as caught:
        next(records)
    offset = 8 + 4 + len(first) + 4  # record 1 starts after record 0's length, CRC, data and CRC
    assert (caught.value.record, caught.value.path, caught.value.offset) == (1, path, offset)
    with caplog.at_level(logging.WARNING, logger="attnlib.data.real.clickme"):
        ds = _plain(root)
    # the truncated record is dropped; the record before it, the other files and the split stay usable
    assert [ds[i]["lab"] for i in range(len(ds))] == [CLICKME_IMAGES[k][1] for k in (0, 2, 3, 4)]
    assert [(e.path, e.record, e.offset) for e in ds.problems] == [(path, 1, offset)]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"{path}: record 1: truncated: ") and f"at offset {offset}," in warning
    assert warning.endswith("keeping the 1 intact records before it")
    assert len(_plain(root, split="val")) == 2 and _plain(root, split="val").problems == []
    with pytest.raises(TFRecordError, match=rf"{path.name}: record 1: truncated"):
        _plain(root, strict=True)


def test_corrupt_crc_is_found_when_the_record_is_read(tmp_path):
    root = write_clickme_sample(tmp_path / "raw", "raw", corrupt_crc=True)
    ds = _plain(root)
    with pytest.raises(
        TFRecordError,
        match=r"val-00000-of-00001: record 0: corrupt data \(CRC mismatch\) of the record at offset 0",
    ):
        ds[3]
    assert ds[4]["lab"] == CLICKME_IMAGES[4][1]
    path = root / "val-00000-of-00001"
    raw = bytearray(path.read_bytes())
    raw[3] ^= 0xFF  # the first record's length
    path.write_bytes(bytes(raw))
    with pytest.raises(TFRecordError, match=r"val-00000-of-00001: record 0: corrupt header at offset 0"):
        index_tfrecord(path)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("key", ["image", "label"])
def test_missing_feature_is_named(tmp_path, form, key):
    root = write_clickme_sample(tmp_path / form, form, missing_feature=key)
    ds = _plain(root)
    where = {
        "npz": r"val/00003\.npz: no",
        "raw": r"val-00000-of-00001: record 0: missing features",
        "jpeg": r"val-0\.tfrecords: record 0: missing features",
    }[form]
    with pytest.raises(ClickMeFormatError, match=rf"{where} \['{key}'\]"):
        ds[3]


@pytest.mark.parametrize("form", FORMS)
def test_images_without_a_map_load_with_a_zero_map(tmp_path, form):
    root = write_clickme_sample(tmp_path / form, form, missing_feature="heatmap")  # image 3 has no map
    ds = ClickMe(root, image_size=64)
    record = ds.record(3)
    assert record.has_map is False and record.label == CLICKME_IMAGES[3][1]
    np.testing.assert_array_equal(record.heatmap, np.zeros((256, 256), np.float32))
    item = ds[3]
    assert item["has_map"] is False and item["lab"] == CLICKME_IMAGES[3][1]
    assert (
        item["map"].shape == (1, 64, 64)
        and item["map"].dtype == torch.float32
        and item["map"].abs().sum() == 0
    )
    assert item["img"].shape == (3, 64, 64) and item["img"].std() > 0
    batch = next(iter(DataLoader(ds, batch_size=5)))
    assert batch["has_map"].tolist() == [True, True, True, False, True]
    assert batch["map"].shape == (5, 1, 64, 64) and (batch["map"].flatten(1).sum(1) > 0).tolist() == [
        True,
        True,
        True,
        False,
        True,
    ]


def _gala_era(root: Path) -> Path:
    """GALA-era shards: training records with and without a map, validation records of image and label."""
    root.mkdir()

    def record(k: int, with_map: bool) -> bytes:
        image, heatmap = clickme_arrays(k)
        return encode_example(image, heatmap if with_map else None, CLICKME_IMAGES[k][1], click_count=3)

    write_tfrecord(root / "train-00000-of-00001", [record(0, True), record(1, False), record(2, True)])
    write_tfrecord(root / "val-00000-of-00001", [record(3, False), record(4, False)])
    return root


def test_gala_era_validation_records_without_maps_load(tmp_path):
    root = _gala_era(tmp_path / "gala")
    val = _plain(root, split="val")
    assert len(val) == 2 and [val[i]["has_map"] for i in range(2)] == [False, False]
    assert [val[i]["lab"] for i in range(2)] == [CLICKME_IMAGES[3][1], CLICKME_IMAGES[4][1]]
    np.testing.assert_array_equal(val[1]["img"].numpy(), clickme_arrays(4)[0].transpose(2, 0, 1))
    train = _plain(root, split="train")
    assert [train[i]["has_map"] for i in range(3)] == [True, False, True]
    np.testing.assert_array_equal(train[2]["map"][0].numpy(), clickme_arrays(2)[1])


def test_example_keys_walks_the_protobuf_without_reading_values(tmp_path):
    entry = b"\x12\x05\x1a\x03\x0a\x01\x03" + b"\x0a\x05label"  # value before key: int64_list [3], "label"
    by_hand = b"\x0a\x10\x0a\x0e" + entry  # Example.features (1) > Features.feature (1) > the map entry
    assert list(Example.FromString(by_hand).features.feature) == ["label"]
    image, heatmap = clickme_arrays(0)
    records = [
        encode_example(image, heatmap, 1, click_count=3, bbox=(0.5, 1, 2, 3)),
        by_hand,
        encode_example(image, None, 2),
        b"\x0a\xff",
    ]
    path = write_tfrecord(tmp_path / "keys.tfrecords", records)
    with path.open("rb") as f:
        offsets = index_tfrecord(path)
        assert [sorted(example_keys(f, offset)) for offset in offsets[:3]] == [
            ["bbox", "click_count", "heatmap", "image", "label"],
            ["label"],
            ["image", "label"],
        ]
        with pytest.raises(ValueError, match="runs past the end of its message"):
            example_keys(f, offsets[3])
    with _CountingFile(path) as f:
        example_keys(f, 0)
        assert f.bytes_read < 100 < len(records[0])  # the pixels (1 MiB) are seeked past, not read


class _CountingFile(io.FileIO):
    """An unbuffered file that counts the bytes read from it."""

    bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


IMAGE, HEATMAP = np.full((32, 32, 3), 0.5, np.float32), np.ones((32, 32), np.float32)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            encode_example(IMAGE, HEATMAP[:16], 3),
            r"heatmap has 2048 bytes: neither a JPEG nor 32 x 32 float32",
        ),
        (encode_example(IMAGE[..., :2], HEATMAP, 3), r"image has 8192 bytes: neither a JPEG nor S x S x 3"),
        (encode_example(IMAGE, np.full_like(HEATMAP, np.nan), 3), r"heatmap is all NaN"),
        (encode_example(IMAGE, HEATMAP - 2, 3), r"heatmap has negative values \(min -1\)"),
        (
            encode_example(IMAGE, HEATMAP, 3, bbox=(1, 2, 3)),
            r"bbox must be int64_list or float_list with 4 values, got int64_list \[1, 2, 3\]",
        ),
        (encode_example(IMAGE * 600, HEATMAP, 3), r"image values must lie in \[0, 1\] or \[0, 255\]"),
        (b"\x0a\xff", r"not a tf.train.Example"),
    ],
)
def test_bad_records_are_explained(record, message):
    with pytest.raises(ClickMeFormatError, match=rf"f\.tfrecords: record 7: {message}"):
        decode_example(record, "f.tfrecords: record 7")


def test_bad_npz_content_and_labels(tmp_path):
    root = write_clickme_sample(tmp_path / "npz", "npz")
    path = root / "val" / "00004.npz"
    image, heatmap = clickme_arrays(4)
    for arrays, message in [
        ({"label": np.float32(3.0)}, r"label must be one integer, got dtype float32"),
        (
            {"heatmap": heatmap[:100]},
            r"heatmap must be 256 x 256 \(the image's size\), got shape \(100, 256\)",
        ),
        ({"image": image[..., 0]}, r"image must be H x W x 3, got shape \(256, 256\)"),
    ]:
        np.savez(path, **{"image": image, "heatmap": heatmap, "label": np.int64(3), **arrays})
        with pytest.raises(ClickMeFormatError, match=rf"00004\.npz: {message}"):
            _plain(root)[4]
    names = write_clickme_sample(tmp_path / "jpeg", "jpeg") / "names.txt"
    names.write_text("tench\ngoldfish\nwhite shark\n")
    ds = _plain(names.parent, label_names_file=names)
    assert ds.label_names == ["tench", "goldfish", "white shark"] and ds[0]["lab"] == 1
    with pytest.raises(
        ClickMeFormatError, match=r"train-0\.tfrecords: record 1: label 207 is not in \[0, 3\)"
    ):
        ds[1]


def test_folders_without_or_with_both_forms_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClickMeFormatError, match=r"empty: no \.npz or TFRecord files"):
        ClickMe(tmp_path / "empty")
    root = write_clickme_sample(tmp_path / "both", "raw")
    np.savez(root / "extra.npz", image=IMAGE)
    with pytest.raises(ClickMeFormatError, match=r"both: holds both \.npz \(1\) and TFRecord \(3\) files"):
        ClickMe(root)
    with pytest.raises(ClickMeFormatError, match=r"no records of split 'test'"):
        ClickMe(write_clickme_sample(tmp_path / "jpeg", "jpeg"), split="test")
    assert [
        split_of(rel) for rel in ("train/train-3.tfrecords", "clickme_val.tfrecords", "x/trains.npz")
    ] == ["train", "val", ""]


def test_verify_counts_formats_and_first_bad_records(tmp_path):
    counts, problems = verify_clickme(write_clickme_sample(tmp_path / "jpeg", "jpeg"))
    assert counts == {
        "files": 3,
        "records": 5,
        "train_records": 3,
        "val_records": 2,
        "test_records": 0,
        "records_with_map": 5,
        "records_without_map": 0,
        "npz_files": 0,
        "raw_float32_files": 0,
        "jpeg_files": 3,
    }
    assert [(p.severity, p.message) for p in problems] == [
        ("warning", "5 records, the release has 196499 images"),
        ("note", "2 records not decoded; run with --deep to check them"),
    ]
    root = write_clickme_sample(tmp_path / "raw", "raw", truncated=True, missing_feature="label")
    counts, problems = verify_clickme(root)
    assert counts["records"] == 4 and counts["raw_float32_files"] == 2
    assert (counts["records_with_map"], counts["records_without_map"]) == (
        3,
        0,
    )  # the label-less one: neither
    assert [(p.severity, p.path.name) for p in problems] == [
        ("error", "train-00000-of-00002"),
        ("error", "val-00000-of-00001"),
        ("warning", "raw"),
        ("note", "raw"),
    ]
    truncated, missing, count, _ = (p.message for p in problems)
    assert truncated.startswith("record 1: truncated: ") and truncated.endswith(
        "(intact records before it: 1)"
    )
    assert (
        missing == "record 0: missing features ['label'] (found ['bbox', 'click_count', 'heatmap', 'image'])"
    )
    assert count == "4 records, the release has 196499 images"
    corrupt = write_clickme_sample(tmp_path / "corrupt", "jpeg", corrupt_crc=True)
    counts, problems = verify_clickme(corrupt, deep=True)
    assert counts["records"] == 3 and problems[0].message.startswith("record 0: corrupt data (CRC mismatch)")
    assert verify_clickme(tmp_path / "nowhere")[1][0].message == "not found: nothing else can be checked"


def test_verify_counts_maps_over_every_record(tmp_path):
    root = _gala_era(tmp_path / "gala")
    for deep in (False, True):
        counts, problems = verify_clickme(root, deep=deep)
        assert {k: counts[k] for k in ("records", "records_with_map", "records_without_map")} == {
            "records": 5,
            "records_with_map": 2,
            "records_without_map": 3,
        }
        # map-less training records are worth a warning; map-less validation records are normal
        assert [(p.severity, p.path.name, p.message) for p in problems[:1]] == [
            (
                "warning",
                "train-00000-of-00001",
                "1 of 3 records have no heatmap (split train): map losses and human alignment skip them",
            )
        ]
        assert [p.severity for p in problems[1:]] == ["warning"] + ([] if deep else ["note"])
    npz = write_clickme_sample(tmp_path / "npz", "npz", missing_feature="heatmap")
    counts, problems = verify_clickme(npz)
    assert (counts["records_with_map"], counts["records_without_map"]) == (4, 1)
    assert problems[-1].message == "5 npz files not decoded; run with --deep to check them"


def test_verify_says_what_it_did_not_decode(tmp_path):
    root = write_clickme_sample(tmp_path / "raw", "raw")
    path = root / "train-00000-of-00002"
    first, second = iter_tfrecord(path)
    offset = 16 + len(first)  # record 1's header
    raw = bytearray(path.read_bytes())
    raw[offset + 12 + len(second) // 2] ^= 0xFF  # a pixel byte of record 1: only its data CRC notices
    path.write_bytes(bytes(raw))
    _, quick = verify_clickme(root)
    assert [(p.severity, p.message) for p in quick] == [
        ("warning", "5 records, the release has 196499 images"),
        ("note", "2 records not decoded; run with --deep to check them"),
    ]
    _, deep = verify_clickme(root, deep=True)
    message = (
        f"record 1: corrupt data (CRC mismatch) of the record at offset {offset} "
        "(intact records before it: 1)"
    )
    assert [(p.severity, p.path.name, p.message) for p in deep[:1]] == [("error", path.name, message)]
    assert [p.severity for p in deep[1:]] == ["warning"]


def test_manifest_matches_the_loader():
    manifest = load_manifest("clickme")
    assert manifest["expected_counts"] == {"images": 196499, "maps": 472946}
    assert list(manifest["forms"]["tfrecord_raw"]["features"]) == [
        "image",
        "heatmap",
        "label",
        "click_count",
        "bbox",
    ]


def test_cli_verify_clickme_prints_counts(tmp_path, capsys):
    from attnlib.cli import main

    root = write_clickme_sample(tmp_path / "npz", "npz")
    assert main(["data", "verify", "clickme", "--root", str(root), "--deep"]) == 0
    out = capsys.readouterr().out
    assert "files: 5\nrecords: 5\ntrain_records: 3\nval_records: 2\n" in out and "npz_files: 5\n" in out
    assert out.rstrip().endswith("0 errors, 1 warnings")
    (root / "val" / "00003.npz").write_bytes(b"PK\x03\x04 not a zip")
    assert main(["data", "verify", "clickme", "--root", str(root)]) == 1
    assert "00003.npz: unreadable .npz" in capsys.readouterr().err
