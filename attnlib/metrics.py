"""Classification metrics as reported by the papers: accuracy, Hand & Till AUC, per-class precision/recall."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

log = logging.getLogger(__name__)


def classification_metrics(labels: ArrayLike, probs: ArrayLike, label_names: Sequence[str]) -> dict[str, Any]:
    """Metrics of class probabilities ``probs`` (n x k, rows sum to 1) against integer ``labels`` (n).

    Returns ``n``, ``accuracy`` (of the arg-max prediction), ``auc``, ``precision/<name>`` and
    ``recall/<name>`` per class (0 where undefined) and ``confusion`` (k x k list of lists, rows =
    true class, columns = predicted). AUC: binary -> ROC AUC of the positive column; multi-class ->
    the Hand & Till (2001) mean over class pairs, ``roc_auc_score(multi_class="ovo",
    average="macro")``. When a class is absent from ``labels`` the AUC is undefined: NaN, with a warning.
    All values are plain Python numbers (JSON-ready).
    """
    y = np.asarray(labels)
    p = np.asarray(probs, dtype=np.float64)
    k = len(label_names)
    if p.ndim != 2 or p.shape != (len(y), k):
        raise ValueError(f"probs must have shape ({len(y)}, {k}) for {k} label names, got {p.shape}")
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must lie in 0..{k - 1}, got values {sorted(set(y.tolist()))}")
    pred = p.argmax(axis=1)
    classes = list(range(k))
    precision, recall, _, _ = precision_recall_fscore_support(
        y, pred, labels=classes, average=None, zero_division=0
    )
    result: dict[str, Any] = {
        "n": len(y),
        "accuracy": float(np.mean(pred == y)) if len(y) else float("nan"),
        "auc": _auc(y, p, label_names),
    }
    for name, prec, rec in zip(label_names, precision, recall, strict=True):
        result[f"precision/{name}"] = float(prec)
        result[f"recall/{name}"] = float(rec)
    result["confusion"] = confusion_matrix(y, pred, labels=classes).tolist()
    return result


def _auc(y: np.ndarray, p: np.ndarray, label_names: Sequence[str]) -> float:
    """Binary ROC AUC or Hand & Till multi-class AUC; NaN (logged) when a class has no sample."""
    absent = [name for c, name in enumerate(label_names) if not np.any(y == c)]
    if absent:
        log.warning(
            "AUC is undefined: no sample of class(es) %s among %d labels; reporting NaN", absent, len(y)
        )
        return float("nan")
    if len(label_names) == 2:
        return float(roc_auc_score(y, p[:, 1]))
    return float(
        roc_auc_score(y, p, multi_class="ovo", average="macro", labels=list(range(len(label_names))))
    )
