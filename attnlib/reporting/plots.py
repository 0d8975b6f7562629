"""Figures shared by the notebooks: image overlays, scanpaths, dataset summaries, weight maps, curves."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from attnlib.data.real.egd_cxr import EGDCXR, MASK_FILES

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


def metric_by_arm(frame: pd.DataFrame, metric: str, *, arms: Sequence[str], title: str) -> Figure:
    """Box plot plus the individual seeds of ``metric`` for each arm (one column of ``frame`` per run)."""
    fig, ax = plt.subplots(figsize=(1.6 * len(arms) + 1, 3.2))
    _arm_boxes(ax, frame, metric, arms, title)
    fig.tight_layout()
    return fig


def metrics_by_arm(frame: pd.DataFrame, metrics: Mapping[str, str], *, arms: Sequence[str], title: str) -> Figure:
    """:func:`metric_by_arm` for several metrics side by side: one panel per column of ``metrics`` (column -> panel
    title), sharing the arms' axis."""
    fig, axes = plt.subplots(
        1, len(metrics), figsize=((1.3 * len(arms) + 0.8) * len(metrics), 3.6), squeeze=False
    )
    for ax, (metric, panel) in zip(axes[0], metrics.items(), strict=True):
        _arm_boxes(ax, frame, metric, arms, textwrap.fill(panel, 40))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _arm_boxes(ax: Axes, frame: pd.DataFrame, metric: str, arms: Sequence[str], title: str) -> None:
    """On ``ax``: a box of ``metric`` per arm with its seeds as dots."""
    values = [frame.loc[frame["arm"] == arm, metric].dropna().to_numpy() for arm in arms]
    ax.boxplot(values, widths=0.5, showfliers=False)
    for k, vals in enumerate(values, start=1):
        ax.scatter(np.full(len(vals), k) + np.linspace(-0.08, 0.08, len(vals)), vals, s=14, zorder=3)
    ax.set_xticks(range(1, len(arms) + 1), [a.replace(" (", "\n(") for a in arms], fontsize=8)
    ax.set_title(title, fontsize=10)


def curriculum_curves(history: pd.DataFrame, *, title: str) -> Figure:
    """Eq. 11 over training: sigma_sm, sigma_ce, alpha, and the two weighted loss terms (log scale)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    for name in ("sigma_sm", "sigma_ce", "alpha"):
        if name in history:
            left.plot(history["epoch"], history[name], marker=".", label=name)
    left.set_yscale("log")
    left.set_xlabel("epoch")
    left.legend(fontsize=8, frameon=False)
    right.plot(history["epoch"], history["train_term_sm"], marker=".", label="L_sm / (2 sigma_sm^2)")
    right.plot(history["epoch"], history["train_term_ce"], marker=".", label="L_ce / sigma_ce^2")
    crossed = history.loc[history["train_term_sm"] <= history["train_term_ce"], "epoch"]
    if len(crossed):
        right.axvline(crossed.iloc[0], color="k", ls=":", lw=1, label=f"terms cross (epoch {crossed.iloc[0]})")
    right.set_yscale("log")
    right.set_xlabel("epoch")
    right.legend(fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def value_distribution(values: dict[str, np.ndarray], *, title: str, bins: int = 60) -> Figure:
    """Histograms (log count axis) of map values, one line per named set."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    lo = min(float(v.min()) for v in values.values())
    hi = max(float(v.max()) for v in values.values())
    edges = np.linspace(lo, hi, bins + 1)
    for name, vals in values.items():
        ax.hist(vals.ravel(), bins=edges, histtype="step", lw=1.2, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("value")
    ax.set_ylabel("count")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def map_grid(images: Sequence[np.ndarray], maps: Sequence[Sequence[np.ndarray]], *, row_titles: Sequence[str],
             col_titles: Sequence[str], suptitle: str | None = None) -> Figure:
    """Rows of overlays: image ``r`` with each of ``maps[r]`` (each rescaled to [0, 1]) stretched over it;
    ``suptitle`` (e.g. how the checkpoint was selected) above them."""
    n_rows, n_cols = len(images), len(col_titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.3 * n_cols, 2.6 * n_rows), squeeze=False)
    for r, (image, row_maps) in enumerate(zip(images, maps, strict=True)):
        for c, heat in enumerate(row_maps):
            span = float(heat.max() - heat.min())
            scaled = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
            show_overlay(axes[r, c], image, scaled, title=col_titles[c] if r == 0 else None)
        axes[r, 0].text(-0.08, 0.5, row_titles[r], transform=axes[r, 0].transAxes, rotation=90,
                        va="center", ha="right", fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9, wrap=True)
    fig.tight_layout()
    return fig


