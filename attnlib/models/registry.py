"""Backbone registry: ``create_model(name, num_classes, in_chans, pretrained)`` for every paper.

A leaf module: the families register themselves (:mod:`attnlib.models.backbones`: torchvision's and the
local-attention baselines; :mod:`attnlib.models.gala`: GALA and SE ResNets), and importing the package
:mod:`attnlib.models`, which happens before any of its modules is imported, imports them all.

Pretrained weights are never downloaded. ImageNet weights are used only when torchvision's weight
file is already in torch.hub's cache, ``torch.hub.get_dir()/checkpoints/<file name of the weight
URL>`` (set ``TORCH_HOME`` to move it; copy the file there by hand on an offline machine).
Inputs are not normalised here: models see the dataset's images as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision.models import WeightsEnum

log = logging.getLogger(__name__)

Pretrained = Literal["auto"] | bool
#: How ``in_chans=1`` adapts the stem: sum its RGB kernels, or copy the grey image into its channels.
GreyInput = Literal["sum", "replicate"]
#: ``build(weights=...)``: the network with its original (ImageNet) head, ``weights`` loaded when not None.
Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and where its parts are (dotted module paths)."""

    name: str
    build: Builder
    weights: WeightsEnum | None
    stem: str
    head: str
    feature_layer: str
    grey_input: GreyInput = "sum"


#: ``build(model, backbone, num_classes, **options)``: a built backbone turned into another network (CAM, ABN, GALA).
HeadBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class HeadSpec:
    """A head that turns a registered backbone into a paper's network, and the check of which backbones it
    supports (``ValueError`` naming them)."""

    name: str
    build: HeadBuilder
    check: Callable[[str], None]


_REGISTRY: dict[str, BackboneSpec] = {}
_HEADS: dict[str, HeadSpec] = {}
#: Weight files already reported missing in this process (see ``_pretrained_file``).
_WARNED_MISSING: set[Path] = set()


