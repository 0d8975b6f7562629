"""Per-class mean images and their differences from the mean of class means (structured set, IDRiD, JAFFE).

Where the class means differ is where the class evidence lies; :func:`orientation_energy` keeps the
orientation evidence that plain pixel means average away.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from scipy.ndimage import gaussian_filter

from attnlib.apps.explore._figures import _show
from attnlib.apps.explore.common import Labelled
from attnlib.core.progress import tqdm


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
