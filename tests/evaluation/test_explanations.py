"""Saliency maps and their faithfulness metrics (RISE deletion/insertion, ROAD, map MSE) by hand."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import convolve1d
from torch import nn

from attnlib.evaluation.explanations import (
    LogitsOnly,
    abn_maps,
    auc,
    blur,
    cam_maps,
    deletion_insertion,
    fractions_perturbed,
    gradcam_maps,
    map_mse,
    perturbation_curve,
    road_scores,
    smoothgrad_maps,
)
from attnlib.models.abn import ABNet, freeze_feature_extractor
from attnlib.models.registry import create_model

H, W = 7, 9  # 63 pixels: not divisible by the steps used below


class WeightedSum(nn.Module):
    """Logits (sum(weight * x), 0): class 0's softmax probability is sigmoid(sum(weight * x))."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x * self.weight).flatten(1).sum(dim=1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


class NonZeroFraction(nn.Module):
    """Logits (log f, log(1 - f)) for f the fraction of non-zero values: softmax gives (f, 1 - f)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = (x != 0).double().mean(dim=(1, 2, 3))
        return torch.stack([f.log(), (1 - f).log()], dim=1)


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(16, 3),
    )


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    """grad-cam's scaling: subtract the minimum, divide by 1e-7 + the maximum, per map."""
    maps = maps - maps.amin(dim=(1, 2), keepdim=True)
    return maps / (1e-7 + maps.amax(dim=(1, 2), keepdim=True))


