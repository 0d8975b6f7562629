"""Training methods: each turns a batch into named losses and outputs; the trainer never asks which."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class StepOutput:
    """What a method returns for one batch.

    ``losses`` holds scalar tensors, ``"loss"`` being the total that is optimised (the others are
    logged); ``outputs`` holds per-sample tensors, ``"logits"`` (B x classes) at least.
    """

    losses: dict[str, Tensor]
    outputs: dict[str, Tensor]


class Method(nn.Module, ABC):
    """Base of all training methods (baseline, GG-CAM, pixel attention, ABN, GALA).

    A batch is the default-collated dict of the dataset contract (``img``, ``lab``, ``id``, ...),
    already on the method's device. ``state_dict()`` of the method is what the trainer saves.
    """

    @abstractmethod
    def step(self, batch: Mapping[str, Any]) -> StepOutput:
        """Losses and outputs for ``batch`` (train or eval mode as set by the trainer)."""

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups; default: all trainable parameters at ``lr``.

        Override to give e.g. trainable loss scalars their own learning rate; a group with a
        ``"name"`` key has its learning rate logged as ``lr_<name>``.
        """
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def scalars(self) -> dict[str, float]:
        """Trainable scalars worth logging once per epoch (e.g. loss weights); default none."""
        return {}

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each training epoch (1-based), also after a resume; e.g. to freeze a part."""


class Classifier(Method):
    """Plain supervised classification: cross-entropy of ``model(img)`` against ``lab``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def step(self, batch: Mapping[str, Any]) -> StepOutput:
        logits = self.model(batch["img"])
        return StepOutput(losses={"loss": F.cross_entropy(logits, batch["lab"])}, outputs={"logits": logits})
