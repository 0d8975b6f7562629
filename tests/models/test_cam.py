"""CAM layer (GG-CAM Eqs. 1-6): hand-computed maps, and the same logits as the standard classifier."""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torchvision.models as tvm
from torch import nn
from torch.testing import assert_close

from attnlib.models.cam import (
    CAMHead,
    CAMNet,
    cam_backbones,
    cam_from_classifier,
    cam_grid,
)
from attnlib.models.registry import create_model, weight_path

SUPPORTED = [
    "efficientnet_b0", "efficientnet_v2_s", "resnet152", "resnet18", "resnet34", "resnet50", "resnet50_ggcam_public",
    "slim_resnet10",
]


def _standard(name: str, in_chans: int = 3) -> nn.Module:
    """The standard torchvision classifier, random weights from a fixed seed, eval mode."""
    torch.manual_seed(0)
    return create_model(name, num_classes=3, in_chans=in_chans, pretrained=False).eval()


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_supported_backbones():
    assert cam_backbones() == SUPPORTED


@pytest.mark.parametrize("name", SUPPORTED)
def test_same_logits_as_the_standard_model_and_maps_from_the_features(name):
    standard = _standard(name)
    n_standard = _count(standard)
    cam = cam_from_classifier(standard).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = standard(x)
        logits, omega = cam(x)
        features = cam.features(x)
    assert isinstance(cam, CAMNet) and cam.attnlib_backbone == name and cam.attnlib_weights == "random"
    assert _count(cam) == n_standard
    # float32 round-off relative to the largest logit (random-init ResNet-152 logits reach 1e5)
    assert_close(logits, expected, rtol=0, atol=1e-5 * expected.abs().max().item())
    stride = 8 if name == "slim_resnet10" else 32  # the slim network has no stride-2 stem and no max-pool
    assert cam_grid(cam, (64, 64)) == (64 // stride,) * 2 and cam_grid(cam, (96, 128)) == (96 // stride, 128 // stride)
    assert omega.shape == (2, 3, 64 // stride, 64 // stride)
    weight, bias = cam.head.weight.detach(), cam.head.bias.detach()
    assert features.shape[1] == weight.shape[1]
    hand = (weight[None, :, :, None, None] * features[:, None]).sum(dim=2)  # sum_k W[c,k] A[b,k,i,j]
    tolerance = {"rtol": 0, "atol": 1e-5 * omega.abs().max().item()}
    assert_close(omega, hand, **tolerance)
    assert_close(omega.mean(dim=(2, 3)) + bias, logits, **tolerance)


def test_hand_computed_cam_layer():
    head = CAMHead(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [2.0, -1.0]]))
        head.bias.copy_(torch.tensor([0.5, -1.0]))
    features = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # B=1, K=2, H=1, W=2
    logits, omega = head(features)
    assert_close(omega, torch.tensor([[[[1.0, 2.0]], [[-1.0, 0.0]]]]))
    assert_close(logits, torch.tensor([[2.0, -1.5]]))
    head.channel_mean = True  # the public code's variant: Omega / K
    logits, omega = head(features)
    assert_close(omega, torch.tensor([[[[0.5, 1.0]], [[-0.5, 0.0]]]]))
    assert_close(logits, torch.tensor([[1.25, -1.25]]))
    with pytest.raises(ValueError, match=re.escape("B x 2 x H x W, got (1, 3, 1, 2)")):
        head(torch.zeros(1, 3, 1, 2))


def test_channel_mean_divides_maps_and_spatial_logits_by_k():
    standard = _standard("resnet18")
    paper, public = cam_from_classifier(standard).eval(), cam_from_classifier(standard, channel_mean=True).eval()
    assert public.head.channel_mean and not paper.head.channel_mean
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        logits, omega = paper(x)
        logits_mean, omega_mean = public(x)
    bias = paper.head.bias.detach()
    assert_close(omega_mean, omega / 512)
    assert_close(logits_mean, (logits - bias) / 512 + bias)
    assert create_model("resnet18", 3, pretrained=False, channel_mean=True, head="cam").head.channel_mean


