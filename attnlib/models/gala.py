"""GALA-ResNets and SE-ResNets of Linsley et al., "Learning what and where to attend", ICLR 2019.

* ``GALABlock``: the global-and-local attention module (GALA, Sec. 3), with the paper's form
  (``variant="paper"``) or the public TensorFlow code's (``variant="public"``).
* GALA-ResNet (``create_model(backbone, ..., head="gala")``; registered as ``gala_resnet18/34/50``): a torchvision ResNet
  with a GALA block in every block of its third stage (``layer3``: 6 blocks in ResNet-50, 14 x 14
  at 224 input), on the residual path (paper) or on the block's input (public code).
* SE-ResNet (registered as ``seresnet18/34/50``): squeeze-and-excitation (reduction 16) after the
  last BatchNorm of every block's residual path, the paper's SE-ResNet-50 baseline.
* ``forward_with_volumes``: the logits and the volumes the ClickMe loss supervises (GALA's attention
  volumes A, or for plain and SE ResNets the activity of layer3's blocks, the paper's control).

Registered names take torchvision's ImageNet ResNet weights when cached (``registry.create_model``);
the GALA and SE modules always start fresh.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models import WeightsEnum
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import SqueezeExcitation

from attnlib.models.registry import Builder, get_backbone, register_backbone, register_head

Variant = Literal["paper", "public"]
Placement = Literal["residual", "input"]

VARIANTS: tuple[str, ...] = ("paper", "public")
#: torchvision ResNets that GALA and SE versions exist for (registered as gala_<name>, se<name>)
BACKBONES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "slim_resnet10")
#: GALA's reduction ratio r (paper Sec. 3 and public code: 4) and SE-ResNet's (Hu et al.: 16)
GALA_REDUCTION = 4
SE_REDUCTION = 16
#: the stage whose blocks get GALA (and whose activity the control supervises)
SUPERVISED_STAGE = "layer3"


class GALABlock(nn.Module):
    """Global-and-local attention (GALA, Sec. 3) on an activity volume U (B x C x H x W).

    * global path ("what"): G = fc2(ReLU(fc1(GAP(U)))), squeeze-and-excitation without its final
      sigmoid, C -> C/r -> C (``global_path``, a ``torchvision.ops.SqueezeExcitation`` whose layers
      are used directly), one value per channel;
    * local path ("where"): S = conv(ReLU(conv(U))), 1x1 convolutions C -> C/r -> 1, one value per
      position (``local_path``). ``variant="public"`` (the public TensorFlow code's
      ``feature_attention_gala``, ``extra_convs=1``) inserts a 5x5 conv C/r -> C/r (padding 2)
      followed by a ReLU between the first 1x1 conv's ReLU and the last 1x1 conv;
    * integration: G (B x C x 1 x 1) and S (B x 1 x H x W) broadcast to C x H x W, and
      A = squash(a_c (G + S) + m_c (G * S)) with learnable per-channel a and m, squash = tanh
      (paper) or sigmoid (public code, ``squash``).

    ``forward(U)`` returns U * A and keeps a detached copy of A in ``last_attention`` (for
    inspection; a loss on A takes it from ``forward_with_volumes``, which keeps the graph).
    Initialisation: a = m = 1 (the paper does not state one; the public code draws both from a
    variance-scaling normal); the convolutions have PyTorch's default initialisation.
    """

    def __init__(self, channels: int, reduction: int = GALA_REDUCTION, variant: Variant = "paper") -> None:
        super().__init__()
        _check_variant(variant)
        if reduction < 1 or channels // reduction < 1:
            raise ValueError(f"reduction must be in 1..{channels} for {channels} channels, got {reduction}")
        hidden = channels // reduction
        self.variant = variant
        self.global_path = SqueezeExcitation(channels, hidden, scale_activation=nn.Identity)
        spatial = [nn.Conv2d(hidden, hidden, 5, padding=2), nn.ReLU()] if variant == "public" else []
        self.local_path = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(), *spatial, nn.Conv2d(hidden, 1, 1)
        )
        self.a = nn.Parameter(torch.ones(channels))
        self.m = nn.Parameter(torch.ones(channels))
        self.squash = nn.Tanh() if variant == "paper" else nn.Sigmoid()
        self.last_attention: Tensor | None = None

    def global_features(self, u: Tensor) -> Tensor:
        """G, B x C x 1 x 1: the SE module's scale before its sigmoid."""
        se = self.global_path
        return se.fc2(se.activation(se.fc1(se.avgpool(u))))

    def local_features(self, u: Tensor) -> Tensor:
        """S, B x 1 x H x W."""
        return self.local_path(u)

    def attention(self, u: Tensor) -> Tensor:
        """A = squash(a (G + S) + m (G * S)), B x C x H x W."""
        g, s = self.global_features(u), self.local_features(u)
        a, m = self.a.view(1, -1, 1, 1), self.m.view(1, -1, 1, 1)
        return self.squash(a * (g + s) + m * (g * s))

    def forward(self, u: Tensor) -> Tensor:
        attention = self.attention(u)
        self.last_attention = attention.detach()
        return u * attention


class AttendedBlock(nn.Module):
    """A torchvision ``BasicBlock`` or ``Bottleneck`` with an ``attention`` module inserted.

    ``placement="residual"``: ``relu(attention(residual(x)) + shortcut(x))``, the attention after
    the residual path's last BatchNorm (GALA paper, SE-ResNet); ``placement="input"``:
    ``block(attention(x))`` (GALA public code). The block's own modules become this module's
    children under their names (``conv1``, ``bn1``, ..., ``downsample``), so a plain ResNet's
    state-dict keys stay valid and only ``attention.*`` keys are new.
    """

    def __init__(self, block: nn.Module, attention: nn.Module, placement: Placement) -> None:
        super().__init__()
        if not isinstance(block, (BasicBlock, Bottleneck)):
            raise TypeError(f"expected a torchvision BasicBlock or Bottleneck, got {type(block).__name__}")
        if placement not in ("residual", "input"):
            raise ValueError(f"placement must be 'residual' or 'input', got {placement!r}")
        for name, child in block.named_children():
            self.add_module(name, child)
        self.downsample = block.downsample
        self.bottleneck = isinstance(block, Bottleneck)
        self.attention = attention
        self.placement = placement

    def residual(self, x: Tensor) -> Tensor:
        """The block's residual path up to its last BatchNorm (torchvision's order of operations)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.bottleneck:
            out = self.bn3(self.conv3(self.relu(out)))
        return out

    def forward(self, x: Tensor) -> Tensor:
        if self.placement == "input":
            x = self.attention(x)
        out = self.residual(x)
        if self.placement == "residual":
            out = self.attention(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


def add_gala_blocks(
    model: nn.Module, variant: Variant = "paper", reduction: int = GALA_REDUCTION
) -> nn.Module:
    """Put a fresh ``GALABlock`` into every block of ``model.layer3`` (in place; returns ``model``).

    ``variant="paper"``: on the residual path of each block (the paper's ResNet-50: GALA modules in
    the third stage, on the residual path), sized to the block's output channels. ``"public"``: the
    public code's module applied to each block's input, sized to its input channels (the first
    block's input is stage 2's output, before the stride). Sets ``model.attnlib_gala_variant``.
    """
    _check_variant(variant)
    stage = model.get_submodule(SUPERVISED_STAGE)
    for index, block in enumerate(stage):
        channels = _block_channels(block, output=variant == "paper")
        gala = GALABlock(channels, reduction, variant)
        stage[index] = AttendedBlock(block, gala, "residual" if variant == "paper" else "input")
    model.attnlib_gala_variant = variant
    return model


def add_squeeze_excitation(model: nn.Module, reduction: int = SE_REDUCTION) -> nn.Module:
    """SE-ResNet (Hu et al., CVPR 2018): a fresh ``torchvision.ops.SqueezeExcitation`` (C -> C/r -> C,
    sigmoid) after the last BatchNorm of the residual path of every block of ``layer1..layer4``
    (in place; returns ``model``)."""
    for stage_name in ("layer1", "layer2", "layer3", "layer4"):
        stage = model.get_submodule(stage_name)
        for index, block in enumerate(stage):
            channels = _block_channels(block, output=True)
            stage[index] = AttendedBlock(
                block, SqueezeExcitation(channels, channels // reduction), "residual"
            )
    return model


def gala_blocks(model: nn.Module) -> list[tuple[str, GALABlock]]:
    """The model's GALA blocks with their dotted names, in module order."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, GALABlock)]


