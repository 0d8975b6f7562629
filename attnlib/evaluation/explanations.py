"""Saliency maps of an ABN and how faithful they are: the ABN paper's evaluation (methods.md section 3).

Maps (B x H x W, in [0, 1]): CAM and Grad-CAM of the perception branch through the ``grad-cam``
package, and the attention branch's own map M. Faithfulness: deletion and insertion as RISE defines
them (Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models",
BMVC 2018), computed on batches of perturbed copies, and the ``grad-cam`` package's ROAD beside them.
Similarity to a person's map: :func:`map_mse`.

A ``model`` scored here is a callable ``images -> logits``; wrap an :class:`~attnlib.models.abn.ABNet`
in :class:`LogitsOnly` for that (and for ``grad-cam``, whose models must return one tensor).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import NoiseTunnel, Saliency
from pytorch_grad_cam import GradCAM, HiResCAM
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.metrics.road import ROADCombined
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from torch import Tensor, nn
from torchvision.transforms.v2.functional import gaussian_blur

from attnlib.models.abn import ABNet

Model = Callable[[Tensor], Tensor]


class LogitsOnly(nn.Module):
    """An ABNet seen as ``images -> perception logits`` (``grad-cam`` cannot take ABN's tuple output).

    ``attention_map`` (1 or B x 1 x h x w, in [0, 1]; a non-persistent buffer, so it follows ``.to``)
    replaces M in every forward, e.g. an edited map; with perturbation batches only a 1 x 1 x h x w
    map fits every batch.
    """

    def __init__(self, model: ABNet, attention_map: Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("attention_map", attention_map, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x, self.attention_map).perception_logits


def blur(images: Tensor, kernel_size: int = 11, sigma: float = 5.0) -> Tensor:
    """RISE's insertion substrate: ``images`` (B x C x H x W) blurred by a ``kernel_size`` Gaussian.

    torchvision's ``gaussian_blur`` (normalised separable kernel, reflect padding; RISE's own code
    pads with zeros), the library implementation rather than another hand-written kernel.
    """
    return gaussian_blur(images, kernel_size=[kernel_size, kernel_size], sigma=[sigma, sigma])


def fractions_perturbed(num_pixels: int, step: int) -> Tensor:
    """The x axis of a deletion/insertion curve: fraction of pixels perturbed at each of its points.

    ``ceil(num_pixels / step) + 1`` points, ``min(t * step, num_pixels) / num_pixels``: from 0 to 1,
    evenly spaced except a shorter last interval when ``step`` does not divide ``num_pixels`` (RISE's
    code spaces all points evenly; the two agree when it does).
    """
    if num_pixels < 1 or step < 1:
        raise ValueError(f"num_pixels and step must be positive, got {num_pixels} and {step}")
    return _perturbed_counts(num_pixels, step, torch.device("cpu")).double() / num_pixels


def auc(curve: Tensor, x: Tensor | None = None) -> Tensor:
    """Area under ``curve`` (... x n_points) by the trapezoid rule on ``x`` (default: evenly on [0, 1])."""
    if x is None:
        return torch.trapezoid(curve, dx=1.0 / (curve.shape[-1] - 1), dim=-1)
    return torch.trapezoid(curve, x.to(curve), dim=-1)


def perturbation_curve(
    model: Model,
    images: Tensor,
    saliency: Tensor,
    mode: Literal["deletion", "insertion"],
    step: int,
    batch_size: int = 64,
) -> Tensor:
    """RISE's deletion or insertion curve (B x n_points) of each image under its saliency map.

    ``saliency`` (B x h x w or B x 1 x h x w) is resized bilinearly to the images' H x W when its
    grid differs; pixels are ranked by it, most salient first, ties in raster order (stable sort).
    Point t has the first ``min(t * step, H * W)`` ranked pixels perturbed, t = 0..ceil(H*W / step)
    (x axis: :func:`fractions_perturbed`): deletion sets them to 0 in all channels, insertion starts
    from :func:`blur` of the image and puts them back. Each point scores the softmax probability of the
    class ``model`` predicts on the clean image. All B x n_points perturbed copies go through ``model``
    in batches of ``batch_size``, in eval mode (restored after) under ``torch.no_grad``.
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if step < 1 or batch_size < 1:
        raise ValueError(f"step and batch_size must be positive, got {step} and {batch_size}")
    num_images, _, height, width = images.shape
    num_pixels = height * width
    order = _grid(saliency, images).flatten(1).argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(num_pixels, device=images.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)  # rank[b, p]: place of pixel p in order
    counts = _perturbed_counts(num_pixels, step, images.device)
    with torch.no_grad(), _evaluating(model):
        if mode == "deletion":
            start, finish = images, torch.zeros_like(images)
        else:
            start, finish = blur(images), images
        predicted = model(images).argmax(dim=1)
        scores = []
        total = num_images * len(counts)
        for first in range(0, total, batch_size):
            pair = torch.arange(first, min(first + batch_size, total), device=images.device)
            image, point = pair // len(counts), pair % len(counts)
            changed = (rank[image] < counts[point, None]).view(-1, 1, height, width)
            probs = model(torch.where(changed, finish[image], start[image])).softmax(dim=1)
            scores.append(probs.gather(1, predicted[image, None])[:, 0])
    return torch.cat(scores).view(num_images, len(counts))


def deletion_insertion(
    model: Model, images: Tensor, saliency: Tensor, step: int, batch_size: int = 64
) -> dict[str, Tensor]:
    """Per-image RISE deletion (lower is better) and insertion (higher is better) AUCs.

    Returns ``deletion`` and ``insertion`` (B), their curves ``deletion_curve`` and
    ``insertion_curve`` (B x n_points, see :func:`perturbation_curve`) and the x axis ``x``
    (n_points, :func:`fractions_perturbed`) on which the trapezoid rule integrates them.
    """
    height, width = images.shape[-2:]
    x = fractions_perturbed(height * width, step).to(images.device)
    result = {"x": x}
    for mode in ("deletion", "insertion"):
        curve = perturbation_curve(model, images, saliency, mode, step, batch_size)
        result[mode] = auc(curve, x)
        result[f"{mode}_curve"] = curve
    return result


def cam_maps(model: ABNet, images: Tensor, targets: Tensor | None = None) -> Tensor:
    """CAM (Zhou et al., CVPR 2016) of the perception branch, B x H x W in [0, 1].

    ``grad-cam``'s HiResCAM at ``perception.layer4``: layer4 is followed by global average pooling and
    fc, so the gradient of logit k at every position is ``w_kc / (h w)`` and HiResCAM's
    ``sum_c grad_c * A_c`` is CAM's ``sum_c w_kc A_c`` over ``h w``; the package's ReLU and min-max
    scaling remove the factor. ``targets`` (B class indices) default to the predicted classes.
    """
    return _package_cam(HiResCAM, model, model.perception.layer4, images, targets)