def _package_scaling(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """What grad-cam does to a raw map: ReLU, min-max, bilinear resize to the image, min-max again."""
    low = _minmax(cam.relu())
    return _minmax(F.interpolate(low[:, None], size=size, mode="bilinear", align_corners=False)[:, 0])


@pytest.fixture(scope="module")
def abn() -> ABNet:
    torch.manual_seed(0)
    return create_model("resnet18", 3, pretrained=False, head="abn").eval()


def _hand_curve(weight, image, saliency, mode, step):
    """RISE's curve for ``WeightedSum`` from partial sums of the per-pixel contributions, in numpy."""
    contribution = (weight * image).sum(axis=0).ravel()
    if mode == "deletion":
        start, finish = contribution, np.zeros_like(contribution)
    else:
        start = (weight * blur(torch.from_numpy(image)[None])[0].numpy()).sum(axis=0).ravel()
        finish = contribution
    order = np.argsort(-saliency.ravel(), kind="stable")
    n = contribution.size
    counts = [min(t * step, n) for t in range(-(-n // step) + 1)]
    logits = np.array([start.sum() + (finish - start)[order[:k]].sum() for k in counts])
    p0 = 1 / (1 + np.exp(-logits))
    return (p0 if contribution.sum() > 0 else 1 - p0), np.array(counts) / n


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
@pytest.mark.parametrize("ties", [False, True])
def test_curve_and_auc_of_weighted_sum_by_hand(mode, ties):
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(3, H, W))
    images = rng.uniform(size=(2, 3, H, W))
    saliency = rng.uniform(size=(2, H, W))
    if ties:  # four levels only: the order within a level is raster order
        saliency = np.floor(saliency * 4) / 4
    model = WeightedSum(torch.from_numpy(weight))
    step = 10
    x_in, s_in = torch.from_numpy(images), torch.from_numpy(saliency)
    curve = perturbation_curve(model, x_in, s_in, mode, step, batch_size=3)
    assert curve.shape == (2, math.ceil(H * W / step) + 1) == (2, 8)
    x = fractions_perturbed(H * W, step)
    np.testing.assert_allclose(x.numpy(), [0, 10 / 63, 20 / 63, 30 / 63, 40 / 63, 50 / 63, 60 / 63, 1])
    for b in range(2):
        expected, hand_x = _hand_curve(weight, images[b], saliency[b], mode, step)
        np.testing.assert_allclose(x.numpy(), hand_x)
        np.testing.assert_allclose(curve[b].numpy(), expected, rtol=1e-10)
    result = deletion_insertion(model, x_in, s_in, step, batch_size=5)
    for b in range(2):
        expected, hand_x = _hand_curve(weight, images[b], saliency[b], mode, step)
        np.testing.assert_allclose(result[f"{mode}_curve"][b].numpy(), expected, rtol=1e-10)
        np.testing.assert_allclose(result[mode][b].item(), np.trapezoid(expected, hand_x), rtol=1e-10)
    torch.testing.assert_close(result["x"], x)


def test_deletion_of_ones_removes_step_pixels_per_point():
    """All-ones 6 x 7 image, step 4: 12 points, the fraction left 1 - x, so the AUC is exactly 1/2."""
    images = torch.ones(1, 3, 6, 7)
    curve = perturbation_curve(NonZeroFraction(), images, torch.rand(1, 6, 7), "deletion", step=4)
    counts = np.array([0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 42])
    np.testing.assert_allclose(curve[0].numpy(), 1 - counts / 42, atol=1e-12)
    result = deletion_insertion(NonZeroFraction(), images, torch.rand(1, 6, 7), step=4)
    assert result["deletion"].item() == pytest.approx(0.5, abs=1e-12)


def test_insertion_starts_at_the_blurred_image_and_ends_at_the_clean_one():
    model = _small_cnn().eval()
    images = torch.rand(2, 3, 8, 10)
    curve = perturbation_curve(model, images, torch.rand(2, 8, 10), "insertion", step=7)
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
        clean = model(images).softmax(dim=1)[[0, 1], predicted]
        blurred = model(blur(images)).softmax(dim=1)[[0, 1], predicted]
    torch.testing.assert_close(curve[:, 0], blurred)
    torch.testing.assert_close(curve[:, -1], clean)
    assert not torch.allclose(blurred, clean)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_batches_equal_one_forward_per_step(mode):
    model = _small_cnn().train()  # BatchNorm: scoring must use eval mode and restore train mode
    images = torch.rand(2, 3, 8, 10)
    saliency = torch.rand(2, 4, 5)  # coarser grid: upsampled bilinearly
    curve = perturbation_curve(model, images, saliency, mode, step=9, batch_size=5)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    fine = torch.from_numpy(np.stack([cv2.resize(s.numpy(), (10, 8)) for s in saliency]))
    substrate = torch.zeros_like(images) if mode == "deletion" else blur(images)
    expected = torch.empty(2, math.ceil(80 / 9) + 1)
    with torch.no_grad():
        for b in range(2):
            order = torch.argsort(fine[b].flatten(), descending=True, stable=True)
            target = model(images[b : b + 1]).argmax().item()
            for t in range(expected.shape[1]):
                chosen = torch.zeros(80, dtype=torch.bool)
                chosen[order[: t * 9]] = True
                chosen = chosen.view(1, 8, 10)
                if mode == "deletion":
                    x = torch.where(chosen, substrate[b], images[b])
                else:
                    x = torch.where(chosen, images[b], substrate[b])
                expected[b, t] = model(x[None]).softmax(dim=1)[0, target]
    torch.testing.assert_close(curve, expected)


def test_auc_is_the_trapezoid_rule():
    rng = np.random.default_rng(1)
    curve = rng.uniform(size=(3, 6))
    x = np.sort(np.concatenate([[0.0, 1.0], rng.uniform(size=4)]))
    y = torch.from_numpy(curve)
    np.testing.assert_allclose(auc(y, torch.from_numpy(x)).numpy(), np.trapezoid(curve, x))
    np.testing.assert_allclose(auc(y).numpy(), np.trapezoid(curve, np.linspace(0, 1, 6)))


def test_blur_is_a_normalised_gaussian_with_reflect_padding():
    """Separable Gaussian (11 taps, sigma 5) with scipy's 'mirror' padding (torch's 'reflect')."""
    images = torch.rand(2, 3, 12, 10, dtype=torch.float64)
    taps = np.arange(-5, 6)
    kernel = np.exp(-(taps**2) / (2 * 5.0**2))
    kernel /= kernel.sum()
    rows = convolve1d(images.numpy(), kernel, axis=-1, mode="mirror")
    expected = convolve1d(rows, kernel, axis=-2, mode="mirror")
    np.testing.assert_allclose(blur(images).numpy(), expected, rtol=1e-12, atol=1e-12)


def test_cam_maps_are_cam(abn):
    """HiResCAM at layer4 = ReLU(sum_c w_kc A_c), scaled and upsampled as grad-cam does."""
    torch.manual_seed(2)
    images = torch.randn(3, 3, 64, 96)  # layer4 grid 2 x 3
    targets = torch.tensor([0, 2, 1])
    with torch.no_grad():
        out = abn(images)
        features = abn.features(images)
        activations = abn.perception.layer4(features * out.attention_map + features)
    for classes in (out.perception_logits.argmax(dim=1), targets):
        raw = torch.einsum("bc,bchw->bhw", abn.perception.fc.weight[classes], activations)
        expected = _package_scaling(raw, (64, 96))
        maps = cam_maps(abn, images, None if classes is not targets else targets)
        assert maps.shape == (3, 64, 96)
        assert (maps.amax(dim=(1, 2)) - maps.amin(dim=(1, 2)) > 0.5).all()  # not a vacuous all-zero match
        torch.testing.assert_close(maps, expected, atol=1e-5, rtol=0)


def test_gradcam_maps_by_autograd_and_with_a_frozen_extractor():
    torch.manual_seed(0)
    model = create_model("resnet18", 3, pretrained=False, head="abn").eval()
    images = torch.randn(2, 3, 64, 64)  # layer3 grid 4 x 4
    features = model.features(images).detach().requires_grad_(True)
    _, attention_map = model.attention(features)
    logits = model.perception(features * attention_map + features)
    chosen = logits.argmax(dim=1)
    (grads,) = torch.autograd.grad(logits[[0, 1], chosen].sum(), features)
    raw = (grads.mean(dim=(2, 3))[:, :, None, None] * features.detach()).sum(dim=1)
    maps = gradcam_maps(model, images)
    assert maps.shape == (2, 64, 64) and maps.min() >= 0 and maps.max() <= 1
    torch.testing.assert_close(maps, _package_scaling(raw, (64, 64)), atol=1e-5, rtol=0)
    freeze_feature_extractor(model)
    model.train()
    torch.testing.assert_close(gradcam_maps(model, images), maps)
    assert model.training and not model.features.training  # modes restored
    assert all(p.grad is None for p in model.parameters())


def test_abn_maps(abn):
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = abn(images).predicted_map[:, 0]
    maps = abn_maps(abn, images)
    assert maps.shape == (2, 4, 4)
    torch.testing.assert_close(maps, expected)


def test_logits_only_returns_perception_logits_with_the_supplied_map(abn):
    images = torch.randn(2, 3, 64, 64)
    edited = torch.rand(1, 1, 4, 4)
    with torch.no_grad():
        default = abn(images).perception_logits
        supplied = abn(images, attention_map=edited).perception_logits
        torch.testing.assert_close(LogitsOnly(abn)(images), default)
        torch.testing.assert_close(LogitsOnly(abn, edited)(images), supplied)
    assert not torch.allclose(default, supplied)


def test_map_mse_by_hand():
    maps = torch.zeros(1, 4, 4)
    maps[0, 0, 0] = 1.0  # block (0, 0) averages to 0.25
    maps[0, :2, 2:] = 1.0  # block (0, 1) averages to 1
    targets = torch.tensor([[[0.25, 0.5], [0.0, 1.0]]])
    # errors per cell: 0, 0.5, 0, 1 -> (0.25 + 1) / 4
    torch.testing.assert_close(map_mse(maps, targets), torch.tensor([0.3125]))
    torch.testing.assert_close(map_mse(targets[:, None], targets), torch.tensor([0.0]))
    two = torch.stack([torch.full((2, 2), 0.5), torch.zeros(2, 2)])
    torch.testing.assert_close(map_mse(two, torch.ones(2, 2, 2)), torch.tensor([0.25, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        map_mse(maps * 2, targets)


def test_road_scores():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 12, 12)
    saliency = torch.rand(2, 6, 6)
    scores = road_scores(_small_cnn(), images, saliency, percentiles=(30, 70))
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    constant = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 3))
    nn.init.zeros_(constant[1].weight)
    nn.init.normal_(constant[1].bias)
    zero = road_scores(constant, images, saliency, targets=torch.tensor([1, 2]), percentiles=(30, 70))
    torch.testing.assert_close(zero, torch.zeros(2))  # an input-blind model: no change when imputing


def test_bad_arguments():
    images = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="mode"):
        perturbation_curve(NonZeroFraction(), images, torch.rand(1, 8, 8), "erase", step=4)
    with pytest.raises(ValueError, match="saliency maps"):
        perturbation_curve(NonZeroFraction(), images, torch.rand(2, 8, 8), "deletion", step=4)


def test_smoothgrad_of_a_linear_model_is_its_weights():
    """The input gradient of a linear logit is its weight whatever the noise: SmoothGrad = |w|, max over channels."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 3 * 4, 3))
    images, targets = torch.rand(5, 2, 3, 4), torch.tensor([0, 1, 2, 1, 0])
    maps = smoothgrad_maps(model, images, targets, samples=4, noise=0.2, batch_size=2)
    weights = model[1].weight.detach().reshape(3, 2, 3, 4).abs().amax(dim=1)
    torch.testing.assert_close(maps, weights[targets])
    assert model.training  # the model's mode is restored
