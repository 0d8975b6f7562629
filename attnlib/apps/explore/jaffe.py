"""JAFFE (paper 2): the ratings and the label they give (the emotion with the largest mean rating), its
balance against the posed expression, the files the loader kept and skipped, and sample faces."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from attnlib.apps.explore._figures import _examples, _grid, _show
from attnlib.data.real.jaffe import JAFFE, RATING_COLUMNS, read_ratings, scan_images

#: The emotion each JAFFE pose was meant to show (NE, neutral, has no rating column).
POSE_EMOTION = {
    "AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "SA": "sadness", "SU": "surprise",
}


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
