"""ABN's training loss (Fukui et al.) and the edited-map fine-tuning loss of Mitsuhara et al. ("Embedding Human Knowledge into Deep Neural
Network via Attention Map", VISAPP 2021), Eqs. 1-3: ``L = L_abn + gamma * ||M' - M||_2``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from attnlib.models.abn import ABNOutput


def abn_loss(out: ABNOutput, labels: Tensor) -> Tensor:
    """ABN's training loss (Fukui et al., CVPR 2019, Sec. 3): ``L_abn = L_att + L_per``, the
    cross-entropies of the attention-branch and perception-branch logits against ``labels``."""
    return F.cross_entropy(out.attention_logits, labels) + F.cross_entropy(out.perception_logits, labels)


def map_distance(predicted: Tensor, edited: Tensor) -> Tensor:
    """Eq. 2, the map term: per-sample L2 norm ``||M' - M||_2`` over the map's pixels (B x 1 x h x w -> B).

    The norm itself, not its square and not a mean over pixels.
    """
    if predicted.shape != edited.shape:
        raise ValueError(
            f"predicted map {tuple(predicted.shape)} and edited map {tuple(edited.shape)} differ in shape"
        )
    return (edited - predicted).flatten(1).norm(p=2, dim=1)


def fine_tuning_loss(out: ABNOutput, labels: Tensor, edited: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    """Eq. 3: ``(L, map term)`` with ``L = L_abn + gamma * mean_b ||M'_b - M_b||_2`` (batch mean of Eq. 2),
    M being the attention branch's own map (``out.predicted_map``)."""
    distance = map_distance(out.predicted_map, edited).mean()
    return abn_loss(out, labels) + gamma * distance, distance
