"""Figures shared by the notebooks: image overlays, scanpaths, dataset summaries."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from attnlib.data.egd_cxr import EGDCXR, MASK_FILES

MASK_COLOURS = {
    "left_lung": "tab:cyan",
    "right_lung": "tab:blue",
    "mediastinum": "tab:red",
    "aortic_knob": "tab:orange",
}


def show_overlay(
    ax: Axes,
    image: np.ndarray,
    heat: np.ndarray | None = None,
    *,
    extent: tuple[float, float, float, float] | None = None,
    alpha: float = 0.45,
    cmap: str = "jet",
    title: str | None = None,
) -> None:
    """A grey image with an optional heat map stretched over it (same ``extent``), axes off."""
    ext = extent or (0, image.shape[1], image.shape[0], 0)
    ax.imshow(image, cmap="gray", extent=ext, vmin=0, vmax=1)
    if heat is not None:
        ax.imshow(heat, cmap=cmap, alpha=alpha, extent=ext, vmin=0, vmax=1, interpolation="bilinear")
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def gaze_examples(ds: EGDCXR, indices: Sequence[int]) -> Figure:
    """Per image: the scanpath (fixations sized by duration, in time order), the heat map, the masks."""
    fig, axes = plt.subplots(len(indices), 3, figsize=(9, 3.2 * len(indices)), squeeze=False)
    for row, i in zip(axes, indices, strict=True):
        img = ds.image(i)
        h, w = ds.original_shape(i)
        extent = (0, w, h, 0)
        name = ds.label_names[ds.labels[i]]
        pts = ds.gaze_points(i)
        show_overlay(row[0], img, extent=extent, title=f"{name}: scanpath ({len(pts)} fixations)")
        row[0].plot(pts["x"], pts["y"], "-", color="yellow", lw=0.6, alpha=0.7)
        row[0].scatter(
            pts["x"],
            pts["y"],
            s=200 * pts["duration"] / pts["duration"].max(),
            c="yellow",
            edgecolors="k",
            linewidths=0.4,
            alpha=0.8,
        )
        show_overlay(row[1], img, ds.heatmap(i, img.shape), extent=extent, title="heat map (Algorithm 1)")
        show_overlay(row[2], img, extent=extent, title="organ masks")
        masks = ds.masks(i, img.shape)
        for k, mask_name in enumerate(MASK_FILES):
            if masks[k].any():
                row[2].contour(
                    masks[k],
                    levels=[0.5],
                    colors=MASK_COLOURS[mask_name],
                    linewidths=1.0,
                    extent=extent,
                    origin="upper",
                )
    handles = [plt.Line2D([], [], color=c, label=n) for n, c in MASK_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def grouped_bars(table: pd.DataFrame, *, ylabel: str, title: str) -> Figure:
    """Bars of a (groups x series) table, one colour per column."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    table.plot.bar(ax=ax, rot=0, width=0.8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig
