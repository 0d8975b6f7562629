"""Structured-image exploration: its data sources (layout samples without real data) and the synthetic set."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from attnlib.apps.explore.common import class_balance
from attnlib.apps.explore.idrid import idrid_split_counts
from attnlib.apps.explore.structured import structured_layout, structured_samples, structured_sources
from attnlib.data.real.idrid import image_dir, list_images, read_fundus, verify_idrid
from attnlib.data.real.jaffe import verify_jaffe
from attnlib.data.real.layout_samples import write_idrid_sample, write_jaffe_sample
from attnlib.data.synthetic.structured import StructuredDataset, region_box


def test_layout_samples_are_clean_unless_defects_are_asked_for(tmp_path):
    root = write_idrid_sample(tmp_path / "IDRiD")
    assert "IDRiD_008" not in list_images(image_dir(root, "train"))
    assert [p.message for p in verify_idrid(root, deep=True)] == [
        "6 images, the release has 413", "3 images, the release has 103"]
    jaffe = write_jaffe_sample(tmp_path / "jaffe")
    assert [p.message for p in verify_jaffe(jaffe, deep=True)] == ["12 images, the release has 213"]
    assert read_fundus(image_dir(root, "test") / "IDRiD_003.jpg").shape == (3, 224, 224)


def test_structured_sources_fall_back_to_labelled_layout_samples(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLIB_HOME", str(tmp_path / "home"))
    sources = structured_sources("smoke", cue=True)
    assert sources.idrid_is_sample and sources.jaffe_is_sample
    assert "NOT REAL DATA" in sources.notice("idrid") and "NOT REAL DATA" in sources.notice("jaffe")
    assert StructuredDataset(sources.structured).config.cue
    assert idrid_split_counts(sources.idrid).loc["train", "images_without_row"] == 1
    samples = Path(sources.samples.name)
    real = tmp_path / "real"
    write_jaffe_sample(real / "jaffe")
    again = structured_sources("smoke", data_root=real, idrid_root=sources.idrid)
    assert (again.idrid, again.jaffe) == (sources.idrid, real / "jaffe") and again.samples is None
    assert again.notice("jaffe") == f"JAFFE: real data from {real / 'jaffe'}"
    sources.cleanup()
    assert not samples.exists()


def test_structured_balance_samples_and_layout(structured_pair):
    ds, _ = structured_pair
    table = class_balance(ds)
    assert table.loc["total", "total"] == len(ds)
    expected = ds.metadata.groupby("label").size().tolist()
    assert table.loc[ds.label_names, "train"].tolist() == expected
    fig = structured_samples(ds, per_class=2, seed=1)
    r0, r1, c0, c1 = region_box(ds.config)
    first = fig.axes[0]
    i = int(ds.metadata.index[ds.metadata["id"] == first.get_title().split()[0]][0])
    np.testing.assert_array_equal(np.asarray(first.images[0].get_array()), ds.image(i)[0])
    (box,) = first.patches  # no cue: only the region
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (c0, r0, c1 - c0, r1 - r0)
    layout = structured_layout(ds)
    np.testing.assert_array_equal(np.asarray(layout.axes[1].images[0].get_array()),
                                  ds.region_mask.astype(np.float32))
    plt.close("all")
