"""Private drawing helpers of the exploration figures: example picks, image panels, class grids, outlines.

Images are C x H x W in [0, 1], drawn with pixel edges on integer coordinates so that boxes and mask
outlines line up with the pixels. Figures are returned, never shown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


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


def _outline(ax: Axes, mask: np.ndarray, colour: str) -> None:
    """Outline a boolean mask on pixel-edge coordinates (as :func:`_show` draws images)."""
    centres = np.arange(mask.shape[0]) + 0.5, np.arange(mask.shape[1]) + 0.5
    ax.contour(centres[1], centres[0], mask.astype(float), levels=[0.5], colors=colour, linewidths=1.0)
