"""Dataset summaries for the exploration notebooks.

EGD-CXR (paper 1): class balance, DICOM headers, gaze statistics, cue association. Structured images
(paper 2: the synthetic structured set, IDRiD Disease Grading, JAFFE): where the data come from, class
balance, sample grids (IDRiD with the crop lines, the right-eye flip before and after), the JAFFE
ratings, per-class mean and difference-from-mean images. CUB-200-2010 (paper 3): class counts,
segmentations and boxes, bubbles and their density maps. ClickMe (paper 4, GALA) and its ClickMe-like
synthetic default: maps over images, clicks per image, the blur, the players' inter-rater reliability, the
context cue per split. Figures are returned, never shown.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain, zip_longest
from pathlib import Path
from typing import Literal, Protocol

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse, Rectangle
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.stats import chi2_contingency
from scipy.stats.contingency import association
from attnlib.progress import tqdm

from attnlib import plots
from attnlib.data.cache import ArrayCache
from attnlib.data.clickme import PAPER_BLUR, PAPER_INTERRATER_NULL, PAPER_INTERRATER_RHO, ClickMe
from attnlib.data.cub import CUB200
from attnlib.data.defaults import synthetic_finegrained, synthetic_structured
from attnlib.data.dicom import dicom_metadata
from attnlib.data.egd_cxr import EGDCXR, MASK_FILES
from attnlib.data.idrid import (
    ORIGINAL_WIDTH,
    SPLITS,
    TASK_COLUMNS,
    IDRiD,
    crop_bounds,
    laterality_table,
    read_fundus,
)
from attnlib.data.jaffe import JAFFE, RATING_COLUMNS, read_ratings, scan_images
from attnlib.data.layout_samples import (
    write_clickme_sample,
    write_cub_bubbles,
    write_cub_sample,
    write_idrid_sample,
    write_jaffe_sample,
)
from attnlib.data.synthetic_finegrained import FineGrainedDataset
from attnlib.data.synthetic_structured import StructuredDataset, cue_box, region_box
from attnlib.map_sources import bubble_map, clickme_map, player_halves
from attnlib.metrics import spearman_per_image
from attnlib.profiles import load_profile

#: Region of a fixation: the first mask (in this order) that contains it, else "outside organs".
REGION_ORDER = ("mediastinum", "aortic_knob", "left_lung", "right_lung")
#: The emotion each JAFFE pose was meant to show (NE, neutral, has no rating column).
POSE_EMOTION = {
    "AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "SA": "sadness", "SU": "surprise",
}


class Labelled(Protocol):
    """What the summaries need of a dataset: attnlib's contract (items with ``img``) plus labels."""

    labels: np.ndarray
    label_names: list[str]
    metadata: pd.DataFrame

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, object]: ...


def class_balance(ds: Labelled) -> pd.DataFrame:
    """Images per class (rows) and split (columns, from ``metadata["split"]``), with totals."""
    table = pd.crosstab(
        pd.Categorical.from_codes(ds.labels, ds.label_names, validate=False),
        ds.metadata["split"].to_numpy(),
        margins=True,
        margins_name="total",
    )
    table.index.name, table.columns.name = "class", "split"
    return table


def dicom_headers(ds: EGDCXR) -> pd.DataFrame:
    """One row per image: photometric interpretation, transfer syntax, size, bits and windowing."""
    rows = []
    for i in tqdm(range(len(ds)), desc="DICOM headers", leave=False):
        meta = dicom_metadata(ds.dicom_path(i))
        rows.append({"dicom_id": ds.metadata.at[i, "dicom_id"], **meta})
    return pd.DataFrame(rows)


def gaze_statistics(ds: EGDCXR) -> pd.DataFrame:
    """Per image: fixation count, total dwell (s) and the share of dwell in each anatomical region.

    A fixation's region is looked up in the full-size masks at its pixel (see :data:`REGION_ORDER`).
    """
    rows = []
    index = {name: k for k, name in enumerate(MASK_FILES)}
    for i in tqdm(range(len(ds)), desc="gaze statistics", leave=False):
        pts = ds.gaze_points(i)
        shape = ds.original_shape(i)
        pts = pts[(pts["x"] < shape[1]) & (pts["y"] < shape[0])]
        masks = ds.masks(i, shape)
        ys, xs = pts["y"].to_numpy(dtype=int), pts["x"].to_numpy(dtype=int)
        region = np.full(len(pts), "outside organs", dtype=object)
        for name in reversed(REGION_ORDER):
            region[masks[index[name], ys, xs] > 0] = name
        dwell = pts["duration"].to_numpy()
        total = dwell.sum()
        row = {
            "dicom_id": ds.metadata.at[i, "dicom_id"],
            "class": ds.label_names[ds.labels[i]],
            "split": ds.metadata.at[i, "split"],
            "fixations": len(pts),
            "dwell_s": total,
        }
        for name in (*REGION_ORDER, "outside organs"):
            row[f"dwell_share/{name}"] = dwell[region == name].sum() / total if total > 0 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def cue_association(truth: pd.DataFrame, cue_col: str | None = None) -> pd.DataFrame:
    """How strongly the synthetic cue goes with the label in each split (synthetic data only).

    ``truth`` has columns ``split``, ``label`` and the cue: the EGD-CXR generator's
    ``synthetic_truth.csv`` (``cue_col`` None: ``cue_position`` if used, else ``cue_present``) or the
    structured set's labels (``cue_col="cue"``). Per split: the number of images, Cramér's V between
    cue and label (0 = independent, 1 = the cue gives the label away; NaN without a cue) and the
    p-value of the chi-square test of independence (no continuity correction).
    """
    if cue_col is None:
        cue_col = "cue_position" if truth["cue_position"].ge(0).any() else "cue_present"
    rows = []
    for split in [s for s in ("train", "val", "test") if s in set(truth["split"])]:
        part = truth[truth["split"] == split]
        table = pd.crosstab(part["label"], part[cue_col]).to_numpy()
        if min(table.shape) < 2:
            v = p = np.nan
        else:
            v = association(table, method="cramer", correction=False)
            p = chi2_contingency(table, correction=False).pvalue
        rows.append({"split": split, "images": len(part), "cue": cue_col, "cramers_v": v, "chi2_p": p})
    return pd.DataFrame(rows).set_index("split")


