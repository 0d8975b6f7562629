"""Local-attention baselines of the global spatial attention paper: VGG-att3 and ResAttNet.

``VGGAtt3`` implements Jetley et al., "Learn to Pay Attention", ICLR 2018 (no maintained package
has it). ``resattnet`` builds Wang et al., "Residual Attention Network for Image Classification",
CVPR 2017, from pytorchcv (the imgclsmob model zoo that the global spatial attention paper used).
Both are registered in ``attnlib.models.registry`` (``vgg_att3``, ``resattnet56``, ``resattnet92``)
without pretrained weights.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Compatibility = Literal["pc", "dp"]
#: VGG-16's conv blocks as (output channels, number of 3x3 convs); blocks 3, 4, 5 give l1, l2, l3.
VGG16_BLOCKS: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
#: the smallest input side VGG-att3 accepts: five 2x max-pools after l1 leave a 1 x 1 map
MIN_SIDE = 32


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv (stride 1, padding 1, with bias as in VGG-16-BN) -> BatchNorm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _conv_block(in_channels: int, out_channels: int, n_convs: int) -> nn.Sequential:
    layers = [_conv_bn_relu(in_channels, out_channels)]
    layers += [_conv_bn_relu(out_channels, out_channels) for _ in range(n_convs - 1)]
    return nn.Sequential(*layers)


class VGGAtt3(nn.Module):
    """VGG-att3 (Jetley et al., "Learn to Pay Attention", ICLR 2018), "concat" mode.

    Body: the paper's VGG adaptation: VGG-16's 13 conv layers (3x3, BatchNorm, ReLU) in blocks
    ``block1`` .. ``block5`` with VGG's first two max-pools removed, so l1 keeps the input's
    resolution; then ``block6``: two more conv layers, each followed by a 2x max-pool.
    Local features: l1, l2, l3 are the outputs of conv layers 7, 10 and 13 (the last conv of blocks
    3, 4, 5, before their 2x max-pool): 256 x H x W, 512 x H/2 x W/2, 512 x H/4 x W/4.
    Global feature: ``g = fc(GAP(block6(.)))``, a 512 -> 512 linear layer (no activation) on the
    global average pool of block6's output (the adaptive pool lets any side >= 32 through; at 32 x 32
    block6's output is already 1 x 1).
    Projection: l1 has 256 channels, g 512: a learned 1x1 conv (256 -> 512, no bias) maps l1 to 512
    channels; the projected l1 is used both in the score and in g_a^1. l2 and l3 are used as they are.
    Compatibility: ``"pc"`` (the paper's parametrised compatibility, default) ``c_i = <u, l_i + g>``,
    one 1x1 conv 512 -> 1 without bias per attended layer (a bias would cancel in the softmax);
    ``"dp"`` the dot product ``c_i = <l_i, g>``, no parameters.
    Normalisation: softmax of the scores over the H x W positions of each layer (per sample):
    ``a = softmax(c)``. Attended vectors ``g_a^s = sum_i a_i l_i`` (512-d each); the classifier is
    a linear layer on their concatenation (1536 -> num_classes).
    ``forward(x, return_maps=True)`` also returns the three maps a^1, a^2, a^3 (B x 1 x H_s x W_s).
    """

    def __init__(self, num_classes: int, in_chans: int = 3, compatibility: Compatibility = "pc") -> None:
        super().__init__()
        if compatibility not in ("pc", "dp"):
            raise ValueError(f"compatibility must be 'pc' or 'dp', got {compatibility!r}")
        self.compatibility = compatibility
        channels = in_chans
        for index, (out_channels, n_convs) in enumerate(VGG16_BLOCKS, start=1):
            setattr(self, f"block{index}", _conv_block(channels, out_channels, n_convs))
            channels = out_channels
        self.pool = nn.MaxPool2d(2)
        self.block6 = nn.Sequential(
            _conv_bn_relu(512, 512), nn.MaxPool2d(2), _conv_bn_relu(512, 512), nn.MaxPool2d(2)
        )
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, 512)
        self.projector = nn.Conv2d(256, 512, 1, bias=False)
        self.scorers = (
            nn.ModuleList(nn.Conv2d(512, 1, 1, bias=False) for _ in range(3))
            if compatibility == "pc"
            else None
        )
        self.classifier = nn.Linear(3 * 512, num_classes)

    def local_and_global(self, x: Tensor) -> tuple[tuple[Tensor, Tensor, Tensor], Tensor]:
        """``((l1 projected to 512 channels, l2, l3), g)``: the local feature maps and g (B x 512)."""
        if min(x.shape[-2:]) < MIN_SIDE:
            raise ValueError(f"VGG-att3 needs input sides >= {MIN_SIDE}, got {tuple(x.shape[-2:])}")
        l1 = self.block3(self.block2(self.block1(x)))
        l2 = self.block4(self.pool(l1))
        l3 = self.block5(self.pool(l2))
        g = self.fc(self.global_pool(self.block6(self.pool(l3))).flatten(1))
        return (self.projector(l1), l2, l3), g

    def scores(self, local: tuple[Tensor, ...], g: Tensor) -> tuple[Tensor, ...]:
        """Compatibility scores c (B x 1 x H_s x W_s) of each local map with g (before the softmax)."""
        g_map = g[:, :, None, None]
        if self.scorers is None:
            return tuple((feature * g_map).sum(dim=1, keepdim=True) for feature in local)
        return tuple(scorer(feature + g_map) for scorer, feature in zip(self.scorers, local))

    def forward(self, x: Tensor, return_maps: bool = False) -> Tensor | tuple[Tensor, tuple[Tensor, ...]]:
        """Logits (B x num_classes); with ``return_maps`` also the attention maps a^1, a^2, a^3."""
        local, g = self.local_and_global(x)
        maps = tuple(_spatial_softmax(c) for c in self.scores(local, g))
        attended = [(a * feature).sum(dim=(2, 3)) for a, feature in zip(maps, local)]
        logits = self.classifier(torch.cat(attended, dim=1))
        return (logits, maps) if return_maps else logits

    def attention_maps(self, x: Tensor) -> tuple[Tensor, ...]:
        """The attention maps a^1, a^2, a^3 of ``x`` (B x 1 x H_s x W_s, each summing to 1)."""
        return self.forward(x, return_maps=True)[1]


def _spatial_softmax(scores: Tensor) -> Tensor:
    """Softmax over the H x W positions of each B x 1 x H x W score map."""
    return scores.flatten(1).softmax(dim=1).view_as(scores)


def resattnet(depth: Literal[56, 92]) -> nn.Module:
    """pytorchcv's ResAttNet-56 or -92 (Wang et al., CVPR 2017), random weights, 1000-class head.

    One change to pytorchcv's network: its final ``AvgPool2d(7)`` (``features.final_pool``), which
    only fits 224 x 224 inputs, is replaced by ``nn.AdaptiveAvgPool2d(1)``. Input sides must still be
    multiples of 32: the attention modules' hourglasses upsample by exactly 2 and add skip maps.
    Pretrained weights are never requested (pytorchcv would download them).
    """
    from pytorchcv.model_provider import get_model  # imports every pytorchcv model: only when needed

    if depth not in (56, 92):
        raise ValueError(f"depth must be 56 or 92, got {depth}")
    model = get_model(f"resattnet{depth}", pretrained=False)
    model.features.final_pool = nn.AdaptiveAvgPool2d(1)
    model.register_forward_pre_hook(_sides_multiple_of_32)
    return model


def _sides_multiple_of_32(module: nn.Module, args: tuple[Tensor, ...]) -> None:
    """ResAttNet's hourglasses need input sides divisible by 32: say so instead of a shape error deep inside."""
    h, w = args[0].shape[-2:]
    if h % 32 or w % 32:
        raise ValueError(f"ResAttNet needs input sides that are multiples of 32, got {h} x {w}; resize the images")