def register_backbone(
    name: str,
    *,
    weights: WeightsEnum | None,
    stem: str,
    head: str,
    feature_layer: str,
    grey_input: GreyInput = "sum",
) -> Callable[[Builder], Builder]:
    """Decorator registering ``build(weights=...) -> nn.Module`` as backbone ``name``.

    ``stem`` is the first convolution (adapted for ``in_chans=1`` as ``grey_input`` says, see
    ``create_model``), ``head`` the final ``nn.Linear`` (replaced for ``num_classes``),
    ``feature_layer`` the last feature block (where a CAM layer attaches), all as dotted paths for
    ``nn.Module.get_submodule``.
    """

    def decorator(build: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = BackboneSpec(name, build, weights, stem, head, feature_layer, grey_input)
        return build

    return decorator


def register_head(name: str, *, check: Callable[[str], None]) -> Callable[[HeadBuilder], HeadBuilder]:
    """Decorator registering ``build(model, backbone, num_classes, **options)`` as head ``name`` of
    ``create_model``; ``check(backbone)`` raises ``ValueError`` for a backbone the head does not support."""

    def decorator(build: HeadBuilder) -> HeadBuilder:
        if name in _HEADS:
            raise ValueError(f"head {name!r} is already registered")
        _HEADS[name] = HeadSpec(name, build, check)
        return build

    return decorator


def list_heads() -> list[str]:
    """Names of all registered heads, sorted."""
    return sorted(_HEADS)


def list_models() -> list[str]:
    """Names of all registered backbones, sorted."""
    return sorted(_REGISTRY)


def get_backbone(name: str) -> BackboneSpec:
    """The registration of backbone ``name`` (``KeyError`` listing the known names otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; registered: {', '.join(list_models())}") from None


def feature_layer(name: str) -> str:
    """Dotted path of backbone ``name``'s last feature block, e.g. ``"layer4"`` for a ResNet."""
    return get_backbone(name).feature_layer


def weight_path(name: str) -> Path | None:
    """Where backbone ``name``'s ImageNet weight file must be in torch.hub's cache (None: no weights)."""
    weights = get_backbone(name).weights
    if weights is None:
        return None
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def create_model(
    name: str,
    num_classes: int,
    in_chans: int = 3,
    pretrained: Pretrained = "auto",
    head: str | None = None,
    **options: Any,
) -> nn.Module:
    """Build backbone ``name`` with a fresh ``num_classes`` head and ``in_chans`` input channels; with
    ``head`` (``list_heads()``: ``"cam"``, ``"abn"``, ``"gala"``), that network built on it, ``options`` going
    to the head (e.g. ``channel_mean=True`` for ``"cam"``, ``variant="public"`` for ``"gala"``).

    ``pretrained``: ``"auto"`` loads the cached ImageNet weights when the file is there and
    otherwise warns (once per file and process) that the model starts from random weights;
    ``True`` requires the file (``FileNotFoundError`` naming it); ``False`` always starts from
    random weights.
    ``in_chans=1`` replaces the first convolution by one whose kernel is the sum of the RGB
    kernels (the standard grey-scale adaptation of pretrained weights), or, for backbones registered
    with ``grey_input="replicate"``, by a ``ReplicatedGreyConv2d`` that copies the grey image into
    the three input channels. The model carries
    ``attnlib_backbone``, ``attnlib_feature_layer`` and ``attnlib_weights`` (``"imagenet:<path>"``
    or ``"random"``).
    """
    if head is not None:
        if head not in _HEADS:
            raise KeyError(f"unknown head {head!r}; registered: {', '.join(list_heads())}")
        _HEADS[head].check(name)
    elif options:
        raise TypeError(f"options {sorted(options)} are for a head, but no head was given")
    spec = get_backbone(name)
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    path = _pretrained_file(spec, pretrained)
    model = spec.build(weights=spec.weights if path is not None else None)
    if in_chans == 1:
        stem = model.get_submodule(spec.stem)
        grey = _grey_conv(stem) if spec.grey_input == "sum" else ReplicatedGreyConv2d(stem)
        set_submodule(model, spec.stem, grey)
    linear = model.get_submodule(spec.head)
    set_submodule(model, spec.head, nn.Linear(linear.in_features, num_classes))
    model.attnlib_backbone = name
    model.attnlib_feature_layer = spec.feature_layer
    model.attnlib_weights = f"imagenet:{path}" if path is not None else "random"
    return model if head is None else _HEADS[head].build(model, name, num_classes, **options)


def _pretrained_file(spec: BackboneSpec, pretrained: Pretrained) -> Path | None:
    """The weight file to load, or None for random weights (see ``create_model``)."""
    if pretrained not in ("auto", True, False):
        raise ValueError(f"pretrained must be 'auto', True or False, got {pretrained!r}")
    if pretrained is False:
        return None
    path = weight_path(spec.name)
    if path is None:
        if pretrained is True:
            raise ValueError(f"backbone {spec.name!r} has no pretrained weights")
        return None
    if path.is_file():
        return path
    if pretrained is True:
        raise FileNotFoundError(
            f"{path}: ImageNet weights for {spec.name} not found; attnlib never downloads them, "
            f"put torchvision's file there (from {spec.weights.url})"
        )
    # a study builds the same backbone many times: warn once per missing file and process, then log at INFO
    level = logging.INFO if path in _WARNED_MISSING else logging.WARNING
    _WARNED_MISSING.add(path)
    log.log(
        level,
        "%s starts from RANDOM weights: no ImageNet weight file at %s (attnlib never downloads; "
        "copy torchvision's file from %s there to use it)",
        spec.name,
        path,
        spec.weights.url,
    )
    return None


def _geometry(conv: nn.Conv2d) -> dict[str, Any]:
    """The keyword arguments that rebuild ``conv``'s kernel, strides, padding, groups and bias."""
    return {
        "kernel_size": conv.kernel_size,
        "stride": conv.stride,
        "padding": conv.padding,
        "dilation": conv.dilation,
        "groups": conv.groups,
        "bias": conv.bias is not None,
        "padding_mode": conv.padding_mode,
    }


def _grey_conv(conv: nn.Module) -> nn.Conv2d:
    """A one-channel copy of ``conv`` whose kernel is the sum of the RGB kernels."""
    if not isinstance(conv, nn.Conv2d) or conv.in_channels != 3:
        raise TypeError(f"expected a 3-channel Conv2d stem, got {conv!r}")
    grey = nn.Conv2d(1, conv.out_channels, **_geometry(conv))
    with torch.no_grad():
        grey.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            grey.bias.copy_(conv.bias)
    return grey


class ReplicatedGreyConv2d(nn.Conv2d):
    """A k-channel convolution that takes one grey channel and copies it into its k input channels.

    The same function as ``_grey_conv``'s one-channel kernel (the sum of the k kernels), but the k
    kernels stay separate parameters: k times as many, initialised and updated one by one (under
    Adam their sum moves about k times as far per step). ``in_channels`` is 1, what the layer takes;
    ``replicas`` is k. Its state dict is the k-channel convolution's.
    """

    def __init__(self, conv: nn.Module) -> None:
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"expected a Conv2d stem, got {conv!r}")
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            **_geometry(conv),
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        self.load_state_dict(conv.state_dict())
        self.replicas = conv.in_channels
        self.in_channels = 1

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != 1:
            raise ValueError(f"expected one grey channel, got input of shape {tuple(x.shape)}")
        return super().forward(x.expand(-1, self.replicas, -1, -1))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, replicas={self.replicas}"


def set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the sub-module at dotted ``path``."""
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent), child, module)
