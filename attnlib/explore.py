"""Dataset summaries for the exploration notebooks: balance, DICOM headers, gaze statistics, cues."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency
from scipy.stats.contingency import association
from tqdm.auto import tqdm

from attnlib.data.dicom import dicom_metadata
from attnlib.data.egd_cxr import EGDCXR, MASK_FILES

#: Region of a fixation: the first mask (in this order) that contains it, else "outside organs".
REGION_ORDER = ("mediastinum", "aortic_knob", "left_lung", "right_lung")


def class_balance(ds: EGDCXR) -> pd.DataFrame:
    """Images per class (rows) and split (columns), with totals."""
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


def cue_association(truth: pd.DataFrame) -> pd.DataFrame:
    """How strongly the synthetic cue goes with the label in each split (synthetic data only).

    ``truth`` is the generator's ``synthetic_truth.csv``. Per split: the number of images, Cramér's V
    between cue and label (0 = independent, 1 = the cue gives the label away) and the p-value of
    the chi-square test of independence (no continuity correction).
    """
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