def supervised_layer_names(model: nn.Module) -> list[str]:
    """Dotted names of the modules whose volumes ``forward_with_volumes`` returns, in order.

    GALA models: their GALA blocks (volume: the attention A). Other ResNets (plain, SE): the blocks
    of ``layer3`` (volume: the block's output activity), the paper's "map loss on plain activity
    volumes" control at GALA's positions.
    """
    return [name for name, _ in _volume_taps(model)]


def forward_with_volumes(model: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """``model(x)`` and the volumes the ClickMe loss supervises (see ``supervised_layer_names``).

    GALA models give the attention volume A of every GALA block (B x C x H x W, in the graph, so a
    loss on them reaches the GALA parameters); other ResNets give layer3's block outputs. Temporary
    forward hooks capture them and are removed before returning (also when the forward raises), so
    nothing outlives the call.
    """
    taps = _volume_taps(model)
    captured: dict[int, Tensor] = {}
    handles = [
        module.register_forward_hook(_capture(captured, index)) for index, (_, module) in enumerate(taps)
    ]
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for index, (name, _) in enumerate(taps) if index not in captured]
    if missing:
        raise RuntimeError(f"the forward pass did not run {missing}")
    return logits, [captured[index] for index in range(len(taps))]


def _volume_taps(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(supervised layer name, module whose output is its volume: a GALA block's ``squash`` or a block)."""
    blocks = gala_blocks(model)
    if blocks:
        return [(name, block.squash) for name, block in blocks]
    try:
        stage = model.get_submodule(SUPERVISED_STAGE)
    except AttributeError:
        raise ValueError(f"model has neither GALA blocks nor a {SUPERVISED_STAGE!r} stage") from None
    return [(f"{SUPERVISED_STAGE}.{name}", block) for name, block in stage.named_children()]


def _capture(store: dict[int, Tensor], index: int) -> Callable[[nn.Module, tuple, Tensor], None]:
    """A forward hook storing the module's output at ``store[index]``."""

    def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        store[index] = output

    return hook


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def _check_backbone(backbone: str) -> None:
    if backbone not in BACKBONES:
        raise ValueError(f"no GALA/SE version of backbone {backbone!r}; supported: {', '.join(BACKBONES)}")


@register_head("gala", check=_check_backbone)
def _gala_head(model: nn.Module, backbone: str, num_classes: int, variant: Variant = "paper") -> nn.Module:
    """``create_model(backbone, ..., head="gala")``: GALA-ResNet, the ResNet + ``add_gala_blocks``.

    The ResNet part has the cached ImageNet weights when ``create_model`` loads them (its head is new); the
    GALA blocks are always new. ``variant="paper"`` is what ``create_model("gala_<backbone>")`` builds. The
    model's ``attnlib_backbone`` is ``"gala_<backbone>"`` and ``attnlib_gala_variant`` the variant. Supported
    backbones: ``BACKBONES``.
    """
    _check_variant(variant)
    add_gala_blocks(model, variant)
    model.attnlib_backbone = f"gala_{backbone}"
    return model


def _block_channels(block: nn.Module, output: bool) -> int:
    """A torchvision ResNet block's output (``output=True``) or input channels."""
    if isinstance(block, Bottleneck):
        return block.conv3.out_channels if output else block.conv1.in_channels
    if isinstance(block, BasicBlock):
        return block.conv2.out_channels if output else block.conv1.in_channels
    raise TypeError(f"expected a torchvision BasicBlock or Bottleneck, got {type(block).__name__}")


def _register() -> None:
    """Register ``gala_<name>`` (paper variant) and ``se<name>`` for every name in ``BACKBONES``, with the
    plain ResNet's ImageNet weights, stem and head."""
    for backbone in BACKBONES:
        spec = get_backbone(backbone)
        parts = {
            "weights": spec.weights,
            "stem": spec.stem,
            "head": spec.head,
            "feature_layer": spec.feature_layer,
        }
        build = spec.build

        @register_backbone(f"gala_{backbone}", **parts)
        def _gala(*, weights: WeightsEnum | None, build: Builder = build) -> nn.Module:
            return add_gala_blocks(build(weights=weights))

        @register_backbone(f"se{backbone}", **parts)
        def _se(*, weights: WeightsEnum | None, build: Builder = build) -> nn.Module:
            return add_squeeze_excitation(build(weights=weights))


_register()
