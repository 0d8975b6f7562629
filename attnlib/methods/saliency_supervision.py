"""The two input-gradient reference methods of the benchmark (methods.md 5): Right for the Right Reasons and
the neural harmonizer. Both differentiate an input gradient, so a training step costs about one more forward
and backward than plain cross-entropy.

A batch carries ``img``, ``lab``, the human map ``map`` (B x 1 x S x S) and ``has_map`` (B booleans). Without
``map``, in eval mode (validation, prediction, and saliency explanations, which differentiate the logits
w.r.t. the batch's own images) or when gradients are off, a step is scored with the method's cross-entropy alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnlib.losses.harmonizer import harmonizer_loss
from attnlib.losses.rrr import annotation_mask, rrr_loss
from attnlib.methods.base import Method, StepOutput


class RightForRightReasons(Method):
    """``CE + lambda_1 * input-gradient penalty outside the human map`` (Ross et al. 2017, Eq. 1), on any
    ``model(img) -> logits``.

    A = 1 where the map is <= ``threshold`` times its maximum (:func:`~attnlib.losses.rrr.annotation_mask`);
    images without a map are not penalised. lambda_2 is the optimiser's weight decay. Losses: ``loss``,
    ``ce``, ``penalty`` (batch mean); output: ``logits``.
    """

    def __init__(self, model: nn.Module, lambda_1: float, threshold: float = 0.1) -> None:
        super().__init__()
        if lambda_1 < 0:
            raise ValueError(f"lambda_1 must be >= 0, got {lambda_1}")
        self.model, self.lambda_1, self.threshold = model, float(lambda_1), float(threshold)

    def step(self, batch: Mapping[str, Any]) -> StepOutput:
        if not (self.training and torch.is_grad_enabled()) or "map" not in batch:
            logits = self.model(batch["img"])
            ce = F.cross_entropy(logits, batch["lab"])
            return StepOutput(losses={"loss": ce, "ce": ce}, outputs={"logits": logits})
        images = batch["img"].detach().requires_grad_(True)
        logits = self.model(images)
        mask = annotation_mask(batch["map"], self.threshold, batch.get("has_map"))
        total, ce, penalty = rrr_loss(images, logits, batch["lab"], mask, self.lambda_1)
        return StepOutput(losses={"loss": total, "ce": ce, "penalty": penalty}, outputs={"logits": logits})


class NeuralHarmonizer(Method):
    """``CE_smooth + weight * sum_l MSE(P_l(z(S)), P_l(z(H)))`` (Fel et al. 2022) on any
    ``model(img) -> logits`` (:func:`~attnlib.losses.harmonizer.harmonizer_loss`); the weight decay is the
    optimiser's.

    Without a map term (no ``map``, eval mode, or gradients off) ``loss`` and ``ce`` are the label-smoothed
    cross-entropy. Losses: ``loss``, ``ce`` (label-smoothed), ``map_loss``; output: ``logits``.
    """

    def __init__(
        self, model: nn.Module, weight: float, levels: int = 5, label_smoothing: float = 0.1
    ) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"the map-loss weight must be >= 0, got {weight}")
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        self.model, self.weight = model, float(weight)
        self.levels, self.label_smoothing = int(levels), float(label_smoothing)

    def step(self, batch: Mapping[str, Any]) -> StepOutput:
        if not (self.training and torch.is_grad_enabled()) or "map" not in batch:
            logits = self.model(batch["img"])
            ce = F.cross_entropy(logits, batch["lab"], label_smoothing=self.label_smoothing)
            return StepOutput(losses={"loss": ce, "ce": ce}, outputs={"logits": logits})
        images = batch["img"].detach().requires_grad_(True)
        logits = self.model(images)
        total, ce, term = harmonizer_loss(
            images, logits, batch["lab"], batch["map"], self.weight, self.levels, self.label_smoothing,
            batch.get("has_map"),
        )
        return StepOutput(losses={"loss": total, "ce": ce, "map_loss": term}, outputs={"logits": logits})
