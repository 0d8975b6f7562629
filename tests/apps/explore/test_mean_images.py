"""Per-class mean images: orientation energy, class means and differences, and where they show evidence."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from scipy.ndimage import binary_dilation

from attnlib.apps.explore.mean_images import (
    class_differences,
    class_means,
    difference_energy,
    mean_difference_figure,
    orientation_energy,
)
from attnlib.data.synthetic.structured import map_region_auc


def test_orientation_energy_sign_and_phase_invariance():
    yy, xx = np.mgrid[0:32, 0:32].astype(float)
    for phase in (0.0, 1.0, 2.5):
        along_x = orientation_energy(np.cos(2 * np.pi * xx / 6 + phase)[None])[0, 8:-8, 8:-8]
        along_y = orientation_energy(np.cos(2 * np.pi * yy / 6 + phase)[None])[0, 8:-8, 8:-8]
        assert along_x.min() > 0 and along_y.max() < 0
        np.testing.assert_allclose(along_x.mean(), -along_y.mean(), rtol=1e-6)


def test_class_means_and_differences_show_the_evidence_region(structured_pair):
    ds, flat = structured_pair
    by_hand = np.mean([ds.image(i) for i in np.flatnonzero(ds.labels == 1)], axis=0)
    np.testing.assert_allclose(class_means(ds)[1], by_hand, atol=1e-6)
    # the grating's phase is random: pixel means average it away, orientation energy keeps it
    means = class_means(ds, orientation_energy)
    diffs = class_differences(means)
    np.testing.assert_allclose(diffs.sum(axis=0), 0.0, atol=1e-9)
    energy = difference_energy(diffs)
    flat_energy = difference_energy(class_differences(class_means(flat, orientation_energy)))
    mask = ds.region_mask
    # the two sets differ only inside the region (widened by the gradient and the smoothing's 4-sigma reach)
    outside = ~binary_dilation(mask, np.ones((3, 3), dtype=bool), iterations=5)
    np.testing.assert_allclose(energy[outside], flat_energy[outside], atol=1e-9)
    assert energy[mask].mean() > 1.5 * flat_energy[mask].mean()
    assert map_region_auc(energy, mask) > 0.8 and map_region_auc(flat_energy, mask) < 0.75
    fig = mean_difference_figure(means, ds.label_names, region=mask)
    k = len(ds.label_names)
    np.testing.assert_allclose(np.asarray(fig.axes[k + 1 + 2].images[0].get_array()), diffs[2])
    np.testing.assert_allclose(np.asarray(fig.axes[2 * k + 1].images[0].get_array()), energy)
    plt.close("all")
