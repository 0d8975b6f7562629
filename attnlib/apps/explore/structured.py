"""Structured images (paper 2): where the three data sets come from, and the synthetic structured set.

:func:`structured_sources` resolves the synthetic structured set (always generated), IDRiD and JAFFE (real
data, else labelled layout samples); :func:`structured_samples` and :func:`structured_layout` draw the
synthetic set with its relevant region and its spurious-cue box. IDRiD and JAFFE have their own modules.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from attnlib.apps.explore._figures import _box, _examples, _grid, _show
from attnlib.data.cache import ArrayCache
from attnlib.data.real.layout_samples import write_idrid_sample, write_jaffe_sample
from attnlib.data.synthetic.defaults import synthetic_structured
from attnlib.data.synthetic.structured import StructuredDataset, cue_box, region_box


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

    The synthetic structured set is always generated (``attnlib.data.synthetic.defaults.synthetic_structured``):
    the profile's knobs, with the spurious cue switched on or off by ``cue`` unless it is None. IDRiD
    and JAFFE: the explicit root, else ``<data_root>/idrid`` or ``<data_root>/jaffe`` when that folder
    exists, else a layout sample (:mod:`attnlib.data.real.layout_samples`, with a CSV row without an image,
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
