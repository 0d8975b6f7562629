"""The synthetic structured set: determinism, layout, evidence locality, cue, atomicity, loader, map AUC."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression

from attnlib.data.synthetic import structured as ss
from attnlib.data.synthetic.structured import (
    StructuredConfig,
    StructuredDataset,
    StructuredFormatError,
    generate_structured,
    map_region_auc,
    region_box,
)

SMALL = StructuredConfig(n_images=60)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _pixels(root, image_id):
    return np.asarray(Image.open(root / "images" / f"{image_id}.png")).astype(int)


@pytest.fixture(scope="module")
def default_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("structured") / "default"
    return generate_structured(out, StructuredConfig(), progress=False)


@pytest.fixture(scope="module")
def cue_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("cue") / "cue"
    return generate_structured(out, StructuredConfig(cue=True), progress=False)


def test_config_round_trip_and_validation():
    config = StructuredConfig(split_fractions=[0.7, 0.3], cue=True)
    assert config.split_fractions == (0.7, 0.3)
    assert StructuredConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown StructuredConfig keys"):
        StructuredConfig.from_dict({"n_image": 3})
    with pytest.raises(ValueError, match="region_size") as err:
        StructuredConfig(region_size=40, split_fractions=(0.8, 0.1, 0.1))
    assert "split_fractions" in str(err.value)
    for bad in ({"channels": 2}, {"evidence_strength": -1}, {"cue_correlation_train": 1.5}, {"n_images": 5}):
        with pytest.raises(ValueError, match="invalid StructuredConfig"):
            StructuredConfig(**bad)


def test_deterministic_layout_and_columns(tmp_path):
    a = generate_structured(tmp_path / "a", SMALL, progress=False)
    b = generate_structured(tmp_path / "b", SMALL, progress=False)
    assert _files(a) == _files(b)
    files = _files(a)
    assert {"labels.csv", "region_mask.png", "synthetic_config.json"} <= set(files)
    assert sum(name.startswith("images/") for name in files) == 60
    table = pd.read_csv(a / "labels.csv", dtype={"id": str})
    assert list(table.columns) == ["id", "label", "split", "cue"]
    assert all((a / "images" / f"{i}.png").is_file() for i in table["id"])
    saved = json.loads((a / "synthetic_config.json").read_text())
    assert saved["config"] == SMALL.to_dict() and saved["generator_version"] == ss.GENERATOR_VERSION
    mask = np.asarray(Image.open(a / "region_mask.png")) > 0
    r0, r1, c0, c1 = region_box(SMALL)
    assert mask.sum() == SMALL.region_size**2 and mask[r0:r1, c0:c1].all()
    other = generate_structured(tmp_path / "c", StructuredConfig(n_images=60, seed=1), progress=False)
    assert _files(other)["images/s0000.png"] != files["images/s0000.png"]


def test_balanced_classes_and_split_fractions(default_root):
    table = pd.read_csv(default_root / "labels.csv")
    assert table["label"].value_counts().to_dict() == {0: 100, 1: 100, 2: 100}
    counts = pd.crosstab(table["label"], table["split"])
    assert (counts["train"] == 80).all() and (counts["test"] == 20).all()
    assert (table["cue"] == 0).all()


def test_evidence_lives_only_in_the_region(tmp_path):
    with_ev = generate_structured(tmp_path / "ev", SMALL, progress=False)
    no_evidence = StructuredConfig(n_images=60, evidence_strength=0)
    without = generate_structured(tmp_path / "none", no_evidence, progress=False)
    mask = ss.region_mask(SMALL)
    changed = np.zeros_like(mask)
    for i in pd.read_csv(with_ev / "labels.csv", dtype={"id": str})["id"]:
        diff = _pixels(with_ev, i) != _pixels(without, i)
        assert not diff[~mask].any(), f"{i}: evidence outside the region"
        changed |= diff
    assert changed.mean() > 0 and changed[mask].mean() > 0.9


def test_cue_correlates_in_train_only_and_is_outside_the_region(cue_root, default_root):
    table = pd.read_csv(cue_root / "labels.csv", dtype={"id": str})
    agree = table["cue"] == table["label"]
    train, test = agree[table["split"] == "train"].mean(), agree[table["split"] == "test"].mean()
    assert 0.85 <= train <= 0.95
    assert test < 0.55
    assert set(table["cue"]) == {0, 1, 2}
    plain_table = pd.read_csv(default_root / "labels.csv", dtype={"id": str})
    assert (plain_table["id"] == table["id"]).all() and (plain_table["label"] == table["label"]).all()
    r0, r1, c0, c1 = ss.cue_box(StructuredConfig())
    outside = np.ones((64, 64), dtype=bool)
    outside[r0:r1, c0:c1] = False
    assert not ss.region_mask(StructuredConfig())[r0:r1, c0:c1].any()
    for image_id, level in table[["id", "cue"]].head(12).itertuples(index=False):
        cued, plain = _pixels(cue_root, image_id), _pixels(default_root, image_id)
        assert (cued[outside] == plain[outside]).all()
        mark = cued[r0:r1, c0:c1]
        expected = plain[r0:r1, c0:c1] if level == 0 else round(255 * (0.5 + 0.25 * level))
        assert (mark == expected).all()


def test_reuse_and_other_config_error(tmp_path, monkeypatch):
    out = generate_structured(tmp_path / "set", SMALL, progress=False)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    monkeypatch.setattr(ss, "_write_dataset", lambda *a, **k: pytest.fail("regenerated"))
    assert generate_structured(out, SMALL, progress=False) == out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    with pytest.raises(FileExistsError, match=r"set.*another configuration.*seed"):
        generate_structured(out, StructuredConfig(n_images=60, seed=3), progress=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match="junk.*not a synthetic structured folder"):
        generate_structured(tmp_path / "junk", SMALL, progress=False)


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real = ss._write_png

    def flaky(path, pixels):
        calls.append(path)
        if len(calls) == 20:
            raise OSError("disk full")
        real(path, pixels)

    monkeypatch.setattr(ss, "_write_png", flaky)
    with pytest.raises(OSError, match="disk full"):
        generate_structured(tmp_path / "out", SMALL, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_dataset_items_and_contract(default_root):
    full, train, test = (StructuredDataset(default_root, s) for s in (None, "train", "test"))
    assert (len(full), len(train), len(test)) == (300, 240, 60)
    assert full.label_names == ["class_0", "class_1", "class_2"] and full.config == StructuredConfig()
    assert list(train.metadata.columns) == ["id", "label", "split", "cue"]
    assert (train.metadata["split"] == "train").all() and train.labels.dtype == np.int64
    assert train.region_mask.shape == (64, 64) and train.region_mask.dtype == bool
    assert train.region_mask.sum() == 144
    item = test[3]
    assert set(item) == {"idx", "id", "img", "lab"} and item["idx"] == 3
    assert item["id"] == test.metadata.at[3, "id"] and item["lab"] == test.labels[3]
    img = item["img"]
    assert isinstance(img, torch.Tensor) and img.dtype == torch.float32 and img.shape == (1, 64, 64)
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    assert len({full.fingerprint, train.fingerprint, test.fingerprint}) == 3
    assert StructuredDataset(default_root, "train").fingerprint == train.fingerprint
    with pytest.raises(ValueError, match="split must be one of"):
        StructuredDataset(default_root, "val")


def test_rgb_images(tmp_path):
    out = generate_structured(tmp_path / "rgb", StructuredConfig(n_images=6, channels=3), progress=False)
    img = StructuredDataset(out)[0]["img"]
    assert img.shape == (3, 64, 64) and float(img[0].mean()) > float(img[2].mean())


def test_missing_and_corrupt_png_errors_name_the_file(tmp_path):
    out = generate_structured(tmp_path / "set", StructuredConfig(n_images=6), progress=False)
    ds = StructuredDataset(out)
    path = out / "images" / f"{ds.metadata.at[0, 'id']}.png"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(StructuredFormatError, match=rf"{path.name}: unreadable PNG"):
        ds[0]
    path.unlink()
    with pytest.raises(StructuredFormatError, match=rf"{path.name}: image not found"):
        ds[0]
    (out / "synthetic_config.json").unlink()
    with pytest.raises(StructuredFormatError, match="synthetic_config.json: not found"):
        StructuredDataset(out)


def test_map_region_auc():
    mask = ss.region_mask(StructuredConfig())
    assert map_region_auc(mask.astype(float), mask) == 1.0
    assert map_region_auc(np.full((1, 64, 64), 0.3), mask) == 0.5
    assert map_region_auc(1.0 - mask, mask) == 0.0
    # region {0.9, 0.4}, background {0.5, 0.1}: region > background in 3 of 4 pairs
    small_mask = np.array([[True, True], [False, False]])
    assert map_region_auc(np.array([[0.9, 0.4], [0.5, 0.1]]), small_mask) == pytest.approx(0.75)
    # a tie counts one half: region {0.5}, background {0.5, 0.2, 0.7} -> (0.5 + 1 + 0) / 3
    tie_mask = np.array([[True, False], [False, False]])
    assert map_region_auc(np.array([[0.5, 0.5], [0.2, 0.7]]), tie_mask) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="does not match"):
        map_region_auc(np.zeros((3, 3)), small_mask)
    with pytest.raises(ValueError, match="both region and background"):
        map_region_auc(np.zeros((2, 2)), np.ones((2, 2), dtype=bool))


def test_evidence_is_learnable_in_the_region_only(default_root):
    """Phase-invariant features (|FFT| of a patch) separate the classes in the region, not elsewhere,
    while a linear model on the region's raw pixels cannot (the grating's phase is random)."""
    train, test = StructuredDataset(default_root, "train"), StructuredDataset(default_root, "test")
    x_train = np.stack([train.image(i)[0] for i in range(len(train))])
    x_test = np.stack([test.image(i)[0] for i in range(len(test))])
    r0, r1, c0, c1 = region_box(train.config)
    side = train.config.region_size
    background = (slice(13, 13 + side), slice(26, 26 + side))  # inside the disc, above the centre
    assert not train.region_mask[background].any()

    def accuracy(rows: slice, cols: slice, spectrum: bool) -> float:
        def features(x: np.ndarray) -> np.ndarray:
            patch = x[:, rows, cols]
            patch = np.abs(np.fft.fft2(patch - patch.mean(axis=(1, 2), keepdims=True))) if spectrum else patch
            return patch.reshape(len(x), -1)

        model = LogisticRegression(max_iter=5000)
        model.fit(features(x_train), train.labels)
        return model.score(features(x_test), test.labels)

    region = (slice(r0, r1), slice(c0, c1))
    assert accuracy(*region, spectrum=True) >= 0.85
    assert accuracy(*region, spectrum=True) - accuracy(*background, spectrum=True) >= 0.35
    assert accuracy(*region, spectrum=False) <= 0.6