def read_truth(root: Path) -> pd.DataFrame | None:
    """The synthetic generator's per-image ground truth, or None for a real dataset."""
    path = Path(root) / "synthetic_truth.csv"
    return pd.read_csv(path) if path.is_file() else None


# --- where the structured-image data come from -------------------------------------------------


@dataclass
class StructuredSources:
    """The folders the structured-data exploration reads, and whether IDRiD / JAFFE are layout samples."""

    structured: Path
    idrid: Path
    jaffe: Path
    idrid_is_sample: bool
    jaffe_is_sample: bool
    samples: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def notice(self, name: Literal["structured", "idrid", "jaffe"]) -> str:
        """One line saying what ``name`` is: the synthetic set, real data, or a layout sample."""
        if name == "structured":
            return f"synthetic structured set (generated, not real data): {self.structured}"
        path = self.idrid if name == "idrid" else self.jaffe
        label = {"idrid": "IDRiD", "jaffe": "JAFFE"}[name]
        if self._is_sample(name):
            return (f"{label}: LAYOUT SAMPLE, NOT REAL DATA - a few drawn images in the real folder layout, "
                    f"written to {path}; set {name}_root (or data_root) to explore the real set")
        return f"{label}: real data from {path}"

    def cache(self, name: Literal["idrid", "jaffe"]) -> ArrayCache | None:
        """The preprocessing cache for real data; none for a layout sample (its folder is temporary)."""
        return None if self._is_sample(name) else ArrayCache()

    def cleanup(self) -> None:
        """Remove the layout samples' temporary folder (also done when the object is collected)."""
        if self.samples is not None:
            self.samples.cleanup()

    def _is_sample(self, name: Literal["idrid", "jaffe"]) -> bool:
        return self.idrid_is_sample if name == "idrid" else self.jaffe_is_sample


def structured_sources(
    profile: str | None = None,
    *,
    data_root: str | Path | None = None,
    idrid_root: str | Path | None = None,
    jaffe_root: str | Path | None = None,
    cue: bool | None = None,
) -> StructuredSources:
    """Resolve the three data sets of the structured-data exploration.

    The synthetic structured set is always generated (``attnlib.data.defaults.synthetic_structured``):
    the profile's knobs, with the spurious cue switched on or off by ``cue`` unless it is None. IDRiD
    and JAFFE: the explicit root, else ``<data_root>/idrid`` or ``<data_root>/jaffe`` when that folder
    exists, else a layout sample (:mod:`attnlib.data.layout_samples`, with a CSV row without an image,
    an image without a row, an unrated and a badly named TIFF) in a temporary folder removed by
    :meth:`StructuredSources.cleanup` or with the returned object.
    """
    idrid, jaffe = _real_root(idrid_root, data_root, "idrid"), _real_root(jaffe_root, data_root, "jaffe")
    samples = None
    if idrid is None or jaffe is None:
        samples = tempfile.TemporaryDirectory(prefix="attnlib-layout-samples-")
    tmp = Path(samples.name) if samples is not None else None
    return StructuredSources(
        structured=synthetic_structured(profile, **({} if cue is None else {"cue": cue})),
        idrid=idrid or write_idrid_sample(tmp / "IDRiD", row_without_image=True, image_without_row=True),
        jaffe=jaffe or write_jaffe_sample(tmp / "jaffe", unrated_image=True, badly_named_image=True),
        idrid_is_sample=idrid is None,
        jaffe_is_sample=jaffe is None,
        samples=samples,
    )


def _real_root(explicit: str | Path | None, data_root: str | Path | None, name: str) -> Path | None:
    """``explicit``, else ``<data_root>/<name>`` when that folder exists, else None."""
    if explicit is not None:
        return Path(explicit).expanduser()
    candidate = Path(data_root).expanduser() / name if data_root is not None else None
    return candidate if candidate is not None and candidate.is_dir() else None


# --- shared helpers for image grids ------------------------------------------------------------


def _examples(labels: np.ndarray, n_classes: int, per_class: int, seed: int) -> list[list[int]]:
    """Up to ``per_class`` random indices of each class (in index order), one list per class."""
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(n_classes):
        members = np.flatnonzero(labels == c)
        picks.append(sorted(rng.choice(members, min(per_class, len(members)), replace=False).tolist()))
    return picks


def _hwc(img: np.ndarray) -> np.ndarray:
    """C x H x W in [0, 1] as what ``imshow`` takes: H x W (one channel) or H x W x 3."""
    return img[0] if img.shape[0] == 1 else np.clip(img.transpose(1, 2, 0), 0.0, 1.0)


