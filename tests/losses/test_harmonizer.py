"""The neural harmonizer loss (Fel et al. 2022) against numpy / scipy and a linear model's exact saliency."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from attnlib.losses.harmonizer import (
    class_saliency,
    gaussian_pyramid,
    harmonizer_loss,
    pyramid_mse,
    standardise_relu,
)

KERNEL_2D = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0


def _z_numpy(maps: np.ndarray) -> np.ndarray:
    centred = maps - maps.mean(axis=(-2, -1), keepdims=True)
    return np.maximum(centred / centred.std(axis=(-2, -1), keepdims=True), 0)


def _pyramid_numpy(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Hand-built pyramid of one H x W map: 5 x 5 binomial blur, border replicated, even rows/columns kept."""
    out = [image]
    for _ in range(levels - 1):
        out.append(ndimage.correlate(out[-1], KERNEL_2D, mode="nearest")[::2, ::2])
    return out


def test_standardise_relu_matches_numpy():
    maps = torch.rand(3, 1, 5, 7, dtype=torch.float64) * 4 - 1
    np.testing.assert_allclose(standardise_relu(maps).numpy(), _z_numpy(maps.numpy()), rtol=1e-12)
    constant = torch.full((1, 1, 4, 4), 2.5, requires_grad=True)
    out = standardise_relu(constant)
    assert out.abs().sum() == 0
    out.sum().backward()
    assert torch.isfinite(constant.grad).all()


def test_pyramid_sizes_and_level_values():
    maps = torch.rand(2, 1, 32, 32, dtype=torch.float64)
    pyramid = gaussian_pyramid(maps)
    assert [p.shape[-1] for p in pyramid] == [32, 16, 8, 4, 2]
    assert pyramid[0] is maps
    for b in range(2):
        for level, expected in zip(pyramid, _pyramid_numpy(maps[b, 0].numpy(), 5), strict=True):
            np.testing.assert_allclose(level[b, 0].numpy(), expected, rtol=1e-12)
    odd = gaussian_pyramid(torch.rand(1, 3, 7, 5), levels=4)
    assert [tuple(p.shape[-2:]) for p in odd] == [(7, 5), (4, 3), (2, 2), (1, 1)]
    assert all(p.shape[1] == 3 for p in odd)  # channels blurred separately
    constant = gaussian_pyramid(torch.full((1, 1, 9, 9), 0.7, dtype=torch.float64))
    assert all(torch.allclose(p, torch.full_like(p, 0.7)) for p in constant)
    with pytest.raises(ValueError, match="levels"):
        gaussian_pyramid(maps, levels=0)


def test_pyramid_mse_sums_levels_over_scored_images():
    a = torch.rand(3, 1, 16, 16, dtype=torch.float64)
    assert pyramid_mse(a, a.clone()).item() == 0
    # a constant offset c survives every blur: each level's MSE is c^2, the sum over 5 levels 5 c^2
    assert pyramid_mse(a + 0.3, a).item() == pytest.approx(5 * 0.09, rel=1e-12)
    b = a.clone()
    b[1] += 1.0  # only image 1 differs
    assert pyramid_mse(a, b, levels=3).item() == pytest.approx(3 * 1.0 / 3, rel=1e-12)  # mean over 3 images
    two_scored = pyramid_mse(a, b, levels=3, scored=torch.tensor([True, True, False]))
    assert two_scored.item() == pytest.approx(3 * 0.5)
    assert pyramid_mse(a, b, scored=torch.tensor([True, False, True])).item() == 0
    assert pyramid_mse(a, b, scored=torch.zeros(3, dtype=torch.bool)).item() == 0


B, C, H, W, K = 3, 2, 8, 8, 4


def _linear_setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(K, C * H * W, generator=g, dtype=torch.float64)
    bias = torch.randn(K, generator=g, dtype=torch.float64)
    images = torch.rand(B, C, H, W, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 2, 3])
    human = torch.rand(B, 1, H, W, generator=g, dtype=torch.float64)
    return weight, bias, images, labels, human


