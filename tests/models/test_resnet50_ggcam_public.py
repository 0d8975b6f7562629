"""The public GG-CAM code's ResNet-50: layout, strides, biases, grey input, parameter count, CAM form."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from attnlib.models.cam import cam_from_classifier, cam_grid
from attnlib.models.registry import ReplicatedGreyConv2d, create_model

NAME = "resnet50_ggcam_public"
STAGES = ("layer1", "layer2", "layer3", "layer4")


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def grey() -> nn.Module:
    torch.manual_seed(0)
    return create_model(NAME, num_classes=3, in_chans=1).eval()


def test_layout_of_the_public_code(grey):
    assert grey.attnlib_backbone == NAME and grey.attnlib_weights == "random"  # no weights exist
    assert isinstance(grey.maxpool, nn.Identity)
    assert not any(isinstance(m, nn.MaxPool2d) for m in grey.modules())
    convs = [m for m in grey.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 53 and all(conv.bias is not None for conv in convs)
    for stage in STAGES:
        first, *others = grey.get_submodule(stage)
        strides = (first.conv1.stride, first.conv2.stride, first.downsample[0].stride)
        assert strides == ((2, 2), (1, 1), (2, 2))
        assert all(c.stride == (1, 1) for block in others for c in (block.conv1, block.conv2, block.conv3))


def test_feature_stride_32_with_layer1_striding_instead_of_a_max_pool(grey):
    sizes = {}

    def record(name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            sizes[name] = (args[0].shape[-1], out.shape[-1])

        return hook

    hooks = [grey.get_submodule(name).register_forward_hook(record(name)) for name in ("conv1", *STAGES)]
    with torch.no_grad():
        logits = grey(torch.rand(1, 1, 256, 256))
    for hook in hooks:
        hook.remove()
    assert logits.shape == (1, 3)
    # stem /2, no max-pool, layer1 /2 in its first 1x1 conv, layers 2-4 /2 each: 256 / 32 = 8
    assert sizes == {
        "conv1": (256, 128),
        "layer1": (128, 64),
        "layer2": (64, 32),
        "layer3": (32, 16),
        "layer4": (16, 8),
    }


def test_grey_image_is_copied_into_the_three_channel_network(grey):
    assert isinstance(grey.conv1, ReplicatedGreyConv2d) and grey.conv1.in_channels == 1
    assert grey.conv1.weight.shape == (64, 3, 7, 7)  # three kernels kept, not summed
    plain = create_model(NAME, num_classes=3, in_chans=3).eval()
    assert type(plain.conv1) is nn.Conv2d
    plain.load_state_dict(grey.state_dict())  # the same state dict
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = plain(x.repeat(1, 3, 1, 1))
        assert_close(grey(x), expected, rtol=0, atol=1e-6 * expected.abs().max().item())
        with pytest.raises(ValueError, match="one grey channel"):
            grey(x.repeat(1, 3, 1, 1))


def test_parameters_are_torchvision_resnet50_plus_one_bias_per_conv_output_channel(grey):
    # stem 64; per stage: blocks x (width + width + 4 width) + the shortcut's 4 width
    stages = ((3, 64), (4, 128), (6, 256), (3, 512))
    biases = 64 + sum(blocks * 6 * width + 4 * width for blocks, width in stages)
    assert biases == 26_560
    torchvision = _count(create_model("resnet50", num_classes=3, pretrained=False))
    assert _count(grey) == torchvision + biases == 23_540_739


def test_pytorch_default_initialisation(grey):
    """Weights and biases within +-1/sqrt(fan_in) (Kaiming-uniform, a = sqrt(5)); torchvision's
    Kaiming-normal (fan_out) would exceed that bound in every layer."""
    for module in grey.modules():
        if isinstance(module, nn.Conv2d):
            bound = 1 / math.sqrt(module.weight[0].numel())
            assert module.weight.abs().max() <= bound and module.bias.abs().max() <= bound


def test_cam_form_has_the_same_feature_interface(grey):
    torch.manual_seed(0)
    public = create_model(NAME, 3, in_chans=1, pretrained=False, channel_mean=True, head="cam")
    assert public.head.channel_mean and cam_grid(public, (256, 256)) == (8, 8)
    standard = cam_from_classifier(copy.deepcopy(grey)).eval()
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = grey(x)
        logits, omega = standard(x)
    assert omega.shape == (2, 3, 2, 2)
    assert_close(logits, expected, rtol=0, atol=1e-5 * expected.abs().max().item())
