"""Localisation of class activation maps in annotated regions (GG-CAM's Eq. 12) over a test loader."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from attnlib.evaluation.metrics import CamRule, cam_in_mask
from attnlib.methods.base import Method

#: Eq. 12's key prefix per ``cam_in_mask`` rule: the paper's peak cell, the public code's 3 x 3 neighbourhood.
CAM_RULE_KEYS: dict[CamRule, str] = {"peak": "interpretability", "neighbourhood": "interpretability_public"}


@torch.no_grad()
def cam_localisation_evaluator(method: Method, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Eq. 12 over a loader: the share of scored images whose CAM peak lies inside the organ.

    Runs ``method`` in eval mode on ``device`` (full precision, no autocast) and scores
    ``method.step(batch).outputs["omega"]`` against ``batch["masks"]`` with ``cam_in_mask``, once per rule of
    :data:`CAM_RULE_KEYS`. Returns per rule ``<prefix>`` (mean over all scored images, i.e. cardiomegaly and
    pneumonia) and ``<prefix>/cardiomegaly``, ``<prefix>/pneumonia`` (the paper reports per class): the paper's
    rule under ``interpretability``, the public code's under ``interpretability_public``; NaN where no image
    was scored.
    """
    method.to(device)
    method.eval()
    scores: dict[str, list[Tensor]] = {rule: [] for rule in CAM_RULE_KEYS}
    labels = []
    for batch in loader:
        batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        out = method.step(batch)
        if "omega" not in out.outputs or "masks" not in batch:
            raise KeyError(
                f"CAM localisation needs outputs['omega'] from {type(method).__name__}.step() and "
                "batch['masks'] from the dataset (EGDCXRSettings(masks=True))"
            )
        for rule, rule_scores in scores.items():
            rule_scores.append(cam_in_mask(out.outputs["omega"], batch["lab"], batch["masks"], rule=rule).cpu())
        labels.append(batch["lab"].cpu())
    label = torch.cat([torch.zeros(0, dtype=torch.long), *labels])
    result: dict[str, float] = {}
    for rule, prefix in CAM_RULE_KEYS.items():
        score = torch.cat([torch.zeros(0), *scores[rule]])
        result[prefix] = _mean(score[label != 0])
        for name, cls in (("cardiomegaly", 1), ("pneumonia", 2)):
            result[f"{prefix}/{name}"] = _mean(score[label == cls])
    return result


def _mean(values: Tensor) -> float:
    """Mean of a 1-D tensor; NaN when it is empty."""
    return values.mean().item() if len(values) else math.nan
