"""The neural harmonizer (Fel, Felipe, Linsley, Serre, NeurIPS 2022; methods.md 5): saliency aligned with
human maps.

    L = CE_smooth(0.1) + lambda * sum_{l < 5} MSE(P_l(z(S)), P_l(z(H))) + 1e-5 ||theta||^2

S = |d y_c / d x| (the true class's logit) reduced over channels by the mean, H the human map, z standardises
each map (zero mean, unit std over H x W) then keeps its positive part, and P_l is level l of a Gaussian
pyramid (level 0 the map itself, each next one blurred and downsampled by 2). The saliency is differentiated
in training (a double backward). The weight decay is the optimiser's.

The authors' public (TensorFlow) code also uses 5 levels with level 0 the map itself and the same blur kernel,
the 5-tap binomial ``[1, 4, 6, 4, 1] / 16`` per axis (a Gaussian of std 1). It differs in these choices; the
formula above is followed here:

- the saliency is the channel mean of the signed gradient, without the absolute value;
- after z(.), the human map is rescaled to the saliency map's maximum (a constant for autograd);
- the blur is a stride-2 convolution with zero ("SAME") padding, which darkens the border and, on even sizes,
  centres the samples on the odd positions; here the border is replicated (a constant map stays constant) and
  the even positions are kept;
- the five levels' MSEs are averaged (the sum divided by 5) rather than summed;
- images without a map are weighted 0 but still counted in each level's batch mean; here the mean is over the
  images that have one;
- the weight decay skips normalisation parameters, embeddings and class tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: The binomial approximation of a Gaussian (std 1) used for each pyramid blur, per axis.
BINOMIAL_5 = (1.0, 4.0, 6.0, 4.0, 1.0)


def standardise_relu(maps: Tensor, eps: float = 1e-6) -> Tensor:
    """z(.) of the harmonizer: each map (over the last two dims) minus its mean, divided by its population
    std (at least ``eps``, so a constant map gives zeros with finite gradients), then ReLU."""
    centred = maps - maps.mean(dim=(-2, -1), keepdim=True)
    std = centred.pow(2).mean(dim=(-2, -1), keepdim=True).clamp_min(eps**2).sqrt()
    return F.relu(centred / std)


def blur_downsample(maps: Tensor) -> Tensor:
    """One pyramid step on B x C x H x W maps: the separable 5-tap binomial blur (border replicated), then
    every second row and column from the first (ceil(H / 2) x ceil(W / 2))."""
    taps = torch.tensor(BINOMIAL_5, dtype=maps.dtype, device=maps.device)
    taps = taps / taps.sum()
    channels = maps.shape[1]
    padded = F.pad(maps, (2, 2, 2, 2), mode="replicate")
    rows = F.conv2d(padded, taps.view(1, 1, 5, 1).repeat(channels, 1, 1, 1), groups=channels)
    blurred = F.conv2d(rows, taps.view(1, 1, 1, 5).repeat(channels, 1, 1, 1), groups=channels)
    return blurred[..., ::2, ::2]


def gaussian_pyramid(maps: Tensor, levels: int = 5) -> list[Tensor]:
    """P_0 .. P_{levels-1} of B x C x H x W maps: level 0 is ``maps``, each next :func:`blur_downsample`."""
    if maps.dim() != 4:
        raise ValueError(f"maps must be B x C x H x W, got shape {tuple(maps.shape)}")
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    pyramid = [maps]
    for _ in range(levels - 1):
        pyramid.append(blur_downsample(pyramid[-1]))
    return pyramid


def pyramid_mse(a: Tensor, b: Tensor, levels: int = 5, scored: Tensor | None = None) -> Tensor:
    """``sum_l MSE(P_l(a), P_l(b))`` for B x 1 x H x W maps: per level, each image's mean squared difference,
    averaged over the ``scored`` images (B booleans; None: all). No scored image gives 0."""
    if a.shape != b.shape:
        raise ValueError(f"maps to compare must have one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    weights = torch.ones(len(a), device=a.device) if scored is None else scored.to(a.device, a.dtype)
    count = weights.sum().clamp_min(1)
    terms = [
        ((pa - pb).pow(2).flatten(1).mean(dim=1) * weights).sum() / count
        for pa, pb in zip(gaussian_pyramid(a, levels), gaussian_pyramid(b, levels), strict=True)
    ]
    return torch.stack(terms).sum()


def class_saliency(images: Tensor, logits: Tensor, labels: Tensor) -> Tensor:
    """S = |d y_c / d x| averaged over channels (B x 1 x H x W), y_c the true class's logit.

    ``images`` must require grad and ``logits`` be computed from them; the gradient of ``sum_n y_{n, c_n}`` is
    taken with ``create_graph=True`` so that a loss on S trains the weights.
    """
    if not images.requires_grad:
        raise ValueError("class_saliency needs images with requires_grad=True (logits computed from them)")
    true_logits = logits.gather(1, labels.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(true_logits, images, create_graph=True)
    return grad.abs().mean(dim=1, keepdim=True)


def harmonizer_loss(
    images: Tensor,
    logits: Tensor,
    labels: Tensor,
    human_maps: Tensor,
    weight: float,
    levels: int = 5,
    label_smoothing: float = 0.1,
    has_map: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(total, cross-entropy, map term) with ``total = CE_smooth + weight * sum_l MSE(P_l(z(S)), P_l(z(H)))``.

    ``human_maps`` (B x 1 x h x w) are resized bilinearly to the saliency's H x W if needed. The map term
    covers the images that have a map (``has_map``, B booleans, and a map that is not all zeros); the
    cross-entropy (with ``label_smoothing``) every image. ``weight`` 0 logs the map term without training it.
    """
    if weight < 0:
        raise ValueError(f"the map-loss weight must be >= 0, got {weight}")
    if human_maps.dim() != 4 or human_maps.shape[1] != 1:
        raise ValueError(f"human maps must be B x 1 x h x w, got shape {tuple(human_maps.shape)}")
    ce = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    saliency = class_saliency(images, logits, labels)
    human = human_maps.to(saliency.dtype)
    if human.shape[-2:] != saliency.shape[-2:]:
        human = F.interpolate(human, size=saliency.shape[-2:], mode="bilinear", align_corners=False)
    scored = human.flatten(1).amax(dim=1) > 0
    if has_map is not None:
        if has_map.shape != (len(human),):
            raise ValueError(
                f"has_map must hold one boolean per image ({len(human)}), got {tuple(has_map.shape)}"
            )
        scored = scored & has_map.to(human.device, torch.bool)
    term = pyramid_mse(standardise_relu(saliency), standardise_relu(human), levels, scored)
    return ce + weight * term, ce, term
