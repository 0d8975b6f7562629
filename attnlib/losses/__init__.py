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
from attnlib.losses.harmonizer import (
    class_saliency,
    gaussian_pyramid,
    harmonizer_loss,
    pyramid_mse,
    standardise_relu,
)
from attnlib.losses.rrr import annotation_mask, rrr_loss, rrr_penalty

__all__ = [
    "PositiveScalar",
    "balance_step",
    "balanced_loss",
    "public_code_map_mse",
    "selective_mse",
    "simulate_scalar_adam",
    "weighted_terms",
    "annotation_mask",
    "class_saliency",
    "gaussian_pyramid",
    "harmonizer_loss",
    "pyramid_mse",
    "rrr_loss",
    "rrr_penalty",
    "standardise_relu",
]
