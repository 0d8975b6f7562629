"""A dataset folder's layout is told from its files, so a notebook with real data needs only ``data_root``."""

from __future__ import annotations

import json

import pytest

from attnlib.data.layouts import detect_layout, resolve_dataset
from attnlib.data.real.layout_samples import (
    write_clickme_sample,
    write_cub_sample,
    write_idrid_sample,
    write_idrid_segmentation_sample,
    write_jaffe_sample,
)
from attnlib.papers import abn, gala
from attnlib.papers import global_attention as ga


def test_each_real_layout_is_recognised(tmp_path, layout):
    assert detect_layout(tmp_path) == "egd-cxr"  # the conftest layout: egd-cxr/ and mimic-cxr/ side by side
    assert detect_layout(tmp_path / "egd-cxr") == "egd-cxr"
    assert detect_layout(write_idrid_sample(tmp_path / "idrid")) == "idrid"
    assert detect_layout(write_idrid_sample(tmp_path / "idrid2") / "B. Disease Grading") == "idrid"
    assert detect_layout(write_idrid_segmentation_sample(tmp_path / "idrid-seg")) == "idrid"
    assert detect_layout(write_cub_sample(tmp_path / "cub")) == "cub"
    assert detect_layout(write_jaffe_sample(tmp_path / "jaffe")) == "jaffe"
    assert detect_layout(write_clickme_sample(tmp_path / "clickme-npz", "npz")) == "clickme"
    assert detect_layout(write_clickme_sample(tmp_path / "clickme-raw", "raw")) == "clickme"


def test_jaffe_images_in_a_subfolder_beside_the_readme(tmp_path):
    write_jaffe_sample(tmp_path / "unpacked" / "jaffe")
    assert detect_layout(tmp_path / "unpacked") == "jaffe"


def test_a_generated_folder_is_synthetic(tmp_path):
    (tmp_path / "synthetic_config.json").write_text(json.dumps({"config": {}}))
    assert detect_layout(tmp_path) == "synthetic"


def test_unknown_or_missing_folders_name_the_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(ValueError, match=f"{tmp_path}: no known dataset layout.*set `dataset`"):
        detect_layout(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope: data_root not found"):
        detect_layout(tmp_path / "nope")


def test_resolve_dataset_maps_the_layout_to_the_study_dataset(tmp_path):
    idrid = write_idrid_sample(tmp_path / "idrid")
    assert resolve_dataset(None, None, ga.LAYOUT_DATASETS, "global-attention") == "synthetic"
    assert resolve_dataset(None, idrid, ga.LAYOUT_DATASETS, "global-attention") == "idrid-dr"
    assert resolve_dataset("idrid-me", idrid, ga.LAYOUT_DATASETS, "global-attention") == "idrid-me"
    cub = write_cub_sample(tmp_path / "cub")
    with pytest.raises(ValueError, match="holds cub data, which the global-attention study does not use.*dataset"):
        resolve_dataset(None, cub, ga.LAYOUT_DATASETS, "global-attention")


@pytest.mark.slow
def test_global_attention_needs_only_data_root(tmp_path):
    data = ga.load_data(data_root=write_jaffe_sample(tmp_path / "jaffe"), profile="smoke")
    assert data.name == "jaffe"
    assert len(data.train) + len(data.test) > 0


@pytest.mark.slow
def test_abn_needs_only_data_root(tmp_path):
    study = abn.ABNStudy.create("smoke", tmp_path / "store", data_root=write_cub_sample(tmp_path / "cub"))
    assert study.data.name == "cub"
    with pytest.raises(ValueError, match="holds jaffe data, which the ABN study does not use"):
        _ = abn.ABNStudy.create("smoke", tmp_path / "store", data_root=write_jaffe_sample(tmp_path / "jaffe")).data


@pytest.mark.slow
def test_gala_needs_only_data_root(tmp_path):
    root = write_clickme_sample(tmp_path / "clickme", "npz")
    assert gala.GALAStudy.create("smoke", tmp_path / "store", data_root=root).data.name == "clickme"
