"""Label-balanced train/validation/test splits (written to a shareable CSV split file) and stratified folds."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from attnlib.core.io import atomic_write_text

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
#: GG-CAM's protocol: 70/10/20, per class.
GG_CAM_FRACTIONS = (0.7, 0.1, 0.2)


def balanced_split(
    ids: Sequence[str],
    labels: Sequence[int],
    seed: int,
    fractions: tuple[float, float, float] = GG_CAM_FRACTIONS,
) -> pd.DataFrame:
    """Split ``ids`` into train/val/test with the same class proportions in each part.

    Each class is shuffled with ``numpy.random.default_rng(seed)`` and cut at the rounded
    cumulative fractions, so every split holds ``round(f * n_class)`` items of each class
    (the remainder goes to the last split). Returns a frame ``id, label, split`` in input order.
    """
    if len(ids) != len(labels):
        raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique to be split")
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or (fr < 0).any() or not np.isclose(fr.sum(), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    labels_arr = np.asarray(labels)
    split = np.empty(len(ids), dtype=object)
    rng = np.random.default_rng(seed)
    for cls in np.unique(labels_arr):
        members = np.flatnonzero(labels_arr == cls)
        members = members[rng.permutation(len(members))]
        cuts = np.round(np.cumsum(fr)[:2] * len(members)).astype(int)
        for name, part in zip(SPLIT_NAMES, np.split(members, cuts), strict=True):
            split[part] = name
    return pd.DataFrame({"id": list(ids), "label": labels_arr, "split": split})


def save_split(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a split frame (``id, label, split``) as CSV, atomically."""
    missing = {"id", "label", "split"} - set(frame.columns)
    if missing:
        raise ValueError(f"split frame lacks columns {sorted(missing)}")
    return atomic_write_text(path, frame[["id", "label", "split"]].to_csv(index=False))


def load_split(path: str | Path, ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a split file; with ``ids``, check that it covers exactly those ids.

    Raises ``ValueError`` naming the file when a split name is unknown or ids are missing/extra.
    """
    path = Path(path)
    frame = pd.read_csv(path, dtype={"id": str, "split": str})
    bad = sorted(set(frame["split"]) - set(SPLIT_NAMES))
    if bad:
        raise ValueError(f"{path}: unknown split names {bad}; expected {SPLIT_NAMES}")
    if ids is not None:
        known, wanted = set(frame["id"]), set(ids)
        if wanted - known or known - wanted:
            raise ValueError(
                f"{path}: split file does not match the dataset "
                f"({len(wanted - known)} ids without a split, {len(known - wanted)} unknown ids)"
            )
    return frame


def stratified_folds(labels: Sequence[int], n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) index pairs of a shuffled, label-stratified k-fold split.

    ``sklearn.model_selection.StratifiedKFold(n_folds, shuffle=True, random_state=seed)``; raises
    ``ValueError`` naming the class when one has fewer members than folds.
    """
    labels_arr = np.asarray(labels)
    values, counts = np.unique(labels_arr, return_counts=True)
    small = {int(v): int(c) for v, c in zip(values, counts, strict=True) if c < n_folds}
    if small:
        raise ValueError(f"{n_folds}-fold split needs at least {n_folds} items per class; too few: {small}")
    folds = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
    return list(folds.split(np.zeros(len(labels_arr)), labels_arr))
