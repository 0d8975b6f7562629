"""CUB-200-2010 (paper 3): where the data come from (real or a labelled layout sample), class counts,
segmentations and boxes, and the bubbles: per-image statistics, density maps and their mass on the bird."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from attnlib.apps.explore._figures import _box, _examples, _grid, _outline, _show
from attnlib.data.cache import ArrayCache
from attnlib.data.maps.sources import bubble_map
from attnlib.data.real.cub import CUB200
from attnlib.data.real.layout_samples import write_cub_bubbles, write_cub_sample


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
    bubbles (:mod:`attnlib.data.real.layout_samples`) in a temporary folder that :meth:`CUBSources.cleanup`
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
    per worker), the bubble-density map (:func:`attnlib.data.maps.sources.bubble_map` at the item's size, each
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
