"""ClickMe (paper 4, GALA) and its ClickMe-like synthetic default.

The synthetic set: clicks per image and the maps' mass on the diagnostic part and the context square, the
context cue per split, maps over images with each player's clicks, the blur's effect, and the figure of the
players' inter-rater reliability (measured by :mod:`attnlib.evaluation.alignment`). Real ClickMe (or its
labelled layout sample): one row per record, images per label, maps before and after the blur.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from attnlib.apps.explore._figures import _outline
from attnlib.apps.explore.common import cue_association
from attnlib.core.profiles import load_settings
from attnlib.core.progress import tqdm
from attnlib.data.maps.sources import clickme_map, player_halves
from attnlib.data.real.clickme import PAPER_BLUR, PAPER_INTERRATER_NULL, PAPER_INTERRATER_RHO, ClickMe
from attnlib.data.real.layout_samples import write_clickme_sample
from attnlib.data.synthetic.defaults import synthetic_finegrained
from attnlib.data.synthetic.finegrained import FineGrainedDataset
from attnlib.evaluation.alignment import InterRater, interrater_reliability, kernel_name, subset_indices
from attnlib.evaluation.metrics import spearman_per_image
from attnlib.papers.gala import GALASettings
from attnlib.reporting import plots

#: The paper's inter-rater reliability of ClickMe maps (Spearman rho) and its shuffled-pairs null.
CLICKME_PAPER_RELIABILITY, CLICKME_PAPER_NULL = PAPER_INTERRATER_RHO, PAPER_INTERRATER_NULL

#: Player colours of the click figure: tab10 without the green and orange of the part and cue outlines.
PLAYER_COLOURS = tuple(plt.cm.tab10.colors[k] for k in (0, 3, 4, 5, 6, 9, 7, 8))


@dataclass
class ClickMeSources:
    """The folders the ClickMe exploration reads: the synthetic ClickMe-like default (always generated) and a
    real ClickMe copy or its layout sample; ``blur_kernel`` is the map blur for the synthetic images."""

    synthetic: Path
    clickme: Path
    is_sample: bool
    blur_kernel: int
    samples: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def notice(self, name: Literal["synthetic", "clickme"]) -> str:
        """One line saying what ``name`` is: the synthetic set, real ClickMe data, or a layout sample."""
        if name == "synthetic":
            return (f"synthetic ClickMe-like set (generated, not real data; maps from simulated players' "
                    f"clicks, blurred {self.blur_kernel} x {self.blur_kernel} px): {self.synthetic}")
        if self.is_sample:
            return (f"ClickMe: LAYOUT SAMPLE, NOT REAL DATA - five drawn objects with made-up maps in a real "
                    f"ClickMe file form, written to {self.clickme}; set data_root to explore the real set")
        return f"ClickMe: real data from {self.clickme}"

    def cleanup(self) -> None:
        """Remove the layout sample's temporary folder (also done when the object is collected)."""
        if self.samples is not None:
            self.samples.cleanup()


def clickme_sources(
    profile: str | None = None,
    data_root: str | Path | None = None,
    *,
    sample_form: Literal["npz", "raw", "jpeg"] = "raw",
    blur_kernel: int | None = None,
) -> ClickMeSources:
    """Resolve the two data sets of the ClickMe exploration.

    The synthetic default is the profile's ``gala_synthetic`` fine-grained set
    (:func:`attnlib.data.synthetic.defaults.synthetic_finegrained`), its maps blurred by ``blur_kernel`` (None: the
    profile's ``gala.blur_kernel``, the paper's 49 px on 256-px images scaled to the image size). ClickMe:
    ``data_root`` (a folder of npz or TFRecord files, or one TFRecord file), else the layout sample of
    :func:`attnlib.data.real.layout_samples.write_clickme_sample` in ``sample_form`` ("raw": the GALA-era
    float32 TFRecords with click counts) in a temporary folder removed by :meth:`ClickMeSources.cleanup`.
    """
    kernel = load_settings(GALASettings, profile, "gala").blur_kernel if blur_kernel is None else int(blur_kernel)
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"blur_kernel must be a positive odd number of pixels, got {kernel}")
    synthetic = synthetic_finegrained(profile, section="gala_synthetic")
    if data_root is not None:
        return ClickMeSources(synthetic, Path(data_root).expanduser(), is_sample=False, blur_kernel=kernel)
    samples = tempfile.TemporaryDirectory(prefix="attnlib-clickme-sample-")
    root = write_clickme_sample(Path(samples.name) / "clickme", sample_form)
    return ClickMeSources(synthetic, root, is_sample=True, blur_kernel=kernel, samples=samples)


