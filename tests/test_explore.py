"""Exploration summaries: class balance, dwell per organ, cue association; structured-image summaries."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
from scipy.ndimage import binary_dilation
import pandas as pd
import pytest
from conftest import IDS

from attnlib import explore
from attnlib.data.clickme import ClickMe
from attnlib.data.defaults import synthetic_egd_cxr, synthetic_finegrained_config
from attnlib.data.egd_cxr import EGDCXR, EGDCXRPaths
from attnlib.data.idrid import (
    IDRiD,
    IDRiDSettings,
    crop_bounds,
    image_dir,
    list_images,
    read_fundus,
    verify_idrid,
)
from attnlib.data.jaffe import JAFFE, LABEL_NAMES, RATING_COLUMNS, verify_jaffe
from attnlib.data.cub import CUB200, read_bubbles
from attnlib.data.layout_samples import (
    CLICKME_IMAGES,
    CUB_BUBBLE_UNKNOWN,
    CUB_BUBBLES,
    write_clickme_sample,
    write_cub_bubbles,
    write_cub_sample,
    write_idrid_sample,
    write_jaffe_sample,
)
from attnlib.data.synthetic_finegrained import FineGrainedConfig, FineGrainedDataset, generate_finegrained
from attnlib.data.synthetic_structured import (
    StructuredConfig,
    StructuredDataset,
    generate_structured,
    map_region_auc,
    region_box,
)
from attnlib.explore import class_balance, cue_association, gaze_statistics, read_truth
from attnlib.map_sources import bubble_frame, clickme_map, player_halves
from attnlib.metrics import human_alignment, spearman_per_image
from attnlib.profiles import load_profile


def test_dwell_shares_by_hand(layout):
    ds = EGDCXR(layout, cache=None)
    stats = gaze_statistics(ds).set_index("dicom_id")
    # every image: fixation (8, 30) for 0.9 s below the mediastinum mask (top half), (20, 10) for 0.1 s inside it
    row = stats.loc[IDS[0]]
    assert row["fixations"] == 2 and row["dwell_s"] == pytest.approx(1.0)
    assert row["dwell_share/mediastinum"] == pytest.approx(0.1)
    assert row["dwell_share/outside organs"] == pytest.approx(0.9)
    assert row["dwell_share/left_lung"] == 0


def test_class_balance_counts(layout):
    table = class_balance(EGDCXR(layout, cache=None))
    assert table.loc["total", "total"] == 6
    assert table.loc[["normal", "cardiomegaly", "pneumonia"], "total"].tolist() == [2, 2, 2]


def test_cramers_v_against_hand_values():
    # train: cue = label exactly (V = 1); test: a balanced, independent design (V = 0)
    train = pd.DataFrame({"split": "train", "label": [0, 1, 2] * 4, "cue_position": [0, 1, 2] * 4})
    test = pd.DataFrame({"split": "test", "label": np.repeat([0, 1, 2], 3), "cue_position": [0, 1, 2] * 3})
    result = cue_association(pd.concat([train, test]).assign(cue_present=False))
    assert result.loc["train", "cramers_v"] == pytest.approx(1.0)
    assert result.loc["test", "cramers_v"] == pytest.approx(0.0, abs=1e-12)
    assert result.loc["test", "chi2_p"] == pytest.approx(1.0)
    assert result.index.tolist() == ["train", "test"]


def test_synthetic_position_cue_is_strong_in_train_and_absent_in_test(tmp_path):
    root = synthetic_egd_cxr("smoke", root=tmp_path, n_images=150, rows=64, cols=64, cue="marker_position",
                             cue_correlation_train=0.9, cue_correlation_val=0.9)
    result = cue_association(read_truth(root))
    assert result.loc["train", "cramers_v"] > 0.7 and result.loc["train", "chi2_p"] < 1e-10
    assert result.loc["test", "chi2_p"] > 0.01  # 30 test images, cue independent of the label
    gaze = gaze_statistics(EGDCXR(EGDCXRPaths.from_root(root), cache=None))
    med = gaze.groupby("class")["dwell_share/mediastinum"].mean()
    assert med["cardiomegaly"] > med["normal"] > med["pneumonia"]



# --- structured images: the synthetic set, IDRiD and JAFFE layout samples --------------------------


@pytest.fixture(scope="module")
def structured_pair(tmp_path_factory):
    """The same synthetic structured set with and without evidence (identical outside the region)."""
    base = tmp_path_factory.mktemp("structured")
    config = StructuredConfig(n_images=150, size=32, region_size=8, evidence_strength=4.0)  # as in the profiles
    with_evidence = generate_structured(base / "evidence", config, progress=False)
    flat = dataclasses.replace(config, evidence_strength=0.0)
    without = generate_structured(base / "none", flat, progress=False)
    return StructuredDataset(with_evidence, "train"), StructuredDataset(without, "train")


@pytest.fixture
def idrid_root(tmp_path):
    return write_idrid_sample(tmp_path / "IDRiD", row_without_image=True, image_without_row=True)


@pytest.fixture
def jaffe_ds(tmp_path):
    root = write_jaffe_sample(tmp_path / "jaffe", unrated_image=True, badly_named_image=True)
    return JAFFE(root, cache=None)


def _panel(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array())


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
    sources = explore.structured_sources("smoke", cue=True)
    assert sources.idrid_is_sample and sources.jaffe_is_sample
    assert "NOT REAL DATA" in sources.notice("idrid") and "NOT REAL DATA" in sources.notice("jaffe")
    assert StructuredDataset(sources.structured).config.cue
    assert explore.idrid_split_counts(sources.idrid).loc["train", "images_without_row"] == 1
    samples = Path(sources.samples.name)
    real = tmp_path / "real"
    write_jaffe_sample(real / "jaffe")
    again = explore.structured_sources("smoke", data_root=real, idrid_root=sources.idrid)
    assert (again.idrid, again.jaffe) == (sources.idrid, real / "jaffe") and again.samples is None
    assert again.notice("jaffe") == f"JAFFE: real data from {real / 'jaffe'}"
    sources.cleanup()
    assert not samples.exists()


def test_structured_balance_samples_and_layout(structured_pair):
    ds, _ = structured_pair
    table = explore.class_balance(ds)
    assert table.loc["total", "total"] == len(ds)
    expected = ds.metadata.groupby("label").size().tolist()
    assert table.loc[ds.label_names, "train"].tolist() == expected
    fig = explore.structured_samples(ds, per_class=2, seed=1)
    r0, r1, c0, c1 = region_box(ds.config)
    first = fig.axes[0]
    i = int(ds.metadata.index[ds.metadata["id"] == first.get_title().split()[0]][0])
    np.testing.assert_array_equal(_panel(first), ds.image(i)[0])
    (box,) = first.patches  # no cue: only the region
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (c0, r0, c1 - c0, r1 - r0)
    layout = explore.structured_layout(ds)
    np.testing.assert_array_equal(_panel(layout.axes[1]), ds.region_mask.astype(np.float32))
    plt.close("all")


def test_orientation_energy_sign_and_phase_invariance():
    yy, xx = np.mgrid[0:32, 0:32].astype(float)
    for phase in (0.0, 1.0, 2.5):
        along_x = explore.orientation_energy(np.cos(2 * np.pi * xx / 6 + phase)[None])[0, 8:-8, 8:-8]
        along_y = explore.orientation_energy(np.cos(2 * np.pi * yy / 6 + phase)[None])[0, 8:-8, 8:-8]
        assert along_x.min() > 0 and along_y.max() < 0
        np.testing.assert_allclose(along_x.mean(), -along_y.mean(), rtol=1e-6)


def test_class_means_and_differences_show_the_evidence_region(structured_pair):
    ds, flat = structured_pair
    by_hand = np.mean([ds.image(i) for i in np.flatnonzero(ds.labels == 1)], axis=0)
    np.testing.assert_allclose(explore.class_means(ds)[1], by_hand, atol=1e-6)
    # the grating's phase is random: pixel means average it away, orientation energy keeps it
    means = explore.class_means(ds, explore.orientation_energy)
    diffs = explore.class_differences(means)
    np.testing.assert_allclose(diffs.sum(axis=0), 0.0, atol=1e-9)
    energy = explore.difference_energy(diffs)
    flat_energy = explore.difference_energy(explore.class_differences(explore.class_means(flat, explore.orientation_energy)))
    mask = ds.region_mask
    # the two sets differ only inside the region (widened by the gradient and the smoothing's 4-sigma reach)
    outside = ~binary_dilation(mask, np.ones((3, 3), dtype=bool), iterations=5)
    np.testing.assert_allclose(energy[outside], flat_energy[outside], atol=1e-9)
    assert energy[mask].mean() > 1.5 * flat_energy[mask].mean()
    assert map_region_auc(energy, mask) > 0.8 and map_region_auc(flat_energy, mask) < 0.75
    fig = explore.mean_difference_figure(means, ds.label_names, region=mask)
    k = len(ds.label_names)
    np.testing.assert_allclose(_panel(fig.axes[k + 1 + 2]), diffs[2])
    np.testing.assert_allclose(_panel(fig.axes[2 * k + 1]), energy)
    plt.close("all")


def test_structured_cue_association(tmp_path):
    config = StructuredConfig(n_images=60, size=32, region_size=8, cue=True, cue_correlation_train=1.0)
    ds = StructuredDataset(generate_structured(tmp_path / "cue", config, progress=False))
    result = explore.cue_association(ds.metadata, "cue")
    assert result.loc["train", "cramers_v"] == pytest.approx(1.0)
    assert result.loc["test", "cramers_v"] < 1.0


def test_idrid_counts_and_balance_from_the_csvs(idrid_root):
    counts = explore.idrid_split_counts(idrid_root)
    assert counts.loc["train"].to_dict() == {"csv_rows": 7, "images": 7, "csv_rows_without_image": 1,
                                             "images_without_row": 1, "kept": 6}
    assert counts.loc["test", "kept"] == 3
    balance = explore.idrid_balance(idrid_root)
    for task in ("retinopathy", "macular_edema"):
        for split in ("train", "test"):
            loader = IDRiD(idrid_root, split, task, cache=None).class_counts
            assert balance.loc[task, split].to_dict() == loader
    assert balance.loc["retinopathy", "total"].tolist() == [2, 2, 2, 2, 1]  # DR0-DR4 read from the data
    assert balance.loc["macular_edema"].index.tolist() == ["ME0", "ME1", "ME2"]


def test_idrid_samples_draw_the_crop_lines(idrid_root):
    ds = IDRiD(idrid_root, cache=None)
    fig = explore.idrid_samples(ds, per_class=1, width=214)
    ax = fig.axes[0]
    x0, x1 = crop_bounds(214)
    assert sorted(line.get_xdata()[0] for line in ax.lines) == [x0, x1]
    uncropped = read_fundus(ds.metadata.at[0, "path"], crop=False, size=(142, 214))
    np.testing.assert_array_equal(_panel(ax), uncropped.transpose(1, 2, 0))
    plt.close("all")


def test_laterality_check_and_flip_figure(idrid_root):
    table = explore.laterality_check(idrid_root)
    assert table.loc[~table["agree"], ["split", "id"]].values.tolist() == [["train", "IDRiD_004"]]
    counts = explore.laterality_counts(table)
    assert counts.loc["train"].to_dict() == {"images": 7, "paper_right": 1, "auto_right": 2,
                                             "disagreements": 1, "unreadable": 0}
    ds = IDRiD(idrid_root, settings=IDRiDSettings(standardize=False), cache=None)
    fig = explore.flip_figure(ds, table, n=3)
    # IDRiD_004 first: the paper keeps it, the optic-disc check flips it
    stored, paper, auto = (_panel(ax) for ax in fig.axes[:3])
    assert "DISAGREE" in fig.axes[0].get_title()
    np.testing.assert_array_equal(paper, stored)
    np.testing.assert_array_equal(auto, stored[:, ::-1])
    stored, paper, auto = (_panel(ax) for ax in fig.axes[3:6])  # IDRiD_001: a right eye both ways
    np.testing.assert_array_equal(paper, stored[:, ::-1])
    np.testing.assert_array_equal(auto, paper)
    assert [ax.get_title().split()[0] for ax in fig.axes[::3]] == ["IDRiD_004", "IDRiD_001", "IDRiD_002"]
    plt.close("all")


def test_laterality_check_lists_unreadable_images_and_goes_on(idrid_root):
    corrupt = image_dir(idrid_root, "train") / "IDRiD_002.jpg"  # sorts before IDRiD_004, the disagreement
    corrupt.write_bytes(b"\xff\xd8not a jpeg")
    table = explore.laterality_check(idrid_root)
    shown = table[~table["agree"]]  # what the notebook displays
    assert shown[["split", "id"]].values.tolist() == [["train", "IDRiD_002"], ["train", "IDRiD_004"]]
    assert shown["problem"].iloc[0].startswith(f"{corrupt}: unreadable image")
    assert pd.isna(shown["problem"].iloc[1])
    counts = explore.laterality_counts(table)
    assert counts.loc["train"].to_dict() == {"images": 7, "paper_right": 1, "auto_right": 2,
                                             "disagreements": 1, "unreadable": 1}
    fig = explore.flip_figure(IDRiD(idrid_root, cache=None), table, n=3)  # the unreadable image left out
    assert [ax.get_title().split()[0] for ax in fig.axes[::3]] == ["IDRiD_004", "IDRiD_001", "IDRiD_003"]
    plt.close("all")


def test_jaffe_ratings_balance_and_files(jaffe_ds):
    ratings = explore.jaffe_ratings(jaffe_ds)
    argmax = ratings[list(RATING_COLUMNS)].to_numpy().argmax(axis=1)
    assert ratings["label"].tolist() == [LABEL_NAMES[k] for k in argmax]
    assert ratings.at["NM.SU2.99", "label"] == "surprise" and ratings.at["NM.SU2.99", "margin"] == 0.0
    assert ratings.at["KA.AN1.39", "margin"] == pytest.approx(4.20 - 3.10)
    assert pd.isna(ratings.at["NA.NE1.202", "pose_agrees"]) and ratings.at["KA.AN1.39", "pose_agrees"]
    balance = explore.jaffe_balance(jaffe_ds)
    assert balance["total"].drop("total").tolist() == np.bincount(jaffe_ds.labels, minlength=6).tolist()
    assert balance.loc["happiness", "NE"] == 1 and balance.loc["total", "total"] == len(jaffe_ds) == 12
    assert explore.jaffe_file_counts(jaffe_ds).to_dict() == {
        "tiffs_named_per_pattern": 13, "skipped_without_ratings": 1, "ignored_named_otherwise": 1, "kept": 12,
        "ratings_rows_without_image": 1}
    fig = explore.jaffe_samples(jaffe_ds, per_class=1)
    first = fig.axes[0]
    i = jaffe_ds.metadata["id"].tolist().index(first.get_title().split()[0])
    np.testing.assert_array_equal(_panel(first), jaffe_ds.image(i))
    plt.close("all")


# --- ClickMe (GALA) and the ClickMe-like synthetic set ----------------------------------------------


@pytest.fixture(scope="module")
def clickme_like(tmp_path_factory):
    """A small ClickMe-like synthetic set: 3 classes, 4 players with 2 clicks each, the cue always right in training."""
    config = FineGrainedConfig(n_images=24, size=48, n_classes=3, part_radius=4, distractor_size=8,
                               distractor_correlation_train=1.0, n_annotators=4, bubbles_per_annotator=2)
    return FineGrainedDataset(generate_finegrained(tmp_path_factory.mktemp("clickme") / "set", config, progress=False))


class _Clicks:
    """A stand-in for the synthetic set: given bubbles per image on ``size`` x ``size`` images."""

    def __init__(self, frames: list[pd.DataFrame], size: int) -> None:
        self.frames, self.config, self.label_names = frames, SimpleNamespace(size=size), ["a", "b"]
        self.metadata = pd.DataFrame({"id": [f"i{k}" for k in range(len(frames))], "split": "test",
                                      "label": [k % 2 for k in range(len(frames))]})

    def __len__(self) -> int:
        return len(self.frames)

    def bubbles(self, i: int) -> pd.DataFrame:
        return self.frames[i]


def test_clickme_image_table_by_hand(clickme_like):
    ds = clickme_like
    table = explore.clickme_image_table(ds, 5)
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
    table = explore.context_cue_agreement(ds)
    assert table.index.tolist() == ["train", "test"] and table["images"].sum() == len(ds)
    assert table.loc["train", "cue_agrees"] == 1.0 and table.loc["train", "configured"] == 1.0
    test = ds.metadata[ds.metadata["split"] == "test"]
    assert table.loc["test", "cue_agrees"] == pytest.approx((test["distractor"] == test["label"]).mean())
    assert table.loc["test", "configured"] == table.loc["test", "chance"] == pytest.approx(1 / 3)
    assert table.loc["train", "cramers_v"] == pytest.approx(1.0)


def test_interrater_reliability_identical_halves_and_the_null():
    # two players click the same spot of each image (a different spot per image): the halves agree exactly
    spots = [(6.0, 6.0), (25.0, 25.0), (6.0, 25.0)]
    frames = [bubble_frame([(f"i{k}", w, x, y, 3.0) for w in ("w0", "w1")]) for k, (x, y) in enumerate(spots)]
    result = explore.interrater_reliability(_Clicks(frames, 32), 5, seed=1)
    table = result.per_image
    np.testing.assert_allclose(table["rho"], 1.0)
    assert result.rho == pytest.approx(1.0) and result.null_rho < 0.5
    assert (table["partner"] != table.index).all() and sorted(table["partner"]) == sorted(table.index)
    assert result.summary()["undefined (constant map)"] == 0
    picked = explore.interrater_reliability(_Clicks(frames, 32), 5, seed=1, max_images=2).per_image
    assert len(picked) == 2 and picked.index.is_monotonic_increasing
    with pytest.raises(ValueError, match="at least 2 images"):
        explore.interrater_reliability(_Clicks(frames[:1], 32), 5)


def test_interrater_reliability_matches_the_alignment_metric(clickme_like):
    ds = clickme_like
    result = explore.interrater_reliability(ds, 5, seed=3)
    halves = [player_halves(ds.bubbles(i)) for i in range(len(ds))]
    first = np.stack([clickme_map(a, (48, 48), 5) for a, _ in halves])
    second = np.stack([clickme_map(b, (48, 48), 5) for _, b in halves])
    np.testing.assert_allclose(result.per_image["rho"], spearman_per_image(first, second))
    reference = human_alignment(first, second, ceiling=1.0, seed=3)  # the same shuffled-pairs null
    assert result.rho == pytest.approx(reference["rho"]) and result.null_rho == pytest.approx(reference["null_rho"])
    assert result.rho > result.null_rho + 0.2
    by_split = result.by_split()
    assert by_split["images"].sum() == len(ds)
    assert by_split.loc["train", "rho"] == pytest.approx(result.per_image.query("split == 'train'")["rho"].mean())


def test_blur_kernels_and_sweep(clickme_like):
    assert explore.blur_kernels_around(13) == [None, 7, 13, 27]
    assert explore.blur_kernels_around(9) == [None, 5, 9, 19]
    assert explore.blur_kernels_around(1) == [None, 1, 3]
    sweep = explore.blur_sweep(clickme_like, [None, 5], seed=2, max_images=10)
    assert sweep.index.tolist() == ["no blur", "5 x 5 px"] and (sweep["images"] == 10).all()
    again = explore.interrater_reliability(clickme_like, 5, seed=2, max_images=10)
    assert sweep.loc["5 x 5 px", "rho"] == pytest.approx(again.rho)
    masses = explore.clickme_image_table(clickme_like, 5).loc[again.per_image.index, "mass_on_part"]
    assert sweep.loc["5 x 5 px", "mass_on_part"] == pytest.approx(masses.mean())
    assert explore.clickme_image_table(clickme_like, 5, [2, 7]).index.tolist() == ["f0002", "f0007"]


def test_clickme_figures_show_the_maps(clickme_like):
    ds = clickme_like
    fig = explore.clickme_figure(ds, 5, n=2, seed=0)
    first_id = fig.axes[0].get_title().split()[0]
    i = ds.metadata["id"].tolist().index(first_id)
    bubbles = ds.bubbles(i)
    assert len(fig.axes[0].patches) == len(bubbles)  # one circle per click
    heat = clickme_map(bubbles, (48, 48), 5)
    np.testing.assert_allclose(np.asarray(fig.axes[1].images[1].get_array()), heat / heat.max(), rtol=1e-6)
    a, b = player_halves(bubbles)
    rho = spearman_per_image(clickme_map(a, (48, 48), 5)[None], clickme_map(b, (48, 48), 5)[None])[0]
    assert f"rho between halves {rho:.2f}" in fig.axes[3].get_title()
    blur = explore.blur_figure(ds, [None, 5], n=2, seed=0)
    row_id = blur.axes[0].texts[0].get_text().split()[0]
    k = ds.metadata["id"].tolist().index(row_id)
    raw = clickme_map(ds.bubbles(k), (48, 48))
    np.testing.assert_allclose(np.asarray(blur.axes[0].images[1].get_array()), raw / raw.max(), rtol=1e-6)
    reliability = explore.interrater_reliability(ds, 5)
    lines = [line.get_xdata()[0] for line in explore.interrater_figure(reliability).axes[0].lines]
    assert lines == pytest.approx([reliability.rho, reliability.null_rho, 0.58, 0.18])
    plt.close("all")


def test_clickme_sources_fall_back_to_a_labelled_layout_sample(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLIB_HOME", str(tmp_path / "home"))
    sources = explore.clickme_sources("smoke")
    assert sources.is_sample and "NOT REAL DATA" in sources.notice("clickme")
    assert sources.blur_kernel == load_profile("smoke")["gala"]["blur_kernel"]
    assert FineGrainedDataset(sources.synthetic).config == synthetic_finegrained_config("smoke", "gala_synthetic")
    assert len(ClickMe(sources.clickme, image_size=None)) == len(CLICKME_IMAGES)
    real = explore.clickme_sources("smoke", sources.clickme, blur_kernel=7)
    assert not real.is_sample and real.blur_kernel == 7 and real.samples is None
    assert real.notice("clickme") == f"ClickMe: real data from {sources.clickme}"
    with pytest.raises(ValueError, match="odd"):
        explore.clickme_sources("smoke", sources.clickme, blur_kernel=8)
    folder = Path(sources.samples.name)
    sources.cleanup()
    assert not folder.exists()


@pytest.mark.parametrize("form", ["raw", "jpeg"])
def test_clickme_records_counts_and_samples(tmp_path, form):
    root = write_clickme_sample(tmp_path / form, form)
    ds = ClickMe(root, image_size=64)
    table = explore.clickme_record_table(ds)
    assert table["label"].tolist() == [label for _, label, _, _ in CLICKME_IMAGES]
    assert table["split"].tolist() == [split for split, _, _, _ in CLICKME_IMAGES]
    if form == "raw":  # the GALA-era records store the click count and the box
        assert table["click_count"].tolist() == [clicks for _, _, clicks, _ in CLICKME_IMAGES]
        assert table["has_bbox"].all() and table["map_max"].tolist() == pytest.approx([1.0] * 5)
    else:
        assert (table["click_count"] == -1).all() and not table["has_bbox"].any()
    heatmap = ds.record(0).heatmap
    assert table["map_area_half"].iloc[0] == pytest.approx((heatmap >= heatmap.max() / 2).mean())
    assert len(explore.clickme_record_table(ds, n=2)) == 2
    assert table["has_map"].all()
    mapless = explore.clickme_record_table(
        ClickMe(write_clickme_sample(tmp_path / f"{form}-mapless", form, missing_feature="heatmap"), image_size=64)
    )
    first_val = [split for split, _, _, _ in CLICKME_IMAGES].index("val")
    assert mapless["has_map"].tolist() == [k != first_val for k in range(len(CLICKME_IMAGES))]
    assert np.isnan(mapless["map_max"].iloc[first_val]) and np.isnan(mapless["map_area_half"].iloc[first_val])
    counts = explore.clickme_class_counts(table)
    assert counts.loc["total", "total"] == 5 and counts.loc[1, "train"] == 1 and counts.loc[1, "val"] == 1
    assert counts.index.tolist() == [1, 207, 409, 954, "total"]  # most images first, the total last
    assert explore.clickme_class_counts(table, top=1).index.tolist() == [1, "total"]
    fig = explore.clickme_samples(root, n=2, image_size=64, blur=9, seed=0)
    blurred = ClickMe(root, image_size=64, blur=9)
    k = [Path(i).name for i in blurred.metadata["id"]].index(fig.axes[0].texts[0].get_text().split()[0])
    heat = blurred[k]["map"][0].numpy()
    expected = (heat - heat.min()) / (heat.max() - heat.min())
    np.testing.assert_allclose(np.asarray(fig.axes[1].images[1].get_array()), expected, rtol=1e-5, atol=1e-6)
    plt.close("all")


def test_bubble_statistics_and_figure_count_listed_images_at_pixel_centres(tmp_path):
    root = write_cub_sample(tmp_path / "cub")
    bubbles = read_bubbles(write_cub_bubbles(tmp_path / "bubbles.csv", unknown_image=True))
    sets = [CUB200(root, split, image_size=64, cache=None) for split in ("train", "test")]
    stats = explore.bubble_statistics(bubbles, sets)
    assert CUB_BUBBLE_UNKNOWN[0] not in stats.index
    assert stats["bubbles"].sum() == len(CUB_BUBBLES)
    fig = explore.bubble_figure(sets[0], bubbles, n=1)
    first = CUB_BUBBLES[0]
    height, width = sets[0].original_size(list(sets[0].metadata["id"]).index(first[0]))
    ellipse = fig.axes[0].patches[0]  # the first bubble, on axes with pixel edges at integers
    assert ellipse.center == pytest.approx(((first[2] + 0.5) * 64 / width, (first[3] + 0.5) * 64 / height))
    plt.close("all")
