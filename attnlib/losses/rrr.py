"""Right for the Right Reasons (Ross, Hughes, Doshi-Velez, IJCAI 2017, Eq. 1; methods.md 5): an input-gradient
penalty.

    L = sum_n CE_n + lambda_1 * sum_n sum_d (A_nd * d/dx_nd sum_k log p_k(x_n))^2 + lambda_2 * ||theta||^2

A_nd = 1 on the input positions the model must not use (outside the human map), 0 elsewhere. The gradient is
of the log-probabilities summed over all classes (not the true class's only) and is itself differentiated in
training (a double backward). Here both sums over samples are batch means (:func:`rrr_loss`), and lambda_2 is
the optimiser's weight decay.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def annotation_mask(human_map: Tensor, threshold: float = 0.1, has_map: Tensor | None = None) -> Tensor:
    """A of Eq. 1 from human maps (B x 1 x H x W or B x H x W): 1 where the map is <= ``threshold`` times
    its image's maximum (outside the map: positions the model must not use), 0 inside; B x 1 x H x W floats,
    broadcast over the image channels by :func:`rrr_penalty`.

    Images without a map (``has_map`` False, B booleans; or an all-zero map) get A = 0 everywhere: no penalty.
    """
    maps = human_map if human_map.dim() == 4 else human_map[:, None]
    if maps.dim() != 4 or maps.shape[1] != 1:
        raise ValueError(f"human maps must be B x 1 x H x W or B x H x W, got shape {tuple(human_map.shape)}")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    peak = maps.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    scored = peak > 0
    if has_map is not None:
        if has_map.shape != (len(maps),):
            raise ValueError(
                f"has_map must hold one boolean per image ({len(maps)}), got {tuple(has_map.shape)}"
            )
        scored = scored & has_map.to(maps.device, torch.bool).view(-1, 1, 1, 1)
    return ((maps <= threshold * peak) & scored).float()


def rrr_penalty(images: Tensor, logits: Tensor, mask: Tensor) -> Tensor:
    """Per-sample penalty of Eq. 1 (B,): ``sum_d (A_nd * d/dx_nd sum_k log p_k(x_n))^2``.

    ``images`` (B x C x H x W) must require grad and ``logits`` (B x K) be computed from them; ``mask`` is A
    (B x 1 x H x W, broadcast over channels, or B x C x H x W). The input gradient of ``sum_n sum_k log p_k``
    is taken with ``create_graph=True`` so that the penalty trains the weights (double backward). Without
    cross-sample layers each image's gradient is that of its own log-probabilities; train-mode BatchNorm
    couples the samples through the batch statistics, as in any batched implementation.
    """
    if not images.requires_grad:
        raise ValueError("rrr_penalty needs images with requires_grad=True (the logits computed from them)")
    summed_log_probs = F.log_softmax(logits, dim=1).sum()
    (grad,) = torch.autograd.grad(summed_log_probs, images, create_graph=True)
    return (mask.to(grad.dtype) * grad).pow(2).flatten(1).sum(dim=1)


def rrr_loss(
    images: Tensor, logits: Tensor, labels: Tensor, mask: Tensor, lambda_1: float
) -> tuple[Tensor, Tensor, Tensor]:
    """(total, cross-entropy, penalty) of Eq. 1 with ``total = CE + lambda_1 * penalty``.

    The paper sums CE and the penalty over the samples; both are batch means here (the same objective
    divided by N, so lambda_1 keeps its meaning whatever the batch size). lambda_2 ||theta||^2 is left to the
    optimiser's weight decay. ``lambda_1`` 0 logs the penalty without training it.
    """
    if lambda_1 < 0:
        raise ValueError(f"lambda_1 must be >= 0, got {lambda_1}")
    ce = F.cross_entropy(logits, labels)
    penalty = rrr_penalty(images, logits, mask).mean()
    return ce + lambda_1 * penalty, ce, penalty