def weight_maps(maps: Sequence[np.ndarray], titles: Sequence[str], region_mask: np.ndarray | None = None,
                *, columns: int = 4) -> Figure:
    """Input weight maps (each on its own colour scale, with a colour bar), the true region outlined in white."""
    n = len(maps) + (region_mask is not None)
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.5 * rows), squeeze=False)
    panels = list(zip(maps, titles, strict=True))
    if region_mask is not None:
        panels.insert(0, (region_mask.astype(float), "true relevant region"))
    for ax, (values, title) in zip(axes.flat, panels):
        shown = ax.imshow(values, cmap="viridis")
        if region_mask is not None:
            ax.contour(region_mask, levels=[0.5], colors="white", linewidths=0.8)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
        ax.set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def selection_curves(cv_curve: pd.Series, test_curve: pd.Series, selected: Sequence[int], *, title: str) -> Figure:
    """Mean validation accuracy of the CV folds and the final fit's test accuracy per epoch, selected epochs marked."""
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(cv_curve.index, cv_curve.to_numpy(), marker=".", label="mean CV validation accuracy")
    ax.plot(test_curve.index, test_curve.to_numpy(), marker=".", label="test accuracy (final fit)")
    ax.scatter(selected, test_curve.reindex(selected).to_numpy(), s=40, facecolors="none", edgecolors="k",
               zorder=3, label=f"{len(selected)} selected epochs")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def epoch_curves(histories: dict[str, pd.DataFrame], column: str, *, title: str) -> Figure:
    """``column`` per epoch of each named run history (e.g. test accuracy of a model before and after fine-tuning)."""
    fig, ax = plt.subplots(figsize=(7, 3))
    for name, history in histories.items():
        ax.plot(history["epoch"], history[column], marker=".", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(column.replace("_", " "))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def sensitivity_panels(frame: pd.DataFrame, *, title: str) -> Figure:
    """One panel per knob (``knob``, ``value``, ``accuracy`` columns): every seed's value and the median, default marked."""
    knobs = list(dict.fromkeys(frame["knob"]))
    fig, axes = plt.subplots(1, len(knobs), figsize=(3.4 * len(knobs), 3), squeeze=False, sharey=True)
    for ax, knob in zip(axes[0], knobs):
        part = frame[frame["knob"] == knob]
        medians = part.groupby("value")["accuracy"].median()
        ax.scatter(part["value"], part["accuracy"], s=12, alpha=0.6, label="seeds")
        ax.plot(medians.index, medians.to_numpy(), marker="o", color="k", lw=1, label="median")
        for value in part.loc[part["default"], "value"].unique():
            ax.axvline(value, color="tab:red", ls=":", lw=1, label="default")
        if part["value"].min() > 0 and part["value"].max() / part["value"].min() >= 100:
            ax.set_xscale("log")
        ax.set_xlabel(knob)
    axes[0, 0].set_ylabel("test accuracy")
    axes[0, 0].legend(fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def histograms(values: dict[str, np.ndarray], *, xlabel: str, title: str, bins: int = 30,
               marks: dict[str, float] | None = None, references: dict[str, float] | None = None) -> Figure:
    """Overlaid histograms (linear count axis, shared bins, NaNs dropped), one per named set; dashed vertical
    lines at the named ``marks`` (colours in the sets' order, e.g. their means) and dotted grey ones at the
    named ``references`` (e.g. values reported in a paper)."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    kept = {name: np.asarray(v, dtype=float).ravel() for name, v in values.items()}
    kept = {name: v[np.isfinite(v)] for name, v in kept.items()}
    pooled = np.concatenate([v for v in kept.values() if v.size] or [np.zeros(1)])
    edges = np.linspace(float(pooled.min()), float(pooled.max()) + 1e-9, bins + 1)
    for name, vals in kept.items():
        ax.hist(vals, bins=edges, alpha=0.5, label=f"{name} (n = {vals.size})")
    for k, (name, x) in enumerate((marks or {}).items()):
        ax.axvline(x, color=f"C{k % 10}", ls="--", lw=1.4, label=f"{name}: {x:.2f}")
    greys = ("0.15", "0.5", "0.7")
    for k, (name, x) in enumerate((references or {}).items()):
        ax.axvline(x, color=greys[k % len(greys)], ls=":", lw=1.6, label=f"{name}: {x:.2f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def tradeoff(frame: pd.DataFrame, x: str, y: str, by: str, *, title: str) -> Figure:
    """Mean +- std over seeds of ``y`` against ``x`` for each value of ``by`` (e.g. lambda), joined in
    order and labelled, with the seeds as small dots: the trade-off of a sweep."""
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    stats = frame.groupby(by)[[x, y]].agg(["mean", "std"]).sort_index()
    ax.scatter(frame[x], frame[y], s=8, color="0.6", zorder=2)
    ax.errorbar(stats[(x, "mean")], stats[(y, "mean")], xerr=stats[(x, "std")], yerr=stats[(y, "std")],
                marker="o", capsize=3, zorder=3)
    for value, row in stats.iterrows():
        ax.annotate(f"{by} = {value:g}", (row[(x, "mean")], row[(y, "mean")]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def effect_grid(effects: pd.DataFrame, *, rows: str, columns: str, title: str, alpha: float = 0.05) -> Figure:
    """Heat map of ``effect`` (one row per cell of ``effects``, e.g. ``paired_effects``' frame) with ``rows`` down
    and ``columns`` across, in order of first appearance; a diverging colour scale centred at 0 with symmetric
    limits. Each cell reads the effect and ``*`` when ``p_holm < alpha``; a missing cell (or a NaN effect) reads
    ``n/a``. Two rows of ``effects`` for one cell are an error."""
    duplicated = effects.duplicated([rows, columns])
    if duplicated.any():
        raise ValueError(f"effects has several rows for ({rows}, {columns}) = "
                         f"{effects.loc[duplicated, [rows, columns]].drop_duplicates().values.tolist()}")
    row_names, column_names = list(dict.fromkeys(effects[rows])), list(dict.fromkeys(effects[columns]))
    indexed = effects.set_index([rows, columns])
    grid = indexed["effect"].unstack(columns).reindex(index=row_names, columns=column_names).to_numpy(float)
    p_holm = indexed["p_holm"].unstack(columns).reindex(index=row_names, columns=column_names).to_numpy(float)
    finite = np.abs(grid[np.isfinite(grid)])
    limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    fig, ax = plt.subplots(figsize=(1.1 * len(column_names) + 2.4, 0.5 * len(row_names) + 1.6))
    shown = ax.imshow(np.ma.masked_invalid(grid), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    for r in range(len(row_names)):
        for c in range(len(column_names)):
            text = "n/a" if not np.isfinite(grid[r, c]) else f"{grid[r, c]:+.3f}{'*' if p_holm[r, c] < alpha else ''}"
            ax.text(c, r, text, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(column_names)), [str(n) for n in column_names], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(row_names)), [str(n) for n in row_names], fontsize=8)
    ax.set_xlabel(columns)
    ax.set_ylabel(rows)
    fig.colorbar(shown, ax=ax, label="effect")
    ax.set_title(f"{title}\n(* p_holm < {alpha:g})", fontsize=10)
    fig.tight_layout()
    return fig


def accuracy_alignment(frame: pd.DataFrame, *, x: str, y: str, by: str, title: str) -> Figure:
    """One point per row of ``frame`` (``y`` against ``x``; rows missing either are left out), coloured by ``by``,
    with a legend."""
    kept = frame.dropna(subset=[x, y])
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for k, (name, part) in enumerate(kept.groupby(by, sort=False)):
        ax.scatter(part[x], part[y], s=18, color=f"C{k % 10}", label=str(name), alpha=0.8)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title, fontsize=10)
    ax.legend(title=by, fontsize=8, frameon=False, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig
