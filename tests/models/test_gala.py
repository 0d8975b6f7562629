"""GALA (Linsley et al., ICLR 2019): the block's math, its placement, SE-ResNets, supervised volumes."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import SqueezeExcitation

from attnlib.models.gala import (
    AttendedBlock,
    GALABlock,
    forward_with_volumes,
    gala_blocks,
    supervised_layer_names,
)
from attnlib.models.registry import create_model, list_models, weight_path


class _Ones(nn.Module):
    """A squashing that makes GALA's attention exactly 1."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.ones_like(x)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _no_hooks(model: nn.Module) -> bool:
    return all(not module._forward_hooks for module in model.modules())


def _pre_squash_by_hand(block: GALABlock, u: Tensor) -> Tensor:
    """a (G + S) + m (G * S) from the paper-variant block's weights, with plain tensor algebra."""
    se, (conv1, _, conv2) = block.global_path, block.local_path
    g = torch.relu(u.mean(dim=(2, 3)) @ se.fc1.weight.flatten(1).T + se.fc1.bias)
    g = g @ se.fc2.weight.flatten(1).T + se.fc2.bias  # B x C
    s = torch.relu(torch.einsum("bchw,kc->bkhw", u, conv1.weight.flatten(1)) + conv1.bias.view(1, -1, 1, 1))
    s = torch.einsum("bkhw,k->bhw", s, conv2.weight.flatten()) + conv2.bias  # B x H x W
    g, s = g[:, :, None, None], s[:, None]
    a, m = block.a.view(1, -1, 1, 1), block.m.view(1, -1, 1, 1)
    return a * (g + s) + m * (g * s)


def _block(channels: int = 6, reduction: int = 2, variant: str = "paper", seed: int = 0) -> GALABlock:
    torch.manual_seed(seed)
    block = GALABlock(channels, reduction, variant).double()
    with torch.no_grad():  # per-channel weights away from the initial ones, signs mixed
        block.a.copy_(torch.linspace(-1.5, 2.0, channels))
        block.m.copy_(torch.linspace(0.7, -0.9, channels))
    return block


@pytest.fixture(scope="module")
def gala50() -> nn.Module:
    torch.manual_seed(0)
    return create_model("gala_resnet50", 3, pretrained=False)


def test_block_equals_hand_computation():
    block = _block()
    u = torch.randn(2, 6, 3, 5, dtype=torch.float64)
    attention = torch.tanh(_pre_squash_by_hand(block, u))
    assert torch.allclose(block(u), u * attention)
    assert block.last_attention.shape == (2, 6, 3, 5) and not block.last_attention.requires_grad
    assert torch.allclose(block.last_attention, attention)
    assert attention.min() < -0.1 and attention.max() > 0.1  # tanh's range, not a sigmoid's


def test_global_path_is_squeeze_excitation_before_its_sigmoid():
    block = _block(32, 4)
    se = SqueezeExcitation(32, 8).double()
    block.global_path.load_state_dict(se.state_dict())
    u = torch.randn(3, 32, 4, 4, dtype=torch.float64)
    hidden = se.fc1(se.avgpool(u))
    assert (hidden > 0).any() and (hidden < 0).any()  # the ReLU between the FC layers matters
    g = block.global_features(u)
    assert g.shape == (3, 32, 1, 1)
    assert torch.allclose(g.expand_as(u), torch.logit(se(u) / u))  # se(u) = sigmoid(G) * u


def test_public_variant_has_sigmoid_and_a_5x5_conv_after_the_first_1x1_conv():
    paper, public = _block(variant="paper"), _block(variant="public", seed=1)
    assert isinstance(paper.squash, nn.Tanh) and isinstance(public.squash, nn.Sigmoid)
    assert [type(layer) for layer in public.local_path] == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU, nn.Conv2d]
    first, spatial, last = public.local_path[0], public.local_path[2], public.local_path[4]
    assert (first.kernel_size, last.kernel_size, last.out_channels) == ((1, 1), (1, 1), 1)
    assert (spatial.kernel_size, spatial.padding) == ((5, 5), (2, 2))
    assert (spatial.in_channels, spatial.out_channels) == (3, 3)  # C / r -> C / r
    # with the paper block's weights and an identity 5x5 kernel, public A = sigmoid of the paper's pre-squash
    with torch.no_grad():
        public.global_path.load_state_dict(paper.global_path.state_dict())
        public.local_path[0].load_state_dict(paper.local_path[0].state_dict())
        public.local_path[4].load_state_dict(paper.local_path[2].state_dict())
        public.a.copy_(paper.a)
        public.m.copy_(paper.m)
        spatial.weight.zero_()
        spatial.bias.zero_()
        spatial.weight[range(3), range(3), 2, 2] = 1.0
    u = torch.randn(2, 6, 7, 7, dtype=torch.float64)
    z = _pre_squash_by_hand(paper, u)
    assert torch.allclose(paper.attention(u), torch.tanh(z))
    assert torch.allclose(public.attention(u), torch.sigmoid(z))


@pytest.mark.parametrize(("variant", "reach"), [("paper", 0), ("public", 2)])
def test_local_path_reach(variant, reach):
    """S at a position depends on the activity there only (paper) or within the 5x5 window (public)."""
    block = _block(8, 2, variant)
    u = torch.randn(1, 8, 11, 11, dtype=torch.float64)
    v = u.clone()
    v[0, :, 5, 5] += 3.0 * torch.randn(8, dtype=torch.float64)
    with torch.no_grad():
        changed = (block.local_features(v) != block.local_features(u))[0, 0]
    window = torch.zeros(11, 11, dtype=torch.bool)
    window[5 - reach : 6 + reach, 5 - reach : 6 + reach] = True
    assert changed[5, 5] and not changed[~window].any()
    assert changed.sum() > 1 if reach else changed.sum() == 1


def _down() -> nn.Sequential:
    """The strided 1x1 conv + BN shortcut of a stage's first block, 16 -> 32 channels."""
    return nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))


def _blocks() -> list:
    """torchvision blocks with 32 output channels: strided with a projection shortcut, or plain."""
    return [
        pytest.param(lambda: BasicBlock(16, 32, stride=2, downsample=_down()), id="basic-strided"),
        pytest.param(lambda: BasicBlock(32, 32), id="basic"),
        pytest.param(lambda: Bottleneck(16, 8, stride=2, downsample=_down()), id="bottleneck-strided"),
        pytest.param(lambda: Bottleneck(32, 8), id="bottleneck"),
    ]


def _randomise(module: nn.Module) -> nn.Module:
    """Random BatchNorm statistics and affine parameters, so BN layers are not near-identities."""
    torch.manual_seed(1)
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(bn.weight)
            nn.init.normal_(bn.bias)
    return module.double().eval()


@pytest.mark.parametrize("make_block", _blocks())
@pytest.mark.parametrize("kind", ["gala", "se"])
def test_residual_placement_is_after_the_last_batchnorm(make_block, kind):
    torch.manual_seed(0)
    block = _randomise(make_block())
    reference = copy.deepcopy(block)
    out_channels = 32
    attention = GALABlock(out_channels) if kind == "gala" else SqueezeExcitation(out_channels, 2)
    attention.double().eval()
    wrapped = AttendedBlock(block, attention, "residual").eval()
    x = torch.randn(2, 32 if block.downsample is None else 16, 8, 8, dtype=torch.float64)
    last_bn = reference.bn3 if isinstance(reference, Bottleneck) else reference.bn2
    handle = last_bn.register_forward_hook(lambda _m, _i, out: attention(out))
    with torch.no_grad():
        expected = reference(x)  # torchvision's block with the attention applied to its last BN's output
        handle.remove()
        assert torch.allclose(wrapped(x), expected)
        assert not torch.allclose(reference(x), expected)  # the attention did change the output
        if kind == "gala":  # attention forced to 1: exactly the plain block
            attention.squash = _Ones()
            assert torch.allclose(wrapped(x), reference(x))
    # the block's modules keep their names: a plain block's state dict loads, only attention.* is new
    missing, unexpected = wrapped.load_state_dict(reference.state_dict(), strict=False)
    assert not unexpected and missing and all(key.startswith("attention.") for key in missing)