def blur_kernels_around(kernel: int) -> list[int | None]:
    """Blur kernels to compare with ``kernel`` (odd): none, about half, ``kernel`` itself, about double."""
    half = max(1, kernel // 2) | 1
    return list(dict.fromkeys([None, half, kernel, 2 * kernel + 1]))


def _mass_share(values: np.ndarray, mask: np.ndarray) -> float:
    """The share of ``values``' sum inside ``mask`` (NaN for an all-zero map)."""
    total = float(values.sum())
    return float(values[mask].sum()) / total if total > 0 else float("nan")


def clickme_image_table(
    ds: FineGrainedDataset, blur_kernel: int | None, indices: Sequence[int] | None = None
) -> pd.DataFrame:
    """One row per image of the synthetic ClickMe-like set (index ``id``; ``indices``: those images only).

    Columns: ``split``, ``class``, ``cue`` (the context square's colour index), ``cue_agrees`` (it equals
    the label), ``bubbles`` (clicks), ``players``, ``bubbles_per_player``, ``bubbles_on_part`` (share of
    bubble centres inside the diagnostic part), ``mass_on_part`` and ``mass_on_cue`` (share of the
    :func:`attnlib.data.maps.sources.clickme_map` map's mass, blurred by ``blur_kernel``, inside the part and
    inside the context square), and ``part_area`` / ``cue_area`` (their shares of the image: what a map
    spread evenly would score).
    """
    size = (ds.config.size, ds.config.size)
    rows = []
    for i in tqdm(range(len(ds)) if indices is None else indices, desc="ClickMe maps", leave=False):
        bubbles = ds.bubbles(i)
        part, cue = ds.evidence_mask(i), ds.distractor_mask(i)
        heat = clickme_map(bubbles, size, blur_kernel)
        cols = np.clip(np.round(bubbles["x"].to_numpy()).astype(int), 0, size[1] - 1)
        rws = np.clip(np.round(bubbles["y"].to_numpy()).astype(int), 0, size[0] - 1)
        players = int(bubbles["worker"].nunique())
        meta = ds.metadata.loc[i]
        rows.append({
            "id": meta["id"],
            "split": meta["split"],
            "class": ds.label_names[int(meta["label"])],
            "cue": int(meta["distractor"]),
            "cue_agrees": bool(meta["distractor"] == meta["label"]),
            "bubbles": len(bubbles),
            "players": players,
            "bubbles_per_player": len(bubbles) / players if players else float("nan"),
            "bubbles_on_part": float(part[rws, cols].mean()) if len(bubbles) else float("nan"),
            "mass_on_part": _mass_share(heat, part),
            "mass_on_cue": _mass_share(heat, cue),
            "part_area": float(part.mean()),
            "cue_area": float(cue.mean()),
        })
    return pd.DataFrame(rows).set_index("id")


def context_cue_agreement(ds: FineGrainedDataset) -> pd.DataFrame:
    """Per split of ``ds`` (load it with ``split=None``): images, how often the context square's colour
    index equals the label (``cue_agrees``), what the generator was asked for (``configured``: the
    training correlation, chance in the test split), ``chance`` (1 / classes), and Cramér's V with the
    chi-square p-value of cue against label (:func:`cue_association`)."""
    meta = ds.metadata
    chance = 1.0 / ds.config.n_classes
    agrees = (meta["distractor"] == meta["label"]).groupby(meta["split"], sort=False).agg(["size", "mean"])
    table = pd.DataFrame({
        "images": agrees["size"].astype(int),
        "cue_agrees": agrees["mean"],
        "configured": [ds.config.distractor_correlation_train if s == "train" else chance
                       for s in agrees.index],
        "chance": chance,
    })
    association_table = cue_association(meta, "distractor")[["cramers_v", "chi2_p"]]
    table = table.join(association_table)
    table.index.name = "split"
    return table.reindex([s for s in ("train", "val", "test") if s in table.index])


def blur_sweep(
    ds: FineGrainedDataset,
    kernels: Sequence[int | None],
    *,
    seed: int = 0,
    max_images: int | None = None,
) -> pd.DataFrame:
    """How the blur changes the maps, one row per kernel (index ``blur``): the inter-rater rho and its
    null (:func:`interrater_reliability`), and the mean share of the full map's mass on the diagnostic
    part and on the context square (:func:`clickme_image_table`), over the same images."""
    rows = []
    for kernel in kernels:
        reliability = interrater_reliability(ds, kernel, seed=seed, max_images=max_images)
        masses = clickme_image_table(ds, kernel, subset_indices(len(ds), max_images, seed))
        rows.append({
            "blur": kernel_name(kernel),
            "images": len(masses),
            "rho": reliability.rho,
            "null_rho": reliability.null_rho,
            "mass_on_part": float(masses["mass_on_part"].mean()),
            "mass_on_cue": float(masses["mass_on_cue"].mean()),
        })
    return pd.DataFrame(rows).set_index("blur")


def _scaled(heat: np.ndarray) -> np.ndarray:
    """``heat`` divided by its maximum (zeros stay zeros), as :func:`plots.show_overlay` takes it."""
    top = float(heat.max())
    return heat / top if top > 0 else np.zeros_like(heat)


def clickme_figure(ds: FineGrainedDataset, blur_kernel: int | None, n: int = 4, seed: int = 0) -> Figure:
    """Up to ``n`` random images of the synthetic set, one row each: the image with every click (a bubble,
    one colour per player), the diagnostic part (lime) and the context square (orange, its title says
    whether its colour agrees with the label); the ClickMe map of all players over the image; the maps of
    the two player halves with their Spearman rho. Maps: :func:`attnlib.data.maps.sources.clickme_map` blurred
    by ``blur_kernel``, each divided by its maximum."""
    picks = subset_indices(len(ds), n, seed)
    size = ds.config.size
    fig, axes = plt.subplots(len(picks), 4, figsize=(9.2, 2.7 * len(picks) + 0.5), squeeze=False)
    for row, i in zip(axes, picks, strict=True):
        bubbles, meta = ds.bubbles(i), ds.metadata.loc[i]
        image = ds.image(i).transpose(1, 2, 0)
        agrees = "agrees" if meta["distractor"] == meta["label"] else "disagrees"
        name = ds.label_names[meta["label"]]
        title = f"{meta['id']} ({meta['split']}): {name}\n{len(bubbles)} clicks, cue {agrees}"
        plots.show_overlay(row[0], image, title=title)
        workers = sorted(bubbles["worker"].unique())
        colours = {w: PLAYER_COLOURS[k % len(PLAYER_COLOURS)] for k, w in enumerate(workers)}
        for b in bubbles.itertuples():
            row[0].add_patch(Ellipse((b.x + 0.5, b.y + 0.5), 2 * b.radius, 2 * b.radius, fill=False,
                                     edgecolor=colours.get(b.worker, "red"), linewidth=0.9))
        _outline(row[0], ds.evidence_mask(i), "lime")
        _outline(row[0], ds.distractor_mask(i), "orange")
        heat = clickme_map(bubbles, (size, size), blur_kernel)
        plots.show_overlay(row[1], image, _scaled(heat), title="ClickMe map (all players)")
        a, b = player_halves(bubbles)
        halves = [clickme_map(half, (size, size), blur_kernel) for half in (a, b)]
        rho = float(spearman_per_image(halves[0][None], halves[1][None])[0])
        for ax, half, heat_half in zip(row[2:], (a, b), halves, strict=True):
            players = ", ".join(sorted(half["worker"].unique()))
            plots.show_overlay(ax, image, _scaled(heat_half), title=f"players {players}")
        row[3].set_title(f"{row[3].get_title()}\nrho between halves {rho:.2f}", fontsize=9)
    fig.suptitle("synthetic ClickMe-like set: clicks (one colour per player), part (lime), context cue "
                 f"(orange); maps {kernel_name(blur_kernel)}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    return fig


def blur_figure(ds: FineGrainedDataset, kernels: Sequence[int | None], n: int = 3, seed: int = 0) -> Figure:
    """Up to ``n`` random images of the synthetic set with their ClickMe map at each of ``kernels``
    (columns), via :func:`attnlib.reporting.plots.map_grid` (each map rescaled to [0, 1])."""
    picks = subset_indices(len(ds), n, seed)
    size = (ds.config.size, ds.config.size)
    images = [ds.image(i).transpose(1, 2, 0) for i in picks]
    maps = [[clickme_map(ds.bubbles(i), size, k) for k in kernels] for i in picks]
    names = [f"{ds.metadata.at[i, 'id']} ({len(ds.bubbles(i))} clicks)" for i in picks]
    fig = plots.map_grid(images, maps, row_titles=names, col_titles=[kernel_name(k) for k in kernels])
    fig.suptitle("the same clicks under different blurs", fontsize=10)
    fig.tight_layout()
    return fig


def interrater_figure(reliability: InterRater) -> Figure:
    """Histograms of the per-image rho between player halves and of the shuffled-pairs null, with their
    means and the paper's values on real ClickMe (0.58, null 0.18) marked."""
    table = reliability.per_image
    return plots.histograms(
        {"rho between player halves": table["rho"].to_numpy(),
         "null: shuffled pairs": table["null_rho"].to_numpy()},
        xlabel="Spearman rho per image",
        title=f"inter-rater reliability of the synthetic maps ({kernel_name(reliability.blur_kernel)})",
        marks={"mean rho": reliability.rho, "mean null": reliability.null_rho},
        references={"paper (real ClickMe) rho": CLICKME_PAPER_RELIABILITY, "paper null": CLICKME_PAPER_NULL},
    )


def clickme_record_table(ds: ClickMe, n: int | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per image read from a ClickMe copy (index ``id``): ``split``, ``label``, ``click_count``
    (-1 when the form does not store it), ``encoding``, stored ``height`` / ``width``, ``has_map`` (False:
    the record stores no map, and ``map_max`` / ``map_area_half`` are NaN), the stored map's ``map_max`` and
    ``map_area_half`` (share of pixels at or above half its maximum: how spread the map is) and ``has_bbox``. ``n`` images drawn at random with ``seed`` (in index order); None reads every one
    (on the real set that is every record: slow)."""
    indices = subset_indices(len(ds), n, seed)
    rows = []
    for i in tqdm(indices, desc="ClickMe records", leave=False):
        record = ds.record(i)
        top = float(record.heatmap.max())
        rows.append({
            "id": ds.metadata.at[i, "id"],
            "split": ds.metadata.at[i, "split"] or "(none)",
            "label": record.label,
            "click_count": record.click_count,
            "encoding": record.encoding,
            "height": record.heatmap.shape[0],
            "width": record.heatmap.shape[1],
            "has_map": record.has_map,
            "map_max": top if record.has_map else np.nan,
            "map_area_half": (float((record.heatmap >= top / 2).mean()) if top > 0 else 0.0)
            if record.has_map
            else np.nan,
            "has_bbox": record.bbox is not None,
        })
    return pd.DataFrame(rows).set_index("id")


def clickme_class_counts(
    records: pd.DataFrame, label_names: Sequence[str] | None = None, top: int | None = None
) -> pd.DataFrame:
    """Images per label (rows, those present, most images first) and split (columns) of
    :func:`clickme_record_table`'s table, with the ``total`` row last (over all labels); ``top`` keeps
    that many labels; ``label_names`` (e.g. ``ClickMe.label_names``) names the rows."""
    labels = records["label"]
    if label_names is not None:
        labels = labels.map(lambda k: label_names[k])
    table = pd.crosstab(labels.to_numpy(), records["split"].to_numpy(), margins=True, margins_name="total")
    body = table.drop(index="total").sort_values("total", ascending=False, kind="stable")
    table = pd.concat([body.head(top) if top is not None else body, table.loc[["total"]]])
    table.index.name, table.columns.name = "label", "split"
    return table


def clickme_samples(
    root: str | Path,
    n: int = 4,
    *,
    image_size: int | None = 224,
    blur: int = PAPER_BLUR,
    seed: int = 0,
) -> Figure:
    """Up to ``n`` random ClickMe images (all splits) with their map as stored and blurred by ``blur``
    (the loader's blur: at the stored size, before resizing to ``image_size``), over the image via
    :func:`attnlib.reporting.plots.map_grid`; rows name the image, its label and click count."""
    raw = ClickMe(root, None, image_size=image_size, blur=None)
    blurred = ClickMe(root, None, image_size=image_size, blur=blur)
    picks = subset_indices(len(raw), n, seed)
    images, maps, names = [], [], []
    for i in picks:
        item, smooth = raw[i], blurred[i]
        images.append(np.clip(item["img"].numpy().transpose(1, 2, 0), 0, 1))
        maps.append([item["map"][0].numpy(), smooth["map"][0].numpy()])
        clicks = f"{item['click_count']} clicks" if item["click_count"] >= 0 else "clicks not stored"
        names.append(f"{Path(str(item['id'])).name}\nlabel {item['lab']}, {clicks}")
    columns = ["map as stored", f"blurred {blur} x {blur} px"]
    fig = plots.map_grid(images, maps, row_titles=names, col_titles=columns)
    fig.suptitle("ClickMe: maps over their images", fontsize=10)
    fig.tight_layout()
    return fig
