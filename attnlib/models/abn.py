"""Attention Branch Network (Fukui et al., "Attention Branch Network: Learning of Attention
Mechanism for Visual Explanation", CVPR 2019) on torchvision ResNets.

Structure (paper Sec. 3, Fig. 2; official code ``models/imagenet/resnet.py``):

* feature extractor: stem + layer1..layer3 of the ResNet, features F (14 x 14 for 224 input);
* attention branch: a stride-1 copy of layer4's block structure -> BN -> 1x1 conv to K classes
  -> BN -> ReLU, then (a) 1x1 conv (K -> K) -> global average pool = attention-branch logits and
  (b) 3x3 conv (K -> 1) -> BN -> sigmoid = attention map M (B x 1 x h x w);
* perception branch: the ResNet's layer4 on the attention mechanism's output ``F * M + F``
  -> global average pool -> a new fc for K classes.

Training loss (paper Sec. 3): ``L_abn = CE(attention logits) + CE(perception logits)``. A supplied
map replaces M in the perception branch (the paper's edited-map inference, the official code's
``forward(x, att=...)``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from attnlib.models.registry import register_head

_STEM = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")
_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet152", "slim_resnet10")


class ABNOutput(NamedTuple):
    """What ``ABNet.forward`` returns.

    ``attention_map`` is the map the perception branch used (the supplied one, expanded to the
    batch, or M); ``predicted_map`` is always the attention branch's own M (the two are the same
    tensor when no map is supplied), e.g. for a loss between M and an edited map.
    """

    attention_logits: Tensor
    perception_logits: Tensor
    attention_map: Tensor
    predicted_map: Tensor


class AttentionBranch(nn.Module):
    """ABN's attention branch on features F (B x in_channels x h x w): ``(logits B x K, M B x 1 x h x w)``.

    ``blocks`` are ``num_blocks`` fresh ``block``s of width ``planes`` (torchvision's BasicBlock or
    Bottleneck) as in the ResNet's layer4 but all with stride 1, so M keeps F's resolution; the
    first block has a 1x1 conv + BN shortcut where the channels change. The weights are freshly
    initialised as in the official code (Kaiming normal, fan_out, for convolutions; BN weight 1,
    bias 0), not copied from layer4. Convolutions have no bias, as in the official code.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        in_channels: int,
        planes: int,
        num_blocks: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        out_channels = planes * block.expansion
        shortcut = None
        if in_channels != out_channels:
            shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.blocks = nn.Sequential(
            block(in_channels, planes, stride=1, downsample=shortcut),
            *(block(out_channels, planes) for _ in range(num_blocks - 1)),
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.class_conv = nn.Conv2d(out_channels, num_classes, kernel_size=1, bias=False)
        self.class_bn = nn.BatchNorm2d(num_classes)
        self.relu = nn.ReLU(inplace=True)
        self.logit_conv = nn.Conv2d(num_classes, num_classes, kernel_size=1, bias=False)
        self.map_conv = nn.Conv2d(num_classes, 1, kernel_size=3, padding=1, bias=False)
        self.map_bn = nn.BatchNorm2d(1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        a = self.relu(self.class_bn(self.class_conv(self.bn(self.blocks(features)))))
        attention_map = torch.sigmoid(self.map_bn(self.map_conv(a)))
        logits = self.logit_conv(a).mean(dim=(2, 3))
        return logits, attention_map


class ABNet(nn.Module):
    """ResNet + ABN: ``features`` (stem..layer3), ``attention`` branch, ``perception`` branch.

    ``perception`` is ``layer4 -> avgpool -> flatten -> fc`` (the ResNet's own layer4 and fc).
    ``freeze_feature_extractor`` sets ``features_frozen``: ``train()`` then keeps ``features`` in
    eval mode, so its BatchNorm running statistics stay fixed.
    """

    def __init__(
        self,
        features: nn.Module,
        attention: AttentionBranch,
        perception: nn.Module,
        backbone: str = "custom",
        weights: str = "random",
    ) -> None:
        super().__init__()
        self.features = features
        self.attention = attention
        self.perception = perception
        self.features_frozen = False
        self.attnlib_backbone = backbone
        self.attnlib_weights = weights

    def train(self, mode: bool = True) -> ABNet:
        super().train(mode)
        if self.features_frozen:
            self.features.eval()
        return self

    def forward(self, x: Tensor, attention_map: Tensor | None = None) -> ABNOutput:
        """Both branches' logits and the maps; ``attention_map`` (B or 1 x 1 x h x w, in [0, 1])
        replaces M in the perception branch (edited-map inference)."""
        features = self.features(x)
        attention_logits, predicted = self.attention(features)
        if attention_map is None:
            used = predicted
        else:
            used = _check_map(attention_map, predicted.shape)
        perception_logits = self.perception(features * used + features)
        return ABNOutput(attention_logits, perception_logits, used, predicted)


def _check_map(attention_map: Tensor, shape: torch.Size) -> Tensor:
    """``attention_map`` expanded to ``shape`` (B x 1 x h x w); ValueError on a bad shape or values."""
    batch, _, height, width = shape
    if attention_map.dim() != 4 or tuple(attention_map.shape[1:]) != (1, height, width) or (
        attention_map.shape[0] not in (1, batch)
    ):
        raise ValueError(
            f"attention_map must be {batch} x 1 x {height} x {width} (or 1 x 1 x {height} x {width}), "
            f"got {tuple(attention_map.shape)}"
        )
    if not attention_map.is_floating_point():
        raise ValueError(f"attention_map must be a floating-point tensor, got {attention_map.dtype}")
    if not bool(((attention_map >= 0) & (attention_map <= 1)).all()):
        raise ValueError("attention_map values must lie in [0, 1] (and not be NaN)")
    return attention_map.expand(shape)


def abn_backbones() -> list[str]:
    """Backbones that the ``"abn"`` head of ``create_model`` supports, sorted."""
    return sorted(_BACKBONES)


def _check_abn(backbone: str) -> None:
    if backbone not in _BACKBONES:
        raise ValueError(f"no ABN for backbone {backbone!r}; supported: {', '.join(abn_backbones())}")


@register_head("abn", check=_check_abn)
def _abn_head(model: nn.Module, backbone: str, num_classes: int) -> ABNet:
    """``create_model(backbone, ..., head="abn")``: the ResNet turned into an ABN.

    The feature extractor and perception branch are the ResNet's modules (ImageNet weights when
    loaded, see ``create_model``; fc is new), the attention branch is always freshly initialised.
    Supported backbones: ``abn_backbones()``.
    """
    first = model.layer4[0]
    features = nn.Sequential(OrderedDict((name, model.get_submodule(name)) for name in _STEM))
    attention = AttentionBranch(
        type(first), first.conv1.in_channels, first.conv1.out_channels, len(model.layer4), num_classes
    )
    perception = nn.Sequential(
        OrderedDict(layer4=model.layer4, avgpool=model.avgpool, flatten=nn.Flatten(1), fc=model.fc)
    )
    return ABNet(features, attention, perception, backbone=backbone, weights=model.attnlib_weights)


def feature_extractor_parameters(model: ABNet) -> list[nn.Parameter]:
    """The feature extractor's (stem..layer3) parameters."""
    return list(model.features.parameters())


def branch_parameters(model: ABNet) -> list[nn.Parameter]:
    """The attention and perception branches' parameters (what ABN fine-tuning updates)."""
    return [*model.attention.parameters(), *model.perception.parameters()]


def freeze_feature_extractor(model: ABNet) -> None:
    """Freeze stem..layer3 for fine-tuning the branches only (the paper's edited-map fine-tuning).

    Sets ``requires_grad=False`` on the feature extractor's parameters and ``model.features_frozen``,
    so ``model.train()`` (also when called through a parent module) keeps ``model.features`` in eval
    mode: its BatchNorm layers normalise with, and never update, their running statistics.
    """
    for parameter in model.features.parameters():
        parameter.requires_grad_(False)
    model.features_frozen = True
    model.features.eval()
