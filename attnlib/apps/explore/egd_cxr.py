"""EGD-CXR (paper 1): DICOM headers, gaze statistics (dwell per anatomical region) and the synthetic
generator's per-image ground truth (:func:`attnlib.data.synthetic.cxr.read_truth`, the input of
:func:`attnlib.apps.explore.common.cue_association`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from attnlib.core.progress import tqdm
from attnlib.data.real.dicom import dicom_metadata
from attnlib.data.real.egd_cxr import EGDCXR, MASK_FILES

#: Region of a fixation: the first mask (in this order) that contains it, else "outside organs".
REGION_ORDER = ("mediastinum", "aortic_knob", "left_lung", "right_lung")


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
