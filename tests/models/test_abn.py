"""Attention Branch Network (Fukui et al., CVPR 2019): shapes, the map's use, parameters, freezing, loss."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnlib.losses.abn import abn_loss
from attnlib.models.abn import (
    ABNet,
    abn_backbones,
    branch_parameters,
    feature_extractor_parameters,
    freeze_feature_extractor,
)
from attnlib.models.registry import create_model

K = 5


def _abn(name: str = "resnet18", num_classes: int = K, in_chans: int = 3) -> ABNet:
    torch.manual_seed(0)
    return create_model(name, num_classes, in_chans=in_chans, pretrained=False, head="abn")


def _count(params) -> int:
    return sum(p.numel() for p in params)


@pytest.fixture(scope="module")
def resnet18_eval() -> ABNet:
    return _abn().eval()


def _by_hand(model: ABNet, x: torch.Tensor, attention_map: torch.Tensor) -> torch.Tensor:
    """Perception logits from the model's own modules: layer4(F * M + F) -> pool -> fc."""
    features = model.features(x)
    out = model.perception.layer4(features * attention_map + features)
    return model.perception.fc(out.mean(dim=(2, 3)))


def test_supported_backbones():
    assert abn_backbones() == ["resnet152", "resnet18", "resnet34", "resnet50", "slim_resnet10"]
    with pytest.raises(ValueError, match="no ABN for backbone"):
        create_model("efficientnet_b0", K, pretrained=False, head="abn")


@pytest.mark.parametrize(("size", "grid"), [(224, 14), (64, 4)])
def test_shapes_resnet18(resnet18_eval, size, grid):
    with torch.no_grad():
        out = resnet18_eval(torch.randn(2, 3, size, size))
    assert out.attention_logits.shape == (2, K)
    assert out.perception_logits.shape == (2, K)
    assert out.attention_map.shape == (2, 1, grid, grid)
    assert out.predicted_map is out.attention_map
    assert ((out.attention_map >= 0) & (out.attention_map <= 1)).all()


def test_shapes_resnet50():
    model = _abn("resnet50").eval()
    assert isinstance(model.attention.blocks[0], type(model.perception.layer4[0]))
    with torch.no_grad():
        big = model(torch.randn(1, 3, 224, 224))
        small = model(torch.randn(1, 3, 64, 64))
    assert big.attention_logits.shape == big.perception_logits.shape == (1, K)
    assert big.attention_map.shape == (1, 1, 14, 14)
    assert small.attention_map.shape == (1, 1, 4, 4)


def test_grey_input():
    model = _abn(in_chans=1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 64))
    assert out.perception_logits.shape == (2, K)
    assert model.attnlib_backbone == "resnet18" and model.attnlib_weights == "random"


def test_default_map_is_the_attention_branch_output(resnet18_eval):
    """M = sigmoid(BN(conv3x3(ReLU(BN(conv1x1(BN(blocks(F)))))))), logits = GAP(conv1x1(.)), by hand."""
    x = torch.randn(2, 3, 64, 64)
    a = resnet18_eval.attention
    with torch.no_grad():
        out = resnet18_eval(x)
        h = a.relu(a.class_bn(a.class_conv(a.bn(a.blocks(resnet18_eval.features(x))))))
        torch.testing.assert_close(out.attention_map, torch.sigmoid(a.map_bn(a.map_conv(h))))
        torch.testing.assert_close(out.attention_logits, a.logit_conv(h).mean(dim=(2, 3)))
        torch.testing.assert_close(out.perception_logits, _by_hand(resnet18_eval, x, out.attention_map))


def test_zero_map_gives_plain_layer4(resnet18_eval):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = resnet18_eval(x, attention_map=torch.zeros(2, 1, 4, 4))
        features = resnet18_eval.features(x)
        plain = resnet18_eval.perception.fc(
            resnet18_eval.perception.avgpool(resnet18_eval.perception.layer4(features)).flatten(1)
        )
    assert torch.equal(out.perception_logits, plain)


def test_supplied_map_is_used(resnet18_eval):
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    edited = torch.rand(2, 1, 4, 4)
    with torch.no_grad():
        default = resnet18_eval(x)
        out = resnet18_eval(x, attention_map=edited)
        by_hand = _by_hand(resnet18_eval, x, edited)
    assert torch.equal(out.attention_map, edited)
    torch.testing.assert_close(out.predicted_map, default.attention_map)
    torch.testing.assert_close(out.attention_logits, default.attention_logits)
    torch.testing.assert_close(out.perception_logits, by_hand)
    assert not torch.allclose(out.perception_logits, default.perception_logits)


def test_broadcast_map(resnet18_eval):
    x = torch.randn(3, 3, 64, 64)
    edited = torch.rand(1, 1, 4, 4)
    with torch.no_grad():
        out = resnet18_eval(x, attention_map=edited)
        expanded = resnet18_eval(x, attention_map=edited.expand(3, 1, 4, 4).clone())
    assert out.attention_map.shape == (3, 1, 4, 4)
    assert torch.equal(out.perception_logits, expanded.perception_logits)


def test_map_gradient_reaches_attention_branch_only_when_used():
    model = _abn().train()
    x = torch.randn(2, 3, 32, 32)
    weight = model.attention.map_conv.weight
    (grad,) = torch.autograd.grad(model(x).perception_logits.sum(), weight, allow_unused=True)
    assert grad is not None and grad.abs().sum() > 0
    supplied = model(x, attention_map=torch.full((2, 1, 2, 2), 0.5)).perception_logits.sum()
    assert torch.autograd.grad(supplied, weight, allow_unused=True) == (None,)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.rand(2, 1, 5, 5), "must be 2 x 1 x 4 x 4"),
        (torch.rand(2, 4, 4), "must be 2 x 1 x 4 x 4"),
        (torch.rand(2, 2, 4, 4), "must be 2 x 1 x 4 x 4"),
        (torch.rand(3, 1, 4, 4), "must be 2 x 1 x 4 x 4"),
        (torch.full((2, 1, 4, 4), 1.5), r"in \[0, 1\]"),
        (torch.full((2, 1, 4, 4), -0.1), r"in \[0, 1\]"),
        (torch.full((2, 1, 4, 4), float("nan")), r"in \[0, 1\]"),
        (torch.ones(2, 1, 4, 4, dtype=torch.long), "floating-point"),
    ],
)
def test_bad_maps_raise(resnet18_eval, bad, message):
    with torch.no_grad(), pytest.raises(ValueError, match=message):
        resnet18_eval(torch.randn(2, 3, 64, 64), attention_map=bad)


def _resnet18_attention_branch_count(k: int) -> int:
    """Two stride-1 BasicBlocks 256 -> 512 (3x3 convs, BNs, 1x1 conv + BN shortcut), BN(512),
    conv1x1 512 -> k, BN(k), conv1x1 k -> k, conv3x3 k -> 1, BN(1); no conv biases."""
    bn = 2  # weight and bias per channel
    block1 = 9 * 256 * 512 + bn * 512 + 9 * 512 * 512 + bn * 512 + 256 * 512 + bn * 512
    block2 = 2 * (9 * 512 * 512 + bn * 512)
    head = bn * 512 + 512 * k + bn * k + k * k + 9 * k + bn * 1
    return block1 + block2 + head


@pytest.mark.parametrize("k", [K, 200])
def test_parameter_count_resnet18(k):
    model = _abn(num_classes=k)
    plain = create_model("resnet18", k, pretrained=False)
    branch = _resnet18_attention_branch_count(k)
    assert _count(model.attention.parameters()) == branch
    assert _count(model.parameters()) == _count(plain.parameters()) + branch
    assert _count(feature_extractor_parameters(model)) + _count(branch_parameters(model)) == _count(
        model.parameters()
    )
    ids = {id(p) for p in feature_extractor_parameters(model)}
    assert ids.isdisjoint(id(p) for p in branch_parameters(model))


def test_freeze_feature_extractor_keeps_weights_and_statistics():
    model = _abn()
    freeze_feature_extractor(model)
    parent = nn.ModuleDict({"model": model}).train()  # train() through a parent module
    assert model.training and model.attention.training and model.perception.training
    assert not any(m.training for m in model.features.modules())
    features_before = copy.deepcopy(model.features.state_dict())
    branches_before = copy.deepcopy({**model.attention.state_dict(), **model.perception.state_dict()})
    trainable = [p for p in parent.parameters() if p.requires_grad]
    assert _count(trainable) == _count(branch_parameters(model))
    optimizer = torch.optim.SGD(trainable, lr=0.1, momentum=0.9)
    torch.manual_seed(2)
    for _ in range(3):
        loss = abn_loss(model(torch.randn(4, 3, 32, 32)), torch.randint(0, K, (4,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, value in model.features.state_dict().items():
        assert torch.equal(value, features_before[name]), name
    assert all(p.grad is None for p in feature_extractor_parameters(model))
    after = {**model.attention.state_dict(), **model.perception.state_dict()}
    for name in ("blocks.0.conv1.weight", "map_conv.weight", "bn.running_mean", "map_bn.running_var"):
        assert not torch.equal(model.attention.state_dict()[name], branches_before[name]), name
    for name in ("layer4.0.conv1.weight", "fc.weight", "layer4.1.bn2.running_mean"):
        assert not torch.equal(model.perception.state_dict()[name], branches_before[name]), name
    assert after.keys() == branches_before.keys()


def test_abn_loss_is_sum_of_cross_entropies(resnet18_eval):
    with torch.no_grad():
        out = resnet18_eval(torch.randn(3, 3, 64, 64))
    labels = torch.tensor([0, 3, 4])
    expected = F.cross_entropy(out.attention_logits, labels) + F.cross_entropy(out.perception_logits, labels)
    torch.testing.assert_close(abn_loss(out, labels), expected)
    assert abn_loss(out, labels) > F.cross_entropy(out.perception_logits, labels)