def _hand_loss(weight, bias, images, labels, human, lam, levels, smoothing) -> tuple[float, float, float]:
    w, b = weight.numpy(), bias.numpy()
    z = images.numpy().reshape(B, -1) @ w.T + b
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    y = labels.numpy()
    ce = np.mean((1 - smoothing) * -log_p[np.arange(B), y] + smoothing * -log_p.mean(axis=1))
    # d y_c / d x of a linear model is W_c: the saliency is |W_c| averaged over channels
    saliency = np.abs(w[y].reshape(B, C, H, W)).mean(axis=1)
    term = 0.0
    for n in range(B):
        levels_s = _pyramid_numpy(_z_numpy(saliency[n]), levels)
        levels_h = _pyramid_numpy(_z_numpy(human.numpy()[n, 0]), levels)
        term += sum(np.mean((s - h) ** 2) for s, h in zip(levels_s, levels_h, strict=True)) / B
    return ce + lam * term, ce, term


def test_loss_matches_hand_computation_on_a_linear_model():
    weight, bias, images, labels, human = _linear_setup()
    x = images.clone().requires_grad_(True)
    logits = x.flatten(1) @ weight.T + bias
    saliency = class_saliency(x, logits, labels)
    torch.testing.assert_close(saliency, weight[labels].view(B, C, H, W).abs().mean(dim=1, keepdim=True))
    total, ce, term = harmonizer_loss(x, logits, labels, human, weight=2.0, levels=3)
    expected = _hand_loss(weight, bias, images, labels, human, 2.0, 3, 0.1)
    np.testing.assert_allclose([total.item(), ce.item(), term.item()], expected, rtol=1e-10)
    assert ce.item() == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=0.1).item(), rel=1e-12)


def test_missing_maps_are_left_out_and_maps_are_resized():
    weight, bias, images, labels, human = _linear_setup()
    x = images.clone().requires_grad_(True)
    logits = x.flatten(1) @ weight.T + bias
    has_map = torch.tensor([True, False, True])
    _, _, term = harmonizer_loss(x, logits, labels, human, 1.0, has_map=has_map)
    keep = [0, 2]
    x2 = images[keep].clone().requires_grad_(True)
    _, _, alone = harmonizer_loss(x2, x2.flatten(1) @ weight.T + bias, labels[keep], human[keep], 1.0)
    assert term.item() == pytest.approx(alone.item(), rel=1e-10)
    empty = human.clone()
    empty[1] = 0  # an all-zero map counts as no map
    _, _, zero_map = harmonizer_loss(x, logits, labels, empty, 1.0)
    assert zero_map.item() == pytest.approx(alone.item(), rel=1e-10)
    small = human[:, :, ::2, ::2]  # 4 x 4 maps, resized bilinearly to the saliency's 8 x 8
    _, _, resized = harmonizer_loss(x, logits, labels, small, 1.0)
    upsampled = F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)
    _, _, reference = harmonizer_loss(x, logits, labels, upsampled, 1.0)
    assert resized.item() == pytest.approx(reference.item(), rel=1e-12)


def test_map_term_trains_the_weights_through_the_saliency():
    weight, bias, images, labels, human = _linear_setup()

    def term_of(w: torch.Tensor) -> torch.Tensor:
        x = images.clone().requires_grad_(True)
        return harmonizer_loss(x, x.flatten(1) @ w.T + bias, labels, human, 1.0, levels=3)[2]

    w = weight.clone().requires_grad_(True)
    term_of(w).backward()
    assert w.grad is not None and w.grad[labels].abs().sum() > 0
    assert torch.autograd.gradcheck(term_of, (weight.clone().requires_grad_(True),))
    with pytest.raises(ValueError, match="requires_grad"):
        class_saliency(images, images.flatten(1) @ weight.T + bias, labels)
