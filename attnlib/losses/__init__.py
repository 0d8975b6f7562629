"""Supervision losses of the reproduced methods."""

from attnlib.losses.gg_cam import (
    PositiveScalar,
    balance_step,
    balanced_loss,
    public_code_map_mse,
    selective_mse,
    simulate_scalar_adam,
    weighted_terms,
)

__all__ = [
    "PositiveScalar",
    "balance_step",
    "balanced_loss",
    "public_code_map_mse",
    "selective_mse",
    "simulate_scalar_adam",
    "weighted_terms",
]
