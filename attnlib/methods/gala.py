"""Training method of the GALA paper: cross-entropy plus the ClickMe map loss on the supervised volumes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import nn

from attnlib.losses.clickme import Variant, clickme_loss, default_weight
from attnlib.methods.base import Method, StepOutput
from attnlib.models.gala import forward_with_volumes


class ClickMeSupervised(Method):
    """``CE + weight * ClickMe map loss`` (GALA Sec. 4) on ``forward_with_volumes(model, img)``: the GALA
    attention volumes, or a plain ResNet's layer3 activity volumes (the paper's no-attention control).

    ``weight`` None is the loss variant's (:func:`~attnlib.losses.clickme.default_weight`: 6 for the paper's
    loss, 1e-5 for the public code's). Batches carry the human map as ``map`` (B x 1 x H x W) and, optionally,
    ``has_map`` (B booleans): images without a map are left out of the map term (a batch without any gives
    0), while the cross-entropy covers every image; batches without ``map`` are scored with the
    cross-entropy alone. ``weight`` 0 trains with the cross-entropy and still logs the map term
    (``map_loss``), which is how "GALA without ClickMe" is trained. Output: ``logits``.
    """

    def __init__(self, model: nn.Module, weight: float | None = None, variant: Variant = "paper") -> None:
        super().__init__()
        weight = default_weight(variant) if weight is None else weight
        if weight < 0:
            raise ValueError(f"the map-loss weight must be >= 0, got {weight}")
        self.model, self.weight, self.variant = model, float(weight), variant

    def step(self, batch: Mapping[str, Any]) -> StepOutput:
        if "map" not in batch:
            logits = self.model(batch["img"])
            return StepOutput(
                losses={"loss": F.cross_entropy(logits, batch["lab"])}, outputs={"logits": logits}
            )
        logits, volumes = forward_with_volumes(self.model, batch["img"])
        total, ce, term = clickme_loss(
            logits, batch["lab"], volumes, batch["map"], self.weight, self.variant, batch.get("has_map")
        )
        return StepOutput(losses={"loss": total, "ce": ce, "map_loss": term}, outputs={"logits": logits})