def test_from_linear_copies_and_default_init_is_linears():
    linear = nn.Linear(5, 3)
    head = CAMHead.from_linear(linear)
    assert torch.equal(head.weight, linear.weight) and torch.equal(head.bias, linear.bias)
    assert head.weight.data_ptr() != linear.weight.data_ptr()
    features = torch.rand(2, 5, 3, 4)
    with torch.no_grad():
        assert_close(head(features)[0], linear(features.mean(dim=(2, 3))))
        linear.weight.zero_()
    assert head.weight.abs().sum() > 0  # a copy, not the same tensor
    assert CAMHead.from_linear(linear, channel_mean=True).channel_mean
    torch.manual_seed(3)
    fresh = CAMHead(5, 3)
    torch.manual_seed(3)
    reference = nn.Linear(5, 3)
    assert torch.equal(fresh.weight, reference.weight) and torch.equal(fresh.bias, reference.bias)
    with pytest.raises(ValueError, match="bias"):
        CAMHead.from_linear(nn.Linear(5, 3, bias=False))


def test_efficientnet_dropout_becomes_channel_dropout_with_the_same_draws():
    standard = _standard("efficientnet_b0")
    assert standard.classifier[0].p == 0.2
    cam = cam_from_classifier(copy.deepcopy(standard))
    assert isinstance(cam.dropout, nn.Dropout2d) and cam.dropout.p == 0.2
    assert isinstance(cam_from_classifier(_standard("resnet18")).dropout, nn.Identity)
    x = torch.rand(2, 3, 64, 64)
    standard.train()
    cam.train()
    with torch.no_grad():
        torch.manual_seed(5)
        expected = standard(x)
        torch.manual_seed(5)
        logits, _ = cam(x)
        standard.eval()
        assert not torch.allclose(expected, standard(x))  # dropout (and stochastic depth) did act
    # channel k of A dropped <=> pooled feature k dropped: same random draws, same training logits
    assert_close(logits, expected)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_grey_input_and_same_weights_as_create_model(name):
    standard = _standard(name, in_chans=1)
    torch.manual_seed(0)
    cam = create_model(name, 3, in_chans=1, pretrained=False, head="cam").eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        logits, omega = cam(x)
        assert_close(logits, standard(x))
    assert omega.shape == (1, 3, *cam_grid(cam, (64, 64)))
    assert _count(cam) == _count(standard)


def test_gradient_reaches_the_features_from_a_loss_on_omega():
    cam = create_model("resnet18", 3, pretrained=False, head="cam")
    _, omega = cam(torch.rand(2, 3, 64, 64))
    omega[:, 0].square().mean().backward()
    stem = cam.features.conv1.weight.grad
    assert stem is not None and stem.abs().sum() > 0
    assert cam.head.weight.grad[0].abs().sum() > 0
    assert torch.equal(cam.head.weight.grad[1:], torch.zeros_like(cam.head.weight.grad[1:]))
    assert cam.head.bias.grad is None  # the maps do not depend on the bias


def test_cam_grid_keeps_modes_and_batch_statistics():
    cam = create_model("resnet18", 3, pretrained=False, head="cam").train()
    cam.features.bn1.eval()
    running = cam.features.layer1[0].bn1.running_mean.clone()
    assert cam_grid(cam, (224, 224)) == (7, 7)
    assert cam.training and cam.features.layer1.training and not cam.features.bn1.training
    assert torch.equal(cam.features.layer1[0].bn1.running_mean, running)


def test_unsupported_backbones_name_the_supported_ones():
    supported = re.escape(", ".join(SUPPORTED))
    for name in ("densenet161", "resnet19"):
        with pytest.raises(ValueError, match=f"{name!r}; supported: {supported}"):
            create_model(name, 3, pretrained=False, head="cam")
    with pytest.raises(ValueError, match="create_model"):
        cam_from_classifier(tvm.resnet18())


def test_weights_are_loaded_by_create_model(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = weight_path("resnet18")
    assert path.is_relative_to(tmp_path)
    path.parent.mkdir(parents=True)
    reference = tvm.resnet18().state_dict()
    torch.save(reference, path)
    cam = create_model("resnet18", 3, in_chans=1, pretrained=True, head="cam")
    assert cam.attnlib_weights == f"imagenet:{path}"
    assert torch.equal(cam.features.conv1.weight, reference["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(cam.features.layer4[1].conv2.weight, reference["layer4.1.conv2.weight"])
