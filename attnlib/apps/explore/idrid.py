"""IDRiD Disease Grading (paper 2): split counts, both tasks' class balance, the paper's crop lines, and the
right-eye flip by the paper's list against the optic-disc check."""

from __future__ import annotations

from itertools import chain, zip_longest
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from attnlib.apps.explore._figures import _examples, _grid, _show
from attnlib.data.real.idrid import (
    ORIGINAL_WIDTH,
    SPLITS,
    TASK_COLUMNS,
    IDRiD,
    crop_bounds,
    laterality_table,
    read_fundus,
)


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

    :func:`attnlib.data.real.idrid.laterality_table` per split, with a first column ``split``: ``id, paper_right,
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