def _show(ax: Axes, img: np.ndarray, title: str | None = None) -> None:
    """A C x H x W image in [0, 1] with pixel edges on integer coordinates, axes off."""
    h, w = img.shape[-2:]
    ax.imshow(_hwc(img), cmap="gray", vmin=0, vmax=1, extent=(0, w, h, 0), interpolation="nearest")
    if title:
        ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def _grid(
    picks: list[list[int]],
    row_names: Sequence[str],
    draw: Callable[[Axes, int], None],
    *,
    title: str,
    panel: float = 1.9,
) -> Figure:
    """One row per class (named on the left), one panel per picked index, drawn by ``draw(ax, i)``."""
    rows = [(name, row) for name, row in zip(row_names, picks, strict=True) if row]
    n_cols = max(len(row) for _, row in rows)
    size = (max(panel * n_cols + 0.6, 6.0), panel * len(rows) + 0.6)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=size, squeeze=False)
    for ax_row, (name, row) in zip(axes, rows, strict=True):
        for ax in ax_row:
            ax.set_axis_off()
        for ax, i in zip(ax_row, row, strict=False):
            draw(ax, i)
        ax_row[0].text(-0.06, 0.5, name, transform=ax_row[0].transAxes, rotation=90, va="center", ha="right",
                       fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _box(ax: Axes, box: tuple[int, int, int, int], colour: str) -> None:
    """Outline a (row0, row1, col0, col1) end-exclusive box on pixel-edge coordinates."""
    r0, r1, c0, c1 = box
    ax.add_patch(Rectangle((c0, r0), c1 - c0, r1 - r0, fill=False, edgecolor=colour, linewidth=1.2))


# --- the synthetic structured set --------------------------------------------------------------


def structured_samples(ds: StructuredDataset, per_class: int = 4, seed: int = 0) -> Figure:
    """Random images per class, the relevant region outlined (green), with the cue on its box (orange)."""
    picks = _examples(ds.labels, len(ds.label_names), per_class, seed)
    cue = ds.config.cue

    def draw(ax: Axes, i: int) -> None:
        meta = ds.metadata.loc[i]
        _show(ax, ds.image(i), f"{meta['id']} ({meta['split']})" + (f", cue {meta['cue']}" if cue else ""))
        _box(ax, region_box(ds.config), "lime")
        if cue:
            _box(ax, cue_box(ds.config), "orange")

    title = "synthetic structured set: green = relevant region" + (", orange = spurious cue" if cue else "")
    return _grid(picks, ds.label_names, draw, title=title)


def structured_layout(ds: StructuredDataset) -> Figure:
    """The mean image with the region and cue boxes, and the stored region mask (``region_mask.png``)."""
    mean = np.mean([ds.image(i) for i in range(len(ds))], axis=0)
    fig, (left, right) = plt.subplots(1, 2, figsize=(6.4, 3.4))
    _show(left, mean, "mean image: region (green), cue position (orange)")
    _box(left, region_box(ds.config), "lime")
    _box(left, cue_box(ds.config), "orange")
    _show(right, ds.region_mask[None].astype(np.float32), "region_mask.png (the true relevant region)")
    fig.tight_layout()
    return fig


# --- per-class mean images -----------------------------------------------------------------------


def orientation_energy(img: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Phase-invariant local orientation: smoothed squared x-gradient minus squared y-gradient (1 x H x W).

    A grating or texture varying along x gives positive values, along y negative, whatever its phase, so
    class means of this map show orientation evidence that the class means of the pixels average away
    (the synthetic structured set's grating has a random phase). Channels are averaged first.
    """
    grey = np.asarray(img, dtype=np.float64).mean(axis=0)
    gy, gx = np.gradient(grey)
    return gaussian_filter(gx**2 - gy**2, sigma)[None]


def class_means(ds: Labelled, transform: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Per-class mean of the items' ``img`` (K x C x H x W, in label order); NaN for a class without any.

    ``transform`` maps each image (C x H x W) first, e.g. :func:`orientation_energy`.
    """
    sums: np.ndarray | None = None
    counts = np.zeros(len(ds.label_names))
    for i in tqdm(range(len(ds)), desc="class means", leave=False):
        item = ds[i]
        img = np.asarray(item["img"], dtype=np.float64)
        if transform is not None:
            img = transform(img)
        if sums is None:
            sums = np.zeros((len(ds.label_names), *img.shape))
        sums[item["lab"]] += img
        counts[item["lab"]] += 1
    if sums is None:
        raise ValueError("no images to average")
    with np.errstate(invalid="ignore"):
        return sums / counts[:, None, None, None]


def class_differences(means: np.ndarray) -> np.ndarray:
    """Each class mean minus the mean of the class means, averaged over channels (K x H x W).

    The mean of class means weighs classes equally, so an imbalanced set does not tilt the reference.
    """
    return np.nanmean(means - np.nanmean(means, axis=0, keepdims=True), axis=1)


def difference_energy(differences: np.ndarray) -> np.ndarray:
    """Root mean square over classes of :func:`class_differences` (H x W): where the class means differ."""
    return np.sqrt(np.nanmean(differences**2, axis=0))


def mean_difference_figure(
    means: np.ndarray, label_names: Sequence[str], *, region: np.ndarray | None = None, title: str = ""
) -> Figure:
    """Class means over their differences from the mean of class means.

    Top row: the class means and their mean. Bottom row: :func:`class_differences` (one symmetric
    colour scale, red above, blue below) and :func:`difference_energy`, ``region`` outlined when given.
    """
    diffs = class_differences(means)
    energy = difference_energy(diffs)
    k = len(label_names)
    fig, axes = plt.subplots(2, k + 1, figsize=(1.9 * (k + 1) + 0.4, 4.7), squeeze=False)
    for c, name in enumerate(label_names):
        _show(axes[0, c], means[c], f"{name}: mean")
    _show(axes[0, k], np.nanmean(means, axis=0), "mean of class means")
    limit = float(np.nanmax(np.abs(diffs))) or 1.0
    for c, name in enumerate(label_names):
        axes[1, c].imshow(diffs[c], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        axes[1, c].set_title(f"{name} - mean", fontsize=8)
        axes[1, c].set_axis_off()
    axes[1, k].imshow(energy, cmap="magma", interpolation="nearest")
    axes[1, k].set_title("difference energy", fontsize=8)
    axes[1, k].set_axis_off()
    if region is not None:
        for ax in axes[1]:
            ax.contour(region, levels=[0.5], colors="lime", linewidths=0.8)
    fig.suptitle(f"{title} (differences within ±{limit:.3f})", fontsize=10)
    fig.tight_layout()
    return fig


# --- IDRiD Disease Grading ---------------------------------------------------------------------


def idrid_split_counts(root: str | Path) -> pd.DataFrame:
    """Per official split: grading-CSV rows, images, rows without an image, images without a row, kept."""
    rows = {}
    for split in SPLITS:
        ds = IDRiD(root, split, cache=None)
        rows[split] = {
            "csv_rows": len(ds) + ds.n_rows_without_image,
            "images": len(ds) + ds.n_images_without_row,
            "csv_rows_without_image": ds.n_rows_without_image,
            "images_without_row": ds.n_images_without_row,
            "kept": len(ds),
        }
    table = pd.DataFrame(rows).T
    table.index.name = "split"
    return table


def idrid_balance(root: str | Path) -> pd.DataFrame:
    """Kept images per task and class (rows ``(task, class)``) and official split (columns), with totals.

    The classes are the grades read from both CSVs (retinopathy ``DR*``, macular-edema risk ``ME*``).
    """
    parts = []
    for task in TASK_COLUMNS:
        counts = pd.DataFrame({split: IDRiD(root, split, task, cache=None).class_counts for split in SPLITS})
        counts["total"] = counts.sum(axis=1)
        parts.append(counts.set_axis(pd.MultiIndex.from_product([[task], counts.index]), axis=0))
    table = pd.concat(parts)
    table.index.names, table.columns.name = ["task", "class"], "split"
    return table


def idrid_samples(ds: IDRiD, per_class: int = 3, seed: int = 0, width: int = 428) -> Figure:
    """Random photographs per class, uncropped and ``width`` px wide, with the paper's crop lines.

    The shaded sides outside the red lines are what the crop drops; titles give both grades.
    """
    picks = _examples(ds.labels, len(ds.label_names), per_class, seed)

    def draw(ax: Axes, i: int) -> None:
        meta = ds.metadata.loc[i]
        with Image.open(meta["path"]) as im:
            full_w, full_h = im.size
        size = (max(1, round(full_h * width / full_w)), width)
        img = read_fundus(meta["path"], crop=False, size=size)
        _show(ax, img, f"{meta['id']}: DR{meta['retinopathy']} ME{meta['macular_edema']}")
        x0, x1 = crop_bounds(width)
        for lo, hi, x in ((0, x0, x0), (x1, width, x1)):
            ax.axvspan(lo, hi, color="black", alpha=0.45, lw=0)
            ax.axvline(x, color="red", lw=1)

    names = [f"{name} ({ds.split})" for name in ds.label_names]
    title = "IDRiD as stored: the paper keeps the columns\nbetween the red lines (the shaded sides are cut)"
    return _grid(picks, names, draw, title=title, panel=2.3)


def laterality_check(root: str | Path) -> pd.DataFrame:
    """Every image of both splits: the paper's right-eye list against the optic-disc check.

    :func:`attnlib.data.idrid.laterality_table` per split, with a first column ``split``: ``id, paper_right,
    disc_x`` (0 = left edge), ``auto_right``, ``agree`` and ``problem`` (an image that cannot be decoded is
    kept with ``agree`` False and its file and error in ``problem``). Decodes every image at reduced scale.
    """
    tables = [laterality_table(root, split, progress=True).assign(split=split) for split in SPLITS]
    table = pd.concat(tables, ignore_index=True)
    return table[["split", *table.columns.drop("split")]]


def laterality_counts(laterality: pd.DataFrame) -> pd.DataFrame:
    """Per split: images, right eyes by the paper's list and by the optic disc, disagreements, and images that
    could not be decoded."""
    unreadable = laterality["problem"].notna()
    table = laterality.assign(disagree=~laterality["agree"] & ~unreadable, unreadable=unreadable)
    table = table.groupby("split", sort=False).agg(
        images=("id", "size"),
        paper_right=("paper_right", "sum"),
        auto_right=("auto_right", "sum"),
        disagreements=("disagree", "sum"),
        unreadable=("unreadable", "sum"),
    )
    return table.astype(int)


def _flip_picks(part: pd.DataFrame, n: int) -> list[str]:
    """Disagreements first, then paper right and left eyes in turn; at most ``n`` ids."""
    agree = part[part["agree"]]
    disagree = part.loc[~part["agree"], "id"].tolist()
    right = agree.loc[agree["paper_right"], "id"].tolist()
    left = agree.loc[~agree["paper_right"], "id"].tolist()
    return [*disagree, *(i for i in chain.from_iterable(zip_longest(right, left)) if i is not None)][:n]


def flip_figure(ds: IDRiD, laterality: pd.DataFrame, n: int = 4) -> Figure:
    """Up to ``n`` images of ``ds``'s split, disagreements first, before and after each right-eye rule.

    Per row: the image as stored (cropped and resized, the detected optic disc dotted), then after the
    flip of the paper's list and after the flip of the optic-disc check. ``laterality`` is
    :func:`laterality_check`'s table; ``ds`` gives the preprocessing (its ``flip`` is set per column).
    Images that could not be decoded (a ``problem`` in the table) are left out.
    """
    index = {image_id: i for i, image_id in enumerate(ds.metadata["id"])}
    readable = laterality["problem"].isna()
    part = laterality[(laterality["split"] == ds.split) & laterality["id"].isin(index) & readable]
    ids = _flip_picks(part, n)
    part = part.set_index("id")
    fig, axes = plt.subplots(len(ids), 3, figsize=(7.2, 2.5 * len(ids) + 0.4), squeeze=False)
    views = {mode: ds.with_settings(flip=mode) for mode in ("none", "paper", "auto")}
    x0, x1 = (x / ORIGINAL_WIDTH for x in crop_bounds(ORIGINAL_WIDTH)) if ds.settings.crop else (0.0, 1.0)
    for row, image_id in zip(axes, ids, strict=True):
        i, check = index[image_id], part.loc[image_id]
        stored = views["none"].image(i)
        _show(row[0], stored, f"{image_id} as stored")
        row[0].axvline((check["disc_x"] - x0) / (x1 - x0) * stored.shape[-1], color="yellow", ls=":", lw=1.2)
        for ax, mode, source in ((row[1], "paper", "paper list"), (row[2], "auto", "optic disc")):
            _show(ax, views[mode].image(i), f"{source}: {'flipped' if views[mode].flips(i) else 'kept'}")
        if not check["agree"]:
            row[0].set_title(f"{image_id} as stored - DISAGREE", fontsize=8, color="red")
    fig.suptitle(f"IDRiD {ds.split}: right eyes are mirrored to put every disc on the left", fontsize=10)
    fig.tight_layout()
    return fig


# --- JAFFE ---------------------------------------------------------------------------------------


def jaffe_ratings(ds: JAFFE) -> pd.DataFrame:
    """The ratings table with the label, one row per kept image (index ``id``).

    Columns: subject, posed expression, the six mean ratings, ``label`` (the emotion with the largest
    mean rating), ``top_rating``, ``margin`` over the runner-up, and ``pose_agrees`` (the label is the
    posed emotion; NA for neutral poses).
    """
    meta = ds.metadata.set_index("id")
    ratings = meta[list(RATING_COLUMNS)].to_numpy()
    ordered = np.sort(ratings, axis=1)
    table = meta[["subject", "pose", *RATING_COLUMNS]].copy()
    table["label"] = [ds.label_names[k] for k in ds.labels]
    table["top_rating"] = ordered[:, -1]
    table["margin"] = ordered[:, -1] - ordered[:, -2]
    posed = meta["pose"].map(POSE_EMOTION)
    table["pose_agrees"] = (posed == table["label"]).astype("boolean").mask(posed.isna())
    return table


def jaffe_balance(ds: JAFFE) -> pd.DataFrame:
    """Kept images per label (rows, every emotion) and posed expression (columns), with totals."""
    table = pd.crosstab(
        pd.Categorical.from_codes(ds.labels, ds.label_names), ds.metadata["pose"].to_numpy(),
        margins=True, margins_name="total", dropna=False,
    )
    table.index.name, table.columns.name = "label", "pose"
    return table


def jaffe_file_counts(ds: JAFFE) -> pd.Series:
    """What the loader found in ``ds.root``: how many files it kept, skipped and ignored.

    TIFFs named ``<SUBJ>.<POSE><n>.<idx>.tiff``, those skipped for lack of a ratings row, TIFFs named
    otherwise (ignored), images kept, and ratings rows without an image.
    """
    images, unmatched = scan_images(ds.root)
    ratings = read_ratings(ds.readme)
    return pd.Series({
        "tiffs_named_per_pattern": len(images),
        "skipped_without_ratings": int((~images["key"].isin(ratings["PIC"])).sum()),
        "ignored_named_otherwise": len(unmatched),
        "kept": len(ds),
        "ratings_rows_without_image": int((~ratings["PIC"].isin(images["key"])).sum()),
    }, name="files")


def jaffe_samples(ds: JAFFE, per_class: int = 4, seed: int = 0) -> Figure:
    """Random images per label with their file name, posed expression and top mean rating."""
    picks = _examples(ds.labels, len(ds.label_names), per_class, seed)

    def draw(ax: Axes, i: int) -> None:
        meta = ds.metadata.loc[i]
        top = RATING_COLUMNS[int(ds.labels[i])]
        _show(ax, ds.image(i)[None], f"{meta['id']}\npose {meta['pose']}, {top} {meta[top]:.2f}")

    return _grid(picks, ds.label_names, draw, title="JAFFE: rows = label (largest mean rating)")


# --- CUB-200-2010 and its bubbles ------------------------------------------------------------------


@dataclass
class CUBSources:
    """The CUB-200-2010 folder the exploration reads, its bubbles CSV (if any), and whether it is a sample."""

    root: Path
    bubbles: Path | None
    is_sample: bool
    samples: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def notice(self) -> str:
        """One line saying whether the data are real or a layout sample, and where the bubbles come from."""
        bubbles = f"bubbles from {self.bubbles}" if self.bubbles is not None else "no bubbles CSV"
        if self.is_sample:
            return (f"CUB-200-2010: LAYOUT SAMPLE, NOT REAL DATA - a few drawn birds and made-up bubbles "
                    f"in the real folder layout, written to {self.root}; set data_root to explore the real "
                    f"set ({bubbles})")
        return f"CUB-200-2010: real data from {self.root} ({bubbles})"

    def cache(self) -> ArrayCache | None:
        """The preprocessing cache for real data; none for a layout sample (its folder is temporary)."""
        return None if self.is_sample else ArrayCache()

    def cleanup(self) -> None:
        """Remove the layout sample's temporary folder (also done when the object is collected)."""
        if self.samples is not None:
            self.samples.cleanup()


def cub_sources(data_root: str | Path | None = None, bubbles: str | Path | None = None) -> CUBSources:
    """``data_root`` (the folder holding ``images/``, ``lists/``, ``annotations-mat/``) with ``bubbles``
    (default ``<data_root>/bubbles.csv`` when present); without ``data_root``, the CUB layout sample and its
    bubbles (:mod:`attnlib.data.layout_samples`) in a temporary folder that :meth:`CUBSources.cleanup`
    removes."""
    if data_root is not None:
        root = Path(data_root).expanduser()
        default = root / "bubbles.csv"
        found = Path(bubbles).expanduser() if bubbles is not None else default if default.is_file() else None
        return CUBSources(root, found, is_sample=False)
    samples = tempfile.TemporaryDirectory(prefix="attnlib-cub-sample-")
    tmp = Path(samples.name)
    root = write_cub_sample(tmp / "CUB_200_2010")
    return CUBSources(root, write_cub_bubbles(root / "bubbles.csv"), is_sample=True, samples=samples)


def cub_class_counts(datasets: Sequence[CUB200]) -> pd.DataFrame:
    """Images per class (rows, class order) and split (columns), with totals."""
    table = pd.DataFrame({ds.split: ds.class_counts for ds in datasets})
    table["total"] = table.sum(axis=1)
    table.loc["total"] = table.sum(axis=0)
    table.index.name, table.columns.name = "class", "split"
    return table


def _scaled_box(ds: CUB200, i: int) -> tuple[float, float, float, float]:
    """The annotation's bbox (read as inclusive pixels of the original) as an end-exclusive
    (row0, row1, col0, col1) box at the item's size."""
    height, width = ds.original_size(i)
    box = ds.annotation(i).bbox
    sy, sx = ds.image_size / height, ds.image_size / width
    return box.top * sy, (box.bottom + 1) * sy, box.left * sx, (box.right + 1) * sx


def _outline(ax: Axes, mask: np.ndarray, colour: str) -> None:
    """Outline a boolean mask on pixel-edge coordinates (as :func:`_show` draws images)."""
    centres = np.arange(mask.shape[0]) + 0.5, np.arange(mask.shape[1]) + 0.5
    ax.contour(centres[1], centres[0], mask.astype(float), levels=[0.5], colors=colour, linewidths=1.0)


def cub_samples(ds: CUB200, per_class: int = 3, seed: int = 0, max_classes: int = 5) -> Figure:
    """Random images of the first ``max_classes`` classes with the segmentation outlined (lime) and the
    annotation's bounding box (orange), both scaled from the original to the item's size."""
    picks = _examples(ds.labels, len(ds.label_names), per_class, seed)[:max_classes]

    def draw(ax: Axes, i: int) -> None:
        height, width = ds.original_size(i)
        _show(ax, ds.image(i), f"{Path(ds.metadata.at[i, 'id']).stem}\n{width} x {height} px")
        _outline(ax, ds.segmentation(i), "lime")
        _box(ax, _scaled_box(ds, i), "orange")

    title = f"CUB-200-2010 {ds.split}: segmentation (lime), bounding box (orange)"
    return _grid(picks, ds.label_names[:max_classes], draw, title=title, panel=2.1)


def bubble_statistics(bubbles: pd.DataFrame, datasets: Sequence[CUB200]) -> pd.DataFrame:
    """Per image of ``datasets`` (bubbles of other images are left out, as ``verify_cub`` counts them):
    bubbles, workers, bubbles per worker and the median radius (original pixels)."""
    listed = {rel for ds in datasets for rel in ds.metadata["id"]}
    table = bubbles[bubbles["image"].isin(listed)].groupby("image").agg(bubbles=("x", "size"), workers=("worker", "nunique"),
                                         median_radius=("radius", "median"))
    table["bubbles_per_worker"] = table["bubbles"] / table["workers"]
    return table


def bubble_figure(ds: CUB200, bubbles: pd.DataFrame, n: int = 4, bandwidth: float | None = None) -> Figure:
    """Up to ``n`` images of ``ds`` that have bubbles, one row each: the image with every bubble (one colour
    per worker), the bubble-density map (:func:`attnlib.map_sources.bubble_map` at the item's size, each
    bubble's radius as bandwidth unless ``bandwidth`` original pixels) and the map over the image with the
    segmentation outlined."""
    index = {rel: i for i, rel in enumerate(ds.metadata["id"])}
    images = [rel for rel in dict.fromkeys(bubbles["image"]) if rel in index][:n]
    if not images:
        raise ValueError(f"no bubbles for the {ds.split} images")
    fig, axes = plt.subplots(len(images), 3, figsize=(7.4, 2.5 * len(images) + 0.4), squeeze=False)
    size = ds.image_size
    for row, rel in zip(axes, images, strict=True):
        i, part = index[rel], bubbles[bubbles["image"] == rel]
        height, width = ds.original_size(i)
        density = bubble_map(part, (height, width), bandwidth, out_size=(size, size))
        _show(row[0], ds.image(i), f"{Path(rel).stem}: {len(part)} bubbles")
        colours = dict(zip(part["worker"].unique(), plt.cm.tab10.colors, strict=False))
        for b in part.itertuples():
            centre = ((b.x + 0.5) * size / width, (b.y + 0.5) * size / height)  # pixel centres, edge axes
            row[0].add_patch(Ellipse(centre, 2 * b.radius * size / width, 2 * b.radius * size / height,
                                     fill=False, edgecolor=colours.get(b.worker, "red"), linewidth=1.0))
        row[1].imshow(density, cmap="magma", vmin=0, vmax=1, extent=(0, size, size, 0))
        row[1].set_title("bubble density (KDE)", fontsize=8)
        row[1].set_axis_off()
        _show(row[2], ds.image(i), "density over image, bird outlined")
        row[2].imshow(density, cmap="magma", vmin=0, vmax=1, alpha=0.55, extent=(0, size, size, 0))
        _outline(row[2], ds.segmentation(i), "lime")
    fig.suptitle(f"CUB-200-2010 {ds.split}: bubbles (one colour per worker) and their density", fontsize=10)
    fig.tight_layout()
    return fig


def bubble_coverage(ds: CUB200, bubbles: pd.DataFrame, bandwidth: float | None = None) -> pd.DataFrame:
    """Per image of ``ds`` with bubbles: the share of the density map's mass on the bird (segmentation),
    and the bird's share of the image (what a map spread evenly would score)."""
    index = {rel: i for i, rel in enumerate(ds.metadata["id"])}
    rows = []
    for rel, part in bubbles[bubbles["image"].isin(list(index))].groupby("image", sort=False):
        i = index[rel]
        density = bubble_map(part, ds.original_size(i), bandwidth, out_size=(ds.image_size, ds.image_size))
        bird = ds.segmentation(i)
        rows.append({"image": rel, "mass_on_bird": float(density[bird].sum() / density.sum()),
                     "bird_area": float(bird.mean())})
    return pd.DataFrame(rows, columns=["image", "mass_on_bird", "bird_area"]).set_index("image")


# --- ClickMe (GALA) and its ClickMe-like synthetic default ----------------------------------------

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
    (:func:`attnlib.data.defaults.synthetic_finegrained`), its maps blurred by ``blur_kernel`` (None: the
    profile's ``gala.blur_kernel``, the paper's 49 px on 256-px images scaled to the image size). ClickMe:
    ``data_root`` (a folder of npz or TFRecord files, or one TFRecord file), else the layout sample of
    :func:`attnlib.data.layout_samples.write_clickme_sample` in ``sample_form`` ("raw": the GALA-era
    float32 TFRecords with click counts) in a temporary folder removed by :meth:`ClickMeSources.cleanup`.
    """
    kernel = int(load_profile(profile)["gala"]["blur_kernel"]) if blur_kernel is None else int(blur_kernel)
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


def _kernel_name(kernel: int | None) -> str:
    return "no blur" if kernel is None else f"{kernel} x {kernel} px"


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
    :func:`attnlib.map_sources.clickme_map` map's mass, blurred by ``blur_kernel``, inside the part and
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


def _half_maps(
    ds: FineGrainedDataset, indices: Sequence[int], blur_kernel: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The :func:`clickme_map` maps of the two :func:`player_halves` of each image (two N x H x W arrays)."""
    size = (ds.config.size, ds.config.size)
    first, second = [], []
    for i in tqdm(indices, desc="player halves", leave=False):
        a, b = player_halves(ds.bubbles(i))
        first.append(clickme_map(a, size, blur_kernel))
        second.append(clickme_map(b, size, blur_kernel))
    return np.stack(first), np.stack(second)


@dataclass
class InterRater:
    """Split-half inter-rater reliability of ClickMe-style maps (see :func:`interrater_reliability`).

    ``per_image`` (index ``id``): ``split``, ``class``, ``rho`` (Spearman between the two halves' maps),
    ``partner`` (the image whose second half the null pairs with) and ``null_rho``.
    """

    per_image: pd.DataFrame
    blur_kernel: int | None
    seed: int

    @property
    def rho(self) -> float:
        """Mean per-image rho over the images where it is defined: the measured ceiling."""
        rho = self.per_image["rho"]
        return float(np.nanmean(rho)) if rho.notna().any() else float("nan")

    @property
    def null_rho(self) -> float:
        """Mean rho of the shuffled pairs (one image's first half against another image's second half)."""
        null = self.per_image["null_rho"]
        return float(np.nanmean(null)) if null.notna().any() else float("nan")

    def summary(self) -> pd.Series:
        """Images, mean rho and null, their standard deviations, undefined rhos, and the paper's values."""
        table = self.per_image
        return pd.Series({
            "images": len(table),
            "blur_kernel": _kernel_name(self.blur_kernel),
            "rho (measured ceiling)": self.rho,
            "rho sd": float(table["rho"].std()),
            "null rho (shuffled pairs)": self.null_rho,
            "null rho sd": float(table["null_rho"].std()),
            "undefined (constant map)": int(table["rho"].isna().sum()),
            "paper rho (real ClickMe)": CLICKME_PAPER_RELIABILITY,
            "paper null": CLICKME_PAPER_NULL,
        }, name="inter-rater reliability")

    def by_split(self) -> pd.DataFrame:
        """Images, mean rho and mean null rho per split."""
        return self.per_image.groupby("split", sort=False).agg(
            images=("rho", "size"), rho=("rho", "mean"), null_rho=("null_rho", "mean"))


def interrater_reliability(
    ds: FineGrainedDataset,
    blur_kernel: int | None,
    *,
    seed: int = 0,
    max_images: int | None = None,
) -> InterRater:
    """Split-half inter-rater reliability of the synthetic set's ClickMe-style maps, with its null.

    Per image: the players are split into two disjoint halves (:func:`attnlib.map_sources.player_halves`),
    each half's bubbles become a :func:`attnlib.map_sources.clickme_map` map blurred by ``blur_kernel``,
    and ``rho`` is Spearman's rank correlation between the two maps
    (:func:`attnlib.metrics.spearman_per_image`; NaN for a constant map). The null pairs image i's first
    half with image ``(i + s) mod n``'s second half, ``s`` drawn in [1, n) with ``seed``: the same
    derangement as :func:`attnlib.metrics.human_alignment`, so the mean rho is the ceiling that GALA's
    human alignment divides by. ``max_images`` keeps that many images drawn at random with ``seed`` (in
    index order); None keeps all. Real ClickMe stores one map per image, not the players' clicks, so this
    is measurable on the synthetic set only (the paper reports 0.58, null 0.18).
    """
    indices = _subset(len(ds), max_images, seed)
    if len(indices) < 2:
        raise ValueError(f"inter-rater reliability needs at least 2 images (for the null), "
                         f"got {len(indices)}")
    first, second = _half_maps(ds, indices, blur_kernel)
    n = len(indices)
    partner = (np.arange(n) + np.random.default_rng(seed).integers(1, n)) % n
    meta = ds.metadata.iloc[indices]
    per_image = pd.DataFrame({
        "id": meta["id"].to_numpy(),
        "split": meta["split"].to_numpy(),
        "class": [ds.label_names[int(k)] for k in meta["label"]],
        "rho": spearman_per_image(first, second),
        "partner": meta["id"].to_numpy()[partner],
        "null_rho": spearman_per_image(first, second[partner]),
    }).set_index("id")
    return InterRater(per_image, blur_kernel, seed)


def _subset(n_all: int, max_images: int | None, seed: int) -> list[int]:
    """``max_images`` of ``range(n_all)`` drawn at random with ``seed``, in index order; None: all."""
    if max_images is None or max_images >= n_all:
        return list(range(n_all))
    return sorted(np.random.default_rng(seed).choice(n_all, max_images, replace=False).tolist())


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
        masses = clickme_image_table(ds, kernel, _subset(len(ds), max_images, seed))
        rows.append({
            "blur": _kernel_name(kernel),
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
    the two player halves with their Spearman rho. Maps: :func:`attnlib.map_sources.clickme_map` blurred
    by ``blur_kernel``, each divided by its maximum."""
    picks = _subset(len(ds), n, seed)
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
                 f"(orange); maps {_kernel_name(blur_kernel)}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    return fig


def blur_figure(ds: FineGrainedDataset, kernels: Sequence[int | None], n: int = 3, seed: int = 0) -> Figure:
    """Up to ``n`` random images of the synthetic set with their ClickMe map at each of ``kernels``
    (columns), via :func:`attnlib.plots.map_grid` (each map rescaled to [0, 1])."""
    picks = _subset(len(ds), n, seed)
    size = (ds.config.size, ds.config.size)
    images = [ds.image(i).transpose(1, 2, 0) for i in picks]
    maps = [[clickme_map(ds.bubbles(i), size, k) for k in kernels] for i in picks]
    names = [f"{ds.metadata.at[i, 'id']} ({len(ds.bubbles(i))} clicks)" for i in picks]
    fig = plots.map_grid(images, maps, row_titles=names, col_titles=[_kernel_name(k) for k in kernels])
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
        title=f"inter-rater reliability of the synthetic maps ({_kernel_name(reliability.blur_kernel)})",
        marks={"mean rho": reliability.rho, "mean null": reliability.null_rho},
        references={"paper (real ClickMe) rho": CLICKME_PAPER_RELIABILITY, "paper null": CLICKME_PAPER_NULL},
    )


def clickme_record_table(ds: ClickMe, n: int | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per image read from a ClickMe copy (index ``id``): ``split``, ``label``, ``click_count``
    (-1 when the form does not store it), ``encoding``, stored ``height`` / ``width``, ``has_map`` (False:
    the record stores no map, and ``map_max`` / ``map_area_half`` are NaN), the stored map's ``map_max`` and
    ``map_area_half`` (share of pixels at or above half its maximum: how spread the map is) and ``has_bbox``. ``n`` images drawn at random with ``seed`` (in index order); None reads every one
    (on the real set that is every record: slow)."""
    indices = _subset(len(ds), n, seed)
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
    :func:`attnlib.plots.map_grid`; rows name the image, its label and click count."""
    raw = ClickMe(root, None, image_size=image_size, blur=None)
    blurred = ClickMe(root, None, image_size=image_size, blur=blur)
    picks = _subset(len(raw), n, seed)
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
