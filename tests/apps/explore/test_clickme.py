"""ClickMe exploration: the ClickMe-like synthetic set's tables and figures, ClickMe records and samples."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from attnlib.apps.explore.clickme import (
    blur_figure,
    blur_kernels_around,
    blur_sweep,
    clickme_class_counts,
    clickme_figure,
    clickme_image_table,
    clickme_record_table,
    clickme_samples,
    clickme_sources,
    context_cue_agreement,
    interrater_figure,
)
from attnlib.core.profiles import load_profile
from attnlib.data.maps.sources import clickme_map, player_halves
from attnlib.data.real.clickme import ClickMe
from attnlib.data.real.layout_samples import CLICKME_IMAGES, write_clickme_sample
from attnlib.data.synthetic.defaults import synthetic_finegrained_config
from attnlib.data.synthetic.finegrained import FineGrainedConfig, FineGrainedDataset, generate_finegrained
from attnlib.evaluation.alignment import interrater_reliability
from attnlib.evaluation.metrics import spearman_per_image


@pytest.fixture(scope="module")
def clickme_like(tmp_path_factory):
    """A small ClickMe-like synthetic set: 3 classes, 4 players with 2 clicks each, the cue always right in training."""
    config = FineGrainedConfig(n_images=24, size=48, n_classes=3, part_radius=4, distractor_size=8,
                               distractor_correlation_train=1.0, n_annotators=4, bubbles_per_annotator=2)
    return FineGrainedDataset(generate_finegrained(tmp_path_factory.mktemp("clickme") / "set", config, progress=False))


def test_clickme_image_table_by_hand(clickme_like):
    ds = clickme_like
    table = clickme_image_table(ds, 5)
    assert len(table) == len(ds) and table.index.tolist() == ds.metadata["id"].tolist()
    assert (table["bubbles"] == 8).all() and (table["players"] == 4).all() and (table["bubbles_per_player"] == 2).all()
    i = 3
    row, bubbles = table.iloc[i], ds.bubbles(i)
    heat = clickme_map(bubbles, (48, 48), 5)
    part, cue = ds.evidence_mask(i), ds.distractor_mask(i)
    assert row["mass_on_part"] == pytest.approx(heat[part].sum() / heat.sum(), rel=1e-6)
    assert row["mass_on_cue"] == pytest.approx(heat[cue].sum() / heat.sum(), rel=1e-6)
    assert row["part_area"] == pytest.approx(part.mean()) and row["cue_area"] == pytest.approx(64 / 48**2)
    on_part = [part[round(b.y), round(b.x)] for b in bubbles.itertuples()]
    assert row["bubbles_on_part"] == pytest.approx(np.mean(on_part))
    meta = ds.metadata.iloc[i]
    assert row["class"] == ds.label_names[meta["label"]] and row["cue_agrees"] == (meta["distractor"] == meta["label"])
    # the simulated players aim at the part: far more mass there than a flat map would put
    assert (table["mass_on_part"] > 3 * table["part_area"]).mean() > 0.8


def test_context_cue_agreement_per_split(clickme_like):
    ds = clickme_like
    table = context_cue_agreement(ds)
    assert table.index.tolist() == ["train", "test"] and table["images"].sum() == len(ds)
    assert table.loc["train", "cue_agrees"] == 1.0 and table.loc["train", "configured"] == 1.0
    test = ds.metadata[ds.metadata["split"] == "test"]
    assert table.loc["test", "cue_agrees"] == pytest.approx((test["distractor"] == test["label"]).mean())
    assert table.loc["test", "configured"] == table.loc["test", "chance"] == pytest.approx(1 / 3)
    assert table.loc["train", "cramers_v"] == pytest.approx(1.0)


def test_blur_kernels_and_sweep(clickme_like):
    assert blur_kernels_around(13) == [None, 7, 13, 27]
    assert blur_kernels_around(9) == [None, 5, 9, 19]
    assert blur_kernels_around(1) == [None, 1, 3]
    sweep = blur_sweep(clickme_like, [None, 5], seed=2, max_images=10)
    assert sweep.index.tolist() == ["no blur", "5 x 5 px"] and (sweep["images"] == 10).all()
    again = interrater_reliability(clickme_like, 5, seed=2, max_images=10)
    assert sweep.loc["5 x 5 px", "rho"] == pytest.approx(again.rho)
    masses = clickme_image_table(clickme_like, 5).loc[again.per_image.index, "mass_on_part"]
    assert sweep.loc["5 x 5 px", "mass_on_part"] == pytest.approx(masses.mean())
    assert clickme_image_table(clickme_like, 5, [2, 7]).index.tolist() == ["f0002", "f0007"]


def test_clickme_figures_show_the_maps(clickme_like):
    ds = clickme_like
    fig = clickme_figure(ds, 5, n=2, seed=0)
    first_id = fig.axes[0].get_title().split()[0]
    i = ds.metadata["id"].tolist().index(first_id)
    bubbles = ds.bubbles(i)
    assert len(fig.axes[0].patches) == len(bubbles)  # one circle per click
    heat = clickme_map(bubbles, (48, 48), 5)
    np.testing.assert_allclose(np.asarray(fig.axes[1].images[1].get_array()), heat / heat.max(), rtol=1e-6)
    a, b = player_halves(bubbles)
    rho = spearman_per_image(clickme_map(a, (48, 48), 5)[None], clickme_map(b, (48, 48), 5)[None])[0]
    assert f"rho between halves {rho:.2f}" in fig.axes[3].get_title()
    blur = blur_figure(ds, [None, 5], n=2, seed=0)
    row_id = blur.axes[0].texts[0].get_text().split()[0]
    k = ds.metadata["id"].tolist().index(row_id)
    raw = clickme_map(ds.bubbles(k), (48, 48))
    np.testing.assert_allclose(np.asarray(blur.axes[0].images[1].get_array()), raw / raw.max(), rtol=1e-6)
    reliability = interrater_reliability(ds, 5)
    lines = [line.get_xdata()[0] for line in interrater_figure(reliability).axes[0].lines]
    assert lines == pytest.approx([reliability.rho, reliability.null_rho, 0.58, 0.18])
    plt.close("all")


def test_clickme_sources_fall_back_to_a_labelled_layout_sample(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLIB_HOME", str(tmp_path / "home"))
    sources = clickme_sources("smoke")
    assert sources.is_sample and "NOT REAL DATA" in sources.notice("clickme")
    assert sources.blur_kernel == load_profile("smoke")["gala"]["blur_kernel"]
    assert FineGrainedDataset(sources.synthetic).config == synthetic_finegrained_config("smoke", "gala_synthetic")
    assert len(ClickMe(sources.clickme, image_size=None)) == len(CLICKME_IMAGES)
    real = clickme_sources("smoke", sources.clickme, blur_kernel=7)
    assert not real.is_sample and real.blur_kernel == 7 and real.samples is None
    assert real.notice("clickme") == f"ClickMe: real data from {sources.clickme}"
    with pytest.raises(ValueError, match="odd"):
        clickme_sources("smoke", sources.clickme, blur_kernel=8)
    folder = Path(sources.samples.name)
    sources.cleanup()
    assert not folder.exists()


@pytest.mark.parametrize("form", ["raw", "jpeg"])
def test_clickme_records_counts_and_samples(tmp_path, form):
    root = write_clickme_sample(tmp_path / form, form)
    ds = ClickMe(root, image_size=64)
    table = clickme_record_table(ds)
    assert table["label"].tolist() == [label for _, label, _, _ in CLICKME_IMAGES]
    assert table["split"].tolist() == [split for split, _, _, _ in CLICKME_IMAGES]
    if form == "raw":  # the GALA-era records store the click count and the box
        assert table["click_count"].tolist() == [clicks for _, _, clicks, _ in CLICKME_IMAGES]
        assert table["has_bbox"].all() and table["map_max"].tolist() == pytest.approx([1.0] * 5)
    else:
        assert (table["click_count"] == -1).all() and not table["has_bbox"].any()
    heatmap = ds.record(0).heatmap
    assert table["map_area_half"].iloc[0] == pytest.approx((heatmap >= heatmap.max() / 2).mean())
    assert len(clickme_record_table(ds, n=2)) == 2
    assert table["has_map"].all()
    mapless = clickme_record_table(
        ClickMe(write_clickme_sample(tmp_path / f"{form}-mapless", form, missing_feature="heatmap"), image_size=64)
    )
    first_val = [split for split, _, _, _ in CLICKME_IMAGES].index("val")
    assert mapless["has_map"].tolist() == [k != first_val for k in range(len(CLICKME_IMAGES))]
    assert np.isnan(mapless["map_max"].iloc[first_val]) and np.isnan(mapless["map_area_half"].iloc[first_val])
    counts = clickme_class_counts(table)
    assert counts.loc["total", "total"] == 5 and counts.loc[1, "train"] == 1 and counts.loc[1, "val"] == 1
    assert counts.index.tolist() == [1, 207, 409, 954, "total"]  # most images first, the total last
    assert clickme_class_counts(table, top=1).index.tolist() == [1, "total"]
    fig = clickme_samples(root, n=2, image_size=64, blur=9, seed=0)
    blurred = ClickMe(root, image_size=64, blur=9)
    k = [Path(i).name for i in blurred.metadata["id"]].index(fig.axes[0].texts[0].get_text().split()[0])
    heat = blurred[k]["map"][0].numpy()
    expected = (heat - heat.min()) / (heat.max() - heat.min())
    np.testing.assert_allclose(np.asarray(fig.axes[1].images[1].get_array()), expected, rtol=1e-5, atol=1e-6)
    plt.close("all")

