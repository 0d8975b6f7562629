"""The ClickMe map loss of GALA (Linsley et al., ICLR 2019, Sec. 4): attention volumes supervised by human maps.

Paper (the default, ``variant="paper"``)::

    L = CE + lambda * sum_l || R_l / ||R_l||_2  -  A_l / ||A_l||_2 ||_2

with A_l the attention volume of GALA layer l reduced to one channel by the column-wise L2 norm over
channels, R_l the human map resized (bicubic) to layer l's size, norms over the H x W positions of
one image, and the batch mean of the per-image terms; lambda = 6.

The public TensorFlow code differs (``variant="public"``, methods.md section 4): maps resized bilinearly
with aligned corners; the volume reduced by the mean of squares over channels; both maps normalised
by ``x / sqrt(sum x)``; ``0.5 * sum of squared differences`` per image; images without clicks masked
out; the layer terms averaged (not summed); weight 1e-5 (:data:`PUBLIC_WEIGHT`). The weight defaults to the
variant's (:func:`default_weight`).

In both variants, images without a human map (``has_map`` False, e.g. GALA-era ClickMe validation records)
are left out of the map term: it averages over the images that have one, and a batch with none gives 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Variant = Literal["paper", "public"]
#: lambda of the paper (chosen by its sweep over 0..18).
PAPER_WEIGHT = 6.0
#: The map-loss weight of the public code.
PUBLIC_WEIGHT = 1e-5
_EPS = 1e-12


def default_weight(variant: Variant) -> float:
    """The map-loss weight of ``variant``: the paper's lambda 6 or the public code's 1e-5."""
    _check_variant(variant)
    return PAPER_WEIGHT if variant == "paper" else PUBLIC_WEIGHT


def reduce_volume(volume: Tensor, variant: Variant = "paper") -> Tensor:
    """B x C x H x W -> B x H x W: the column-wise L2 norm over channels (paper) or the mean of squares
    over channels (public code)."""
    _check_variant(variant)
    if volume.dim() != 4:
        raise ValueError(f"attention volume must be B x C x H x W, got shape {tuple(volume.shape)}")
    return volume.norm(dim=1) if variant == "paper" else volume.pow(2).mean(dim=1)


def resize_map(human: Tensor, size: tuple[int, int], variant: Variant = "paper") -> Tensor:
    """Human maps (B x 1 x h x w or B x h x w) resized to ``size``: bicubic (paper; the cubic's overshoot
    below 0 is clipped, importance is non-negative) or bilinear with aligned corners (public code)."""
    _check_variant(variant)
    maps = human if human.dim() == 4 else human[:, None]
    if maps.dim() != 4 or maps.shape[1] != 1:
        raise ValueError(f"human maps must be B x 1 x h x w or B x h x w, got shape {tuple(human.shape)}")
    if variant == "paper":
        out = F.interpolate(maps.float(), size=size, mode="bicubic", align_corners=False).clamp_min(0)
    else:
        out = F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=True)
    return out[:, 0]


def map_distance(reduced: Tensor, human: Tensor, variant: Variant = "paper") -> Tensor:
    """Per-image distance between a reduced attention map and a same-size human map (both B x H x W).

    Paper: ``|| R / ||R||_2 - A / ||A||_2 ||_2``; public code: ``0.5 * sum (R / sqrt(sum R) - A / sqrt(sum A))^2``.
    A map that is all zeros stays all zeros after normalisation.
    """
    _check_variant(variant)
    a, r = reduced.flatten(1), human.flatten(1).to(reduced.dtype)
    if variant == "paper":
        a = a / a.norm(dim=1, keepdim=True).clamp_min(_EPS)
        r = r / r.norm(dim=1, keepdim=True).clamp_min(_EPS)
        return (r - a).norm(dim=1)
    a = a / a.sum(dim=1, keepdim=True).clamp_min(_EPS).sqrt()
    r = r / r.sum(dim=1, keepdim=True).clamp_min(_EPS).sqrt()
    return 0.5 * (r - a).pow(2).sum(dim=1)


def clickme_map_loss(
    volumes: Sequence[Tensor], human: Tensor, variant: Variant = "paper", has_map: Tensor | None = None
) -> Tensor:
    """The map term of the ClickMe loss over the supervised layers' volumes (each B x C x H x W).

    Paper: the sum over layers of the mean of :func:`map_distance` over the images that have a map
    (``has_map``, B booleans; None: all). Public code: per layer the mean over the images that have a map
    and clicks (the others are masked out), then the mean over layers. A batch with no scored image gives 0.
    """
    if not volumes:
        raise ValueError("clickme_map_loss needs at least one attention volume")
    scored = torch.ones(len(human), dtype=torch.bool, device=human.device) if has_map is None else has_map
    if scored.shape != (len(human),):
        raise ValueError(f"has_map must hold one boolean per image ({len(human)}), got {tuple(scored.shape)}")
    scored = scored.to(human.device, torch.bool)
    if variant == "public":
        scored = scored & (human.flatten(1).sum(dim=1) > 0)
    # Volumes of one shape (e.g. all of ResNet-50's third stage) are scored in one pass and the human map
    # is resized once per size: a few large kernels instead of a few small ones per layer.
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, volume in enumerate(volumes):
        groups.setdefault(tuple(volume.shape[1:]), []).append(i)
    resized: dict[tuple[int, int], Tensor] = {}
    terms: list[Tensor] = [torch.empty(0)] * len(volumes)
    for shape, members in groups.items():
        size = (shape[-2], shape[-1])
        if size not in resized:
            resized[size] = resize_map(human, size, variant)
        reduced = reduce_volume(torch.stack([volumes[i] for i in members]).flatten(0, 1), variant)
        target = resized[size].repeat(len(members), 1, 1)
        distance = map_distance(reduced, target, variant).view(len(members), -1)  # layers x images
        per_layer = (distance * scored).sum(dim=1) / scored.sum().clamp_min(1)
        for k, i in enumerate(members):
            terms[i] = per_layer[k]
    stacked = torch.stack(terms)
    return stacked.sum() if variant == "paper" else stacked.mean()


def clickme_loss(
    logits: Tensor,
    labels: Tensor,
    volumes: Sequence[Tensor],
    human: Tensor,
    weight: float | None = None,
    variant: Variant = "paper",
    has_map: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(total, cross-entropy, map term) with ``total = CE + weight * map term``; ``weight`` None is the
    variant's (:func:`default_weight`), 0 reports the map term without training it. The cross-entropy
    covers every image, the map term those with a map (:func:`clickme_map_loss`)."""
    ce = F.cross_entropy(logits, labels)
    term = clickme_map_loss(volumes, human, variant, has_map)
    return ce + (default_weight(variant) if weight is None else weight) * term, ce, term


def _check_variant(variant: str) -> None:
    if variant not in ("paper", "public"):
        raise ValueError(f"ClickMe loss variant must be 'paper' or 'public', got {variant!r}")
