"""Paper 2's losses: the L1 penalty of the global attention map and the penalised cross-entropy."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

Reduction = Literal["mean", "sum"]
REDUCTIONS: tuple[str, ...] = Reduction.__args__


def l1_penalty(weight_map: Tensor, reduction: Reduction = "mean") -> Tensor:
    """Paper 2's ``|M|_1`` (M > 0 after the sigmoid, but taken absolute): mean or sum over pixels."""
    magnitude = weight_map.abs()
    return magnitude.mean() if reduction == "mean" else magnitude.sum()


def penalised_loss(ce: Tensor, penalty: Tensor, weight: float) -> Tensor:
    """Paper 2's training loss ``mean CE + lambda |M|_1`` (the L1 baseline's with its own coefficient)."""
    return ce + weight * penalty