@pytest.mark.parametrize("make_block", _blocks())
def test_input_placement_is_the_block_on_attended_input(make_block):
    torch.manual_seed(0)
    block = _randomise(make_block())
    reference = copy.deepcopy(block)
    gala = GALABlock(block.conv1.in_channels, variant="public").double().eval()
    wrapped = AttendedBlock(block, gala, "input").eval()
    x = torch.randn(2, block.conv1.in_channels, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(wrapped(x), reference(gala(x)))


def test_gala_resnet50_places_six_blocks_in_layer3(gala50):
    names = [name for name, _ in gala_blocks(gala50)]
    assert names == [f"layer3.{i}.attention" for i in range(6)] == supervised_layer_names(gala50)
    assert all(block.a.numel() == 1024 and block.variant == "paper" for _, block in gala_blocks(gala50))
    assert all(bool((block.a == 1).all() and (block.m == 1).all()) for _, block in gala_blocks(gala50))
    assert all(gala50.layer3[i].placement == "residual" for i in range(6))
    assert gala50.attnlib_backbone == "gala_resnet50" and gala50.attnlib_gala_variant == "paper"
    assert not any(isinstance(module, AttendedBlock) for module in (*gala50.layer2, *gala50.layer4))


def test_parameter_count_difference_is_the_gala_blocks(gala50):
    torch.manual_seed(0)
    plain = create_model("resnet50", 3, pretrained=False)
    c, h = 1024, 256  # layer3's channels and C / r
    per_block = (c * h + h + h * c + c) + (c * h + h + h + 1) + 2 * c  # global path, local path, a and m
    gala_params = sum(_count(block) for _, block in gala_blocks(gala50))
    assert _count(gala50) - _count(plain) == gala_params == 6 * per_block


def test_resnet18_and_public_variant_placements():
    model = create_model("resnet18", 3, pretrained=False, head="gala")
    assert [block.a.numel() for _, block in gala_blocks(model)] == [256, 256]
    public = create_model("resnet18", 3, pretrained=False, variant="public", head="gala")
    assert [block.a.numel() for _, block in gala_blocks(public)] == [128, 256]  # the blocks' inputs
    assert [block.placement for block in public.layer3] == ["input", "input"]
    assert public.attnlib_gala_variant == "public" and public.attnlib_backbone == "gala_resnet18"
    _, volumes = forward_with_volumes(public, torch.randn(2, 3, 64, 64))
    assert [tuple(v.shape) for v in volumes] == [(2, 128, 8, 8), (2, 256, 4, 4)]


def test_se_resnet_puts_squeeze_excitation_in_every_block():
    model = create_model("seresnet18", 3, pretrained=False)
    blocks = [block for stage in (model.layer1, model.layer2, model.layer3, model.layer4) for block in stage]
    assert len(blocks) == 8 and all(isinstance(block, AttendedBlock) for block in blocks)
    assert all(block.placement == "residual" for block in blocks)
    assert all(isinstance(block.attention, SqueezeExcitation) for block in blocks)
    assert [block.attention.fc1.out_channels for block in blocks] == [4, 4, 8, 8, 16, 16, 32, 32]
    assert isinstance(blocks[0].attention.scale_activation, nn.Sigmoid)


def test_volumes_of_gala_model(gala50):
    x = torch.randn(2, 3, 64, 64)
    logits, volumes = forward_with_volumes(gala50.eval(), x)
    assert logits.shape == (2, 3)
    assert [tuple(v.shape) for v in volumes] == [(2, 1024, 4, 4)] * 6
    kept = [block.last_attention for _, block in gala_blocks(gala50)]
    assert all(torch.equal(v.detach(), a) for v, a in zip(volumes, kept))
    assert _no_hooks(gala50)


@pytest.mark.parametrize("name", ["resnet18", "seresnet18"])
def test_volumes_of_plain_and_se_models_are_layer3_outputs(name):
    torch.manual_seed(0)
    model = create_model(name, 3, pretrained=False).eval()
    assert supervised_layer_names(model) == ["layer3.0", "layer3.1"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, volumes = forward_with_volumes(model, x)
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2)
        first = model.layer3[0](stem(x))
        assert torch.allclose(volumes[0], first) and torch.allclose(volumes[1], model.layer3[1](first))
        assert torch.allclose(logits, model(x))
    assert [tuple(v.shape) for v in volumes] == [(2, 256, 4, 4)] * 2


def test_loss_on_volumes_reaches_gala_parameters_and_hooks_are_gone():
    torch.manual_seed(0)
    model = create_model("gala_resnet18", 3, pretrained=False)
    _, volumes = forward_with_volumes(model, torch.randn(2, 3, 64, 64))
    sum(v.square().mean() for v in volumes).backward()
    for name, block in gala_blocks(model):
        for pname, parameter in block.named_parameters():
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, f"{name}.{pname}"
    assert model.layer3[0].conv1.weight.grad.abs().sum() > 0 and model.fc.weight.grad is None
    assert _no_hooks(model)
    with pytest.raises(RuntimeError):
        forward_with_volumes(model, torch.randn(2, 2, 64, 64))  # a failing forward leaves no hooks either
    assert _no_hooks(model)


def test_loss_on_plain_volumes_reaches_layer3():
    torch.manual_seed(0)
    model = create_model("resnet18", 3, pretrained=False)
    _, volumes = forward_with_volumes(model, torch.randn(2, 3, 64, 64))
    sum(v.square().mean() for v in volumes).backward()
    assert model.layer3[1].conv2.weight.grad.abs().sum() > 0 and model.layer4[0].conv1.weight.grad is None


def test_in_chans_1():
    model = create_model("resnet18", 4, in_chans=1, pretrained=False, head="gala")
    logits, volumes = forward_with_volumes(model, torch.randn(2, 1, 32, 32))
    assert logits.shape == (2, 4) and len(volumes) == 2
    assert create_model("gala_resnet18", 4, in_chans=1, pretrained=False).conv1.in_channels == 1


def test_names_are_registered():
    names = {f"gala_resnet{d}" for d in (18, 34, 50)} | {f"seresnet{d}" for d in (18, 34, 50)}
    assert names <= set(list_models())


@pytest.mark.parametrize("name", ["gala_resnet18", "seresnet18"])
def test_cached_resnet_weights_load_into_the_resnet_part(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    reference = tvm.resnet18().state_dict()
    path = weight_path(name)
    assert path == weight_path("resnet18") and Path(path).is_relative_to(tmp_path)
    path.parent.mkdir(parents=True)
    torch.save(reference, path)
    model = create_model(name, 4, pretrained=True)
    assert model.attnlib_weights == f"imagenet:{path}"
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in reference.items() if not k.startswith("fc."))
    assert all(".attention." in k for k in set(state) - set(reference))
    gala = create_model("resnet18", 4, pretrained=True, variant="public", head="gala")
    assert torch.equal(gala.layer3[1].conv2.weight, reference["layer3.1.conv2.weight"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        GALABlock(8, variant="sigmoid")
    with pytest.raises(ValueError, match="reduction"):
        GALABlock(8, reduction=16)
    with pytest.raises(ValueError, match="resnet152"):
        create_model("resnet152", 3, pretrained=False, head="gala")
    with pytest.raises(TypeError, match="BasicBlock or Bottleneck"):
        AttendedBlock(nn.Conv2d(3, 3, 1), GALABlock(3, 1), "residual")
    with pytest.raises(ValueError, match="placement"):
        AttendedBlock(BasicBlock(8, 8), GALABlock(8), "output")
    with pytest.raises(ValueError, match="neither GALA blocks nor"):
        supervised_layer_names(nn.Linear(2, 2))