def gradcam_maps(
    model: ABNet, images: Tensor, targets: Tensor | None = None, layer: str = "features.layer3"
) -> Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017) of the perception logits at ``layer``, B x H x W in [0, 1].

    ``layer`` is a dotted path in ``model``. The default, the feature extractor's output, is the grid of
    ABN's map M; at ``perception.layer4`` Grad-CAM of a global-average-pool + fc head is CAM up to a
    scale (its weights are ``w_kc / (h w)``), i.e. :func:`cam_maps`. ``targets`` (B class indices)
    default to the predicted classes.
    """
    return _package_cam(GradCAM, model, model.get_submodule(layer), images, targets)


def abn_maps(model: ABNet, images: Tensor) -> Tensor:
    """ABN's attention map M (the attention branch's ``predicted_map``), B x h x w in [0, 1]."""
    with torch.no_grad(), _evaluating(model):
        return model(images).predicted_map[:, 0]


def road_scores(
    model: Model,
    images: Tensor,
    saliency: Tensor,
    targets: Tensor | None = None,
    percentiles: Sequence[float] = (10, 20, 30, 40, 50, 60, 70, 80, 90),
) -> Tensor:
    """ROAD (Rong et al., ICML 2022) per image through ``grad-cam``'s ``ROADCombined`` (B; higher is better).

    The mean over ``percentiles`` of (change of the target's softmax probability when the least
    relevant pixels are imputed - change when the most relevant are) / 2, imputing with noisy linear
    interpolation (a sparse solve per image and percentile: slow on large images). ``saliency``
    (B x h x w or B x 1 x h x w) is upsampled bilinearly to the image size as for
    :func:`perturbation_curve`; ``targets`` (B class indices) default to the predicted classes.
    ``model`` runs in eval mode (restored after).
    """
    cams = _grid(saliency, images).cpu().numpy().astype(np.float32)
    with torch.no_grad(), _evaluating(model):
        if targets is None:
            targets = model(images).argmax(dim=1)
        outputs = [ClassifierOutputSoftmaxTarget(int(c)) for c in targets]
        scores = ROADCombined(percentiles=list(percentiles))(images, cams, outputs, model)
    return torch.from_numpy(np.asarray(scores, dtype=np.float32)).to(images.device)


def smoothgrad_maps(
    model: nn.Module, images: Tensor, targets: Tensor, samples: int = 16, noise: float = 0.15, batch_size: int = 8
) -> Tensor:
    """SmoothGrad saliency (Smilkov et al. 2017) via captum: the mean absolute input gradient of the target
    logit over ``samples`` noisy copies (Gaussian, std ``noise`` x the batch's value range), the maximum
    over channels; B x H x W. The GALA paper's alignment of a model's "visual features"."""
    if samples < 1 or noise < 0:
        raise ValueError(f"samples must be >= 1 and noise >= 0, got {samples}, {noise}")
    tunnel = NoiseTunnel(Saliency(model))
    std = noise * float(images.max() - images.min())
    out = []
    with _evaluating(model):
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].clone().requires_grad_(True)
            grads = tunnel.attribute(
                x,
                nt_type="smoothgrad",
                nt_samples=samples,
                nt_samples_batch_size=samples,
                stdevs=std,
                target=targets[start : start + batch_size],
                abs=True,
            )
            out.append(grads.detach().amax(dim=1))
    return torch.cat(out)


def map_mse(maps: Tensor, targets: Tensor) -> Tensor:
    """Per-image mean squared error (B) between a network's maps and (edited) target maps.

    Both B x h x w or B x 1 x h x w with values in [0, 1]; ``maps`` are resized to the targets' grid by
    area (adaptive average pooling) when the grids differ.
    """
    maps, targets = _as_maps(maps, "maps"), _as_maps(targets, "targets")
    if maps.shape[0] != targets.shape[0]:
        raise ValueError(f"maps and targets hold {maps.shape[0]} and {targets.shape[0]} maps")
    for name, value in (("maps", maps), ("targets", targets)):
        if not bool(((value >= 0) & (value <= 1)).all()):
            raise ValueError(f"{name} must lie in [0, 1] (and not be NaN)")
    if maps.shape[-2:] != targets.shape[-2:]:
        maps = F.adaptive_avg_pool2d(maps[:, None], targets.shape[-2:])[:, 0]
    return (maps - targets).pow(2).mean(dim=(1, 2))


def _package_cam(
    method: type[BaseCAM], model: ABNet, layer: nn.Module, images: Tensor, targets: Tensor | None
) -> Tensor:
    """``method``'s maps of ``LogitsOnly(model)`` at ``layer`` (B x H x W on the images' device).

    The input requires grad so that a frozen feature extractor still passes gradients to ``layer``;
    the parameters' gradients that the package's backward leaves are cleared (it zeroes them first
    anyway). Hooks are released even on error (not via the package's ``with``, which swallows
    ``IndexError``).
    """
    outputs = None if targets is None else [ClassifierOutputTarget(int(c)) for c in targets]
    with _evaluating(model), torch.enable_grad():
        cam = method(LogitsOnly(model), target_layers=[layer])
        try:
            maps = cam(images.detach().requires_grad_(True), targets=outputs)
        finally:
            cam.activations_and_grads.release()
            model.zero_grad(set_to_none=True)
    return torch.from_numpy(maps).to(images.device)


@contextmanager
def _evaluating(model: object) -> Iterator[None]:
    """Eval mode for ``model`` (if an ``nn.Module``) inside the block; every sub-module's mode restored."""
    if not isinstance(model, nn.Module):
        yield
        return
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _perturbed_counts(num_pixels: int, step: int, device: torch.device) -> Tensor:
    """Pixels perturbed at each curve point: ``min(t * step, num_pixels)``, t = 0..ceil(num_pixels / step)."""
    points = math.ceil(num_pixels / step) + 1
    return (torch.arange(points, device=device) * step).clamp(max=num_pixels)


def _as_maps(maps: Tensor, name: str) -> Tensor:
    """``maps`` (B x h x w or B x 1 x h x w) as B x h x w."""
    if maps.dim() == 4 and maps.shape[1] == 1:
        return maps[:, 0]
    if maps.dim() != 3:
        raise ValueError(f"{name} must be B x h x w or B x 1 x h x w, got {tuple(maps.shape)}")
    return maps


def _grid(saliency: Tensor, images: Tensor) -> Tensor:
    """``saliency`` as B x H x W floats on the images' grid and device, resized bilinearly (half-pixel
    centres) when its grid differs."""
    maps = _as_maps(saliency, "saliency").to(images.device)
    if len(maps) != len(images):
        raise ValueError(f"{len(images)} images but {len(maps)} saliency maps")
    if not maps.is_floating_point():
        maps = maps.float()
    size = tuple(images.shape[-2:])
    if tuple(maps.shape[-2:]) != size:
        maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return maps
