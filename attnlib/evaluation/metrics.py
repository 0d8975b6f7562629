"""Metrics as the papers report them: accuracy, Hand & Till AUC, precision/recall, CAM localisation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from scipy.stats import rankdata
from sklearn.metrics import (
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    top_k_accuracy_score,
)
from torch import Tensor

log = logging.getLogger(__name__)

#: EGD-CXR class index -> indices of the organ masks (``MASK_FILES`` order: left_lung, right_lung,
#: mediastinum, aortic_knob) that Eq. 12 scores it against: cardiomegaly -> heart (mediastinum),
#: pneumonia -> lungs (left or right). Normal (0) is not scored.
CAM_ORGANS: dict[int, tuple[int, ...]] = {1: (2,), 2: (0, 1)}
#: Eq. 12's hit rule (:func:`cam_in_mask`): the paper's peak cell, or the public code's 3 x 3 neighbourhood of it.
CamRule = Literal["peak", "neighbourhood"]


def classification_metrics(labels: ArrayLike, probs: ArrayLike, label_names: Sequence[str]) -> dict[str, Any]:
    """Metrics of class probabilities ``probs`` (n x k, rows sum to 1) against integer ``labels`` (n).

    Returns ``n``, ``accuracy`` (of the arg-max prediction), ``top5_accuracy`` (more than 5 classes only), ``auc``,
    ``auc_ovr``, ``precision/<name>`` and ``recall/<name>`` per class (0 where undefined) and ``confusion`` (k x k
    list of lists, rows = true class, columns = predicted). ``auc``: binary -> ROC AUC of the positive column;
    multi-class -> the Hand & Till (2001) one-vs-one macro mean over class pairs, ``roc_auc_score(multi_class="ovo",
    average="macro")``, the papers' AUC. ``auc_ovr``: the one-vs-rest macro mean, ``roc_auc_score(multi_class="ovr",
    average="macro")``, which GG-CAM's public code logs beside it; equal to ``auc`` for two classes. When a class
    is absent from ``labels`` both AUCs are undefined: NaN, with a warning. All values are plain Python numbers
    (JSON-ready).
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
        **_aucs(y, p, label_names),
    }
    if k > 5:
        result["top5_accuracy"] = (
            float(top_k_accuracy_score(y, p, k=5, labels=classes)) if len(y) else float("nan")
        )
    for name, prec, rec in zip(label_names, precision, recall, strict=True):
        result[f"precision/{name}"] = float(prec)
        result[f"recall/{name}"] = float(rec)
    result["confusion"] = confusion_matrix(y, pred, labels=classes).tolist()
    return result


def _aucs(y: np.ndarray, p: np.ndarray, label_names: Sequence[str]) -> dict[str, float]:
    """``auc`` (binary ROC AUC or Hand & Till one-vs-one) and ``auc_ovr`` (one-vs-rest), both macro; NaN (logged)
    when a class has no sample."""
    absent = [name for c, name in enumerate(label_names) if not np.any(y == c)]
    if absent:
        log.warning(
            "AUC is undefined: no sample of class(es) %s among %d labels; reporting NaN", absent, len(y)
        )
        return {"auc": float("nan"), "auc_ovr": float("nan")}
    if len(label_names) == 2:
        auc = float(roc_auc_score(y, p[:, 1]))
        return {"auc": auc, "auc_ovr": auc}
    classes = list(range(len(label_names)))
    return {
        key: float(roc_auc_score(y, p, multi_class=scheme, average="macro", labels=classes))
        for key, scheme in (("auc", "ovo"), ("auc_ovr", "ovr"))
    }


