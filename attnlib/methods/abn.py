"""Training methods of the ABN paper: ABN itself (``L_abn``) and its fine-tuning with edited maps.

A batch of the fine-tuning set carries ``edited_map`` (B x 1 x h x w, from
:class:`attnlib.data.maps.edited_maps.EditedMapDataset`); batches without it (e.g. the test set scored after
every epoch) are scored with ``L_abn`` alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from attnlib.losses.abn import abn_loss, fine_tuning_loss, map_distance
from attnlib.methods.base import Method, StepOutput
from attnlib.models.abn import ABNet, ABNOutput, freeze_feature_extractor

Selection = Literal["misclassified", "lowest_confidence"]


class ABNClassifier(Method):
    """Trains an :class:`~attnlib.models.abn.ABNet` with ``L_abn`` (attention + perception cross-entropy).

    Outputs: ``logits`` (the perception branch's, the network's prediction), ``attention_logits`` and
    ``attention_map`` (M).
    """

    def __init__(self, model: ABNet) -> None:
        super().__init__()
        self.model = model

    def step(self, batch: Mapping[str, Any]) -> StepOutput:
        out = self.model(batch["img"])
        losses = {"loss": abn_loss(out, batch["lab"])}
        return StepOutput(losses=losses, outputs=_outputs(out))


class ABNFineTune(ABNClassifier):
    """Eqs. 1-3: ``L = L_abn + gamma * ||M' - M||_2`` on the attention and perception branches only.

    The feature extractor is frozen at construction (``freeze_feature_extractor``: no gradients, its
    BatchNorm statistics fixed), so the optimizer sees the branches' parameters only. ``gamma = 0``
    is the control: the same samples and schedule without the maps.
    """

    def __init__(self, model: ABNet, gamma: float) -> None:
        super().__init__(model)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        freeze_feature_extractor(model)

    def step(self, batch: Mapping[str, Any]) -> StepOutput:
        if "edited_map" not in batch:
            return super().step(batch)
        out = self.model(batch["img"])
        loss, distance = fine_tuning_loss(out, batch["lab"], batch["edited_map"], self.gamma)
        return StepOutput(losses={"loss": loss, "map_distance": distance}, outputs=_outputs(out))


class ABNStaged(ABNClassifier):
    """ABN trained with ``L_abn`` up to epoch ``fine_tune_from - 1``, then fine-tuned by Eqs. 1-3 on the human maps
    of the training batches (``map``, B x 1 x H x W), within one fit: the benchmark's form of the paper's two stages.

    From epoch ``fine_tune_from`` on (``on_epoch_start``, also after a resume) the feature extractor is frozen and
    each map is area-resampled to the attention map's grid and scaled to max 1, as the paper's edited maps are
    (``map_distance`` to M). Differences from the paper's protocol, stated: every training image with a map is
    fine-tuned on (the paper: misclassified or lowest-confidence samples, an editing budget), and the optimiser
    keeps its state across the switch (the paper starts a new fine-tuning run). Images without a map (``has_map``
    False) and batches without ``map`` are scored with ``L_abn``.
    """

    def __init__(self, model: ABNet, gamma: float, fine_tune_from: int) -> None:
        super().__init__(model)
        if gamma < 0 or fine_tune_from < 1:
            raise ValueError(f"gamma must be >= 0 and fine_tune_from >= 1, got {gamma}, {fine_tune_from}")
        self.gamma, self.fine_tune_from = float(gamma), int(fine_tune_from)
        self.fine_tuning = False

    def on_epoch_start(self, epoch: int) -> None:
        if epoch >= self.fine_tune_from and not self.fine_tuning:
            freeze_feature_extractor(self.model)
            self.fine_tuning = True

    def step(self, batch: Mapping[str, Any]) -> StepOutput:
        if not self.fine_tuning or "map" not in batch:
            return super().step(batch)
        out = self.model(batch["img"])
        edited = F.interpolate(batch["map"].float(), size=out.predicted_map.shape[-2:], mode="area")
        edited = edited / edited.flatten(1).amax(1).clamp_min(1e-12)[:, None, None, None]
        has_map = batch.get("has_map", torch.ones(len(edited), dtype=torch.bool, device=edited.device))
        distance = map_distance(out.predicted_map, edited)
        term = (distance * has_map).sum() / has_map.sum().clamp_min(1)
        loss = abn_loss(out, batch["lab"]) + self.gamma * term
        return StepOutput(losses={"loss": loss, "map_distance": term}, outputs=_outputs(out))


def select_samples(predictions: pd.DataFrame, rule: Selection, limit: int | None = None) -> list[str]:
    """Ids of the training samples to edit and fine-tune on, from ``Trainer.predict`` output.

    ``misclassified``: the wrongly predicted ones (in the frame's order); ``lowest_confidence``: all,
    ordered by the probability of the true class, lowest first (ties by id). ``limit`` keeps the first
    that many (an editing budget).
    """
    if rule not in Selection.__args__:
        raise ValueError(f"selection must be one of {Selection.__args__}, got {rule!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    probs = predictions.filter(regex=r"^prob_\d+$").to_numpy()
    labels = predictions["label"].to_numpy(int)
    if rule == "misclassified":
        ids = predictions.loc[predictions["pred"].to_numpy() != labels, "id"].astype(str).tolist()
    else:
        confidence = probs[np.arange(len(labels)), labels]
        order = np.lexsort((predictions["id"].astype(str).to_numpy(), confidence))
        ids = predictions["id"].astype(str).to_numpy()[order].tolist()
    return ids if limit is None else ids[:limit]


def _outputs(out: ABNOutput) -> dict[str, Tensor]:
    return {"logits": out.perception_logits, "attention_logits": out.attention_logits,
            "attention_map": out.predicted_map}


@torch.no_grad()
def table1_errors(
    model: ABNet, images: Tensor, labels: Tensor, maps: Tensor, device: torch.device
) -> dict[str, float]:
    """Top-1 error of ``images`` with M (before) and with ``maps`` fed in its place (after), no training."""
    model.to(device).eval()
    before = model(images.to(device)).perception_logits.argmax(1).cpu()
    after = model(images.to(device), attention_map=maps.to(device)).perception_logits.argmax(1).cpu()
    return {
        "n": len(labels),
        "error_before": float((before != labels).float().mean()),
        "error_after": float((after != labels).float().mean()),
    }