def cam_in_mask(omega: Tensor, labels: Tensor, masks: Tensor, rule: CamRule = "peak") -> Tensor:
    """Eq. 12, CAM localisation: 1 when argmax_ij of the true class's map lies inside its organ, else 0.

    ``omega`` (B x C x h x w) are the class activation maps, ``labels`` (B) the true classes of
    EGD-CXR (normal 0, cardiomegaly 1, pneumonia 2), ``masks`` (B x 4 x H x W, values in [0, 1], in
    ``MASK_FILES`` order) the organ masks at image resolution. The organ (:data:`CAM_ORGANS`) is the
    mediastinum for cardiomegaly and the union of both lungs for pneumonia; normal images are not
    scored (NaN). Scaling the organ mask to omega's grid (after the union, at image resolution): each
    grid cell gets the fraction of it that the mask covers (area average, ``adaptive_avg_pool2d``; its
    windows may overlap by one pixel when H or W is not a multiple of h or w), and the cell counts as
    inside when that fraction is >= 0.5. Ties of the maximum go to the first cell in row-major order (the
    first argmax, as ``torch.argmax`` and ``numpy.argmax`` of the flattened map).

    ``rule="peak"`` (the paper's Eq. 12): the peak cell itself must be inside. ``rule="neighbourhood"`` (the
    authors' public code, ``index_expand`` with n = 1): a hit when any cell of the 3 x 3 neighbourhood of the
    peak, cut off at the grid's edges, is inside; the organ is scaled the same way for both rules.
    Returns a float tensor (B) of 1, 0 or NaN on omega's device.
    """
    if rule not in ("peak", "neighbourhood"):
        raise ValueError(f"rule must be 'peak' or 'neighbourhood', got {rule!r}")
    if omega.dim() != 4 or masks.dim() != 4 or labels.shape != (omega.shape[0],):
        raise ValueError(
            f"expected omega B x C x h x w, labels B and masks B x 4 x H x W; got {tuple(omega.shape)}, "
            f"{tuple(labels.shape)} and {tuple(masks.shape)}"
        )
    b, _, h, w = omega.shape
    if masks.shape[:2] != (b, 4) or masks.shape[2] < h or masks.shape[3] < w:
        raise ValueError(
            f"masks must be {b} x 4 x H x W with H >= {h}, W >= {w} (omega's grid); got {tuple(masks.shape)}"
        )
    labels = labels.to(omega.device).long()
    unknown = sorted(set(labels.tolist()) - {0, *CAM_ORGANS})
    if unknown:
        raise ValueError(f"labels must be 0 (normal), 1 (cardiomegaly) or 2 (pneumonia), got {unknown}")
    masks = masks.to(omega.device, torch.float32)
    organ = torch.zeros(b, 1, *masks.shape[2:], dtype=torch.float32, device=omega.device)
    for label, channels in CAM_ORGANS.items():
        chosen = labels == label
        organ[chosen, 0] = masks[chosen][:, list(channels)].amax(dim=1)  # union at image resolution
    inside = (F.adaptive_avg_pool2d(organ, (h, w)) >= 0.5).float()
    if rule == "neighbourhood":  # padding of max_pool2d never wins: edges see only the cells that exist
        inside = F.max_pool2d(inside, kernel_size=3, stride=1, padding=1)
    inside = inside[:, 0] > 0
    peak = omega[torch.arange(b, device=omega.device), labels].flatten(1).argmax(dim=1)
    hit = inside.flatten(1).gather(1, peak[:, None])[:, 0].float()
    return torch.where(labels == 0, torch.full_like(hit, float("nan")), hit)


def spearman_per_image(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Spearman's rho between ``a[i]`` and ``b[i]`` over their pixels, per image (two N x ... arrays of the
    same shape; ties get average ranks, as ``scipy.stats.spearmanr``); NaN where either map is constant."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim < 2:
        raise ValueError(f"maps must be two N x ... arrays of one shape, got {x.shape} and {y.shape}")
    rx = rankdata(x.reshape(len(x), -1), axis=1)
    ry = rankdata(y.reshape(len(y), -1), axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denominator = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (rx * ry).sum(axis=1) / denominator, np.nan)


def human_alignment(model_maps: ArrayLike, human_maps: ArrayLike, ceiling: float, seed: int = 0) -> dict[str, float]:
    """GALA's human alignment: the mean per-image Spearman rho between model and human maps (N x H x W),
    as a fraction of the inter-rater reliability ``ceiling``, with the shuffled-pairs null (each model
    map against another image's human map, a random derangement drawn with ``seed``). Constant maps
    (rho undefined) are left out and counted in ``n_undefined``."""
    model, human = np.asarray(model_maps), np.asarray(human_maps)
    if not ceiling > 0:
        raise ValueError(f"the inter-rater ceiling must be positive, got {ceiling}")
    rho = spearman_per_image(model, human)
    n = len(rho)
    if n < 2:
        raise ValueError(f"human alignment needs at least 2 images (for the shuffled null), got {n}")
    rng = np.random.default_rng(seed)
    shift = rng.integers(1, n)
    other = (np.arange(n) + shift) % n  # a derangement: every image paired with another one
    null = spearman_per_image(model, human[other])
    mean = float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan")
    return {
        "rho": mean,
        "fraction_of_ceiling": mean / ceiling,
        "null_rho": float(np.nanmean(null)) if np.isfinite(null).any() else float("nan"),
        "ceiling": float(ceiling),
        "n": n,
        "n_undefined": int(np.isnan(rho).sum()),
    }
