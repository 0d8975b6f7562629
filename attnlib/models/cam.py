"""GG-CAM's class activation mapping layer: a backbone whose GAP + linear head also returns the maps.

The CAM layer (GG-CAM Eqs. 1-6) has the linear layer's parameters W (C x K) and b (C) and applies
them before the spatial mean instead of after it:
``Omega[c,i,j] = sum_k W[c,k] A[k,i,j]`` and ``y_c = mean_ij Omega[c,i,j] + b_c``. The mean is
linear, so ``y`` equals ``W GAP(A) + b``, the standard classifier's logits, and the network is the
standard one with the maps Omega made visible.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlib.models.registry import register_head


def class_activation_maps(features: Tensor, weight: Tensor, channel_mean: bool = False) -> Tensor:
    """GG-CAM Eqs. 1-6, the maps: ``Omega[b,c,i,j] = sum_k W[c,k] A[b,k,i,j]`` (B x C x H x W).

    ``channel_mean=True`` divides by K (the public code's variant, see ``CAMHead``).
    """
    omega = F.conv2d(features, weight[:, :, None, None])
    return omega / weight.shape[1] if channel_mean else omega


def cam_logits(omega: Tensor, bias: Tensor) -> Tensor:
    """GG-CAM Eqs. 1-6, the logits: ``y[b,c] = mean_ij Omega[b,c,i,j] + b_c`` (B x C)."""
    return omega.mean(dim=(2, 3)) + bias


class CAMHead(nn.Module):
    """The CAM layer replacing GAP + ``nn.Linear(in_features, num_classes)`` (GG-CAM Eqs. 1-6).

    Same parameters (``weight`` C x K, ``bias`` C) and the same initialisation as the linear layer;
    ``forward`` returns ``(logits, omega)``. ``channel_mean=False`` (the paper) gives exactly the
    linear layer's logits on GAP(A). ``channel_mean=True`` is the public code's variant: its CAM
    layer averages over the K feature channels instead of summing, so Omega is divided by K and so
    is the spatial part of the logits (``W GAP(A) / K + b``), no longer the linear layer's output.
    """

    def __init__(self, in_features: int, num_classes: int, channel_mean: bool = False) -> None:
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes
        self.channel_mean = channel_mean
        linear = nn.Linear(in_features, num_classes)  # its initialisation
        self.weight = linear.weight
        self.bias = linear.bias

    @classmethod
    def from_linear(cls, linear: nn.Linear, channel_mean: bool = False) -> CAMHead:
        """A CAM layer holding a copy of ``linear``'s weight and bias."""
        if linear.bias is None:
            raise ValueError("the CAM layer needs a linear layer with a bias")
        head = cls(linear.in_features, linear.out_features, channel_mean)
        head.to(device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            head.weight.copy_(linear.weight)
            head.bias.copy_(linear.bias)
        return head

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits B x C, omega B x C x H x W)`` of features A (B x K x H x W)."""
        if features.dim() != 4 or features.shape[1] != self.in_features:
            raise ValueError(
                f"expected features B x {self.in_features} x H x W, got {tuple(features.shape)}"
            )
        omega = class_activation_maps(features, self.weight, self.channel_mean)
        return cam_logits(omega, self.bias), omega

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, "
            f"channel_mean={self.channel_mean}"
        )


class CAMNet(nn.Module):
    """Feature extractor -> (channel dropout) -> CAM head; ``forward(x) -> (logits, omega)``.

    ``dropout`` > 0 applies ``nn.Dropout2d`` to the features A (see ``cam_from_classifier``).
    ``attnlib_weights`` records the backbone's starting weights as ``create_model`` does.
    """

    def __init__(
        self,
        features: nn.Module,
        head: CAMHead,
        dropout: float = 0.0,
        backbone: str = "custom",
        weights: str = "random",
    ) -> None:
        super().__init__()
        self.features = features
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.head = head
        self.attnlib_backbone = backbone
        self.attnlib_weights = weights

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.dropout(self.features(x)))


class _Parts(NamedTuple):
    features: nn.Module
    dropout: float
    linear: nn.Linear


_RESNET_FEATURES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _resnet_parts(model: nn.Module) -> _Parts:
    """conv1 .. layer4 (ResNet's forward up to its average pool), no dropout, ``fc``."""
    features = nn.Sequential(OrderedDict((name, model.get_submodule(name)) for name in _RESNET_FEATURES))
    return _Parts(features, 0.0, model.fc)


def _efficientnet_parts(model: nn.Module) -> _Parts:
    """``features``, the classifier's Dropout probability, ``classifier[1]``."""
    dropout, linear = model.classifier
    if not isinstance(dropout, nn.Dropout):
        raise TypeError(f"expected the EfficientNet classifier to start with Dropout, got {dropout!r}")
    return _Parts(model.features, dropout.p, linear)


_SUPPORTED: dict[str, Callable[[nn.Module], _Parts]] = {
    "resnet18": _resnet_parts,
    "resnet34": _resnet_parts,
    "resnet50": _resnet_parts,
    "resnet152": _resnet_parts,
    "slim_resnet10": _resnet_parts,  # the benchmark's small CPU network
    "resnet50_ggcam_public": _resnet_parts,  # the GG-CAM public code's ResNet-50 (max-pool an identity)
    "efficientnet_b0": _efficientnet_parts,
    "efficientnet_v2_s": _efficientnet_parts,
}


def cam_backbones() -> list[str]:
    """Backbones that the ``"cam"`` head of ``create_model`` supports, sorted."""
    return sorted(_SUPPORTED)


def _check_supported(backbone: str) -> None:
    if backbone not in _SUPPORTED:
        raise ValueError(f"no CAM model for backbone {backbone!r}; supported: {', '.join(cam_backbones())}")


def cam_from_classifier(model: nn.Module, channel_mean: bool = False) -> CAMNet:
    """The CAM form of a classifier built by ``registry.create_model``, with the same parameters.

    The CAMNet shares ``model``'s feature modules (no copy; deep-copy ``model`` first to keep both
    apart) and its head holds a copy of the final linear layer, so in eval mode its logits are
    ``model``'s (``channel_mean=False``). ResNets: conv1 .. layer4, head from ``fc``. EfficientNets:
    ``features``, head from ``classifier[1]``; the classifier's ``Dropout(p)`` on the pooled
    features becomes ``Dropout2d(p)`` on A: identical in eval mode, and in training dropping channel k
    of A zeroes exactly the pooled feature k that the original dropout zeroes (with the same 1/(1-p)
    scaling), so the logits are distributed as the original's (same random draws, same logits).
    """
    backbone = getattr(model, "attnlib_backbone", None)
    if backbone is None:
        raise ValueError("model has no attnlib_backbone: build it with attnlib.models.registry.create_model")
    _check_supported(backbone)
    parts = _SUPPORTED[backbone](model)
    return CAMNet(
        parts.features,
        CAMHead.from_linear(parts.linear, channel_mean),
        parts.dropout,
        backbone=backbone,
        weights=model.attnlib_weights,
    )


@register_head("cam", check=_check_supported)
def _cam_head(model: nn.Module, backbone: str, num_classes: int, channel_mean: bool = False) -> CAMNet:
    """``create_model(backbone, ..., head="cam")``: the classifier in its CAM form (``cam_from_classifier``);
    ``channel_mean=True`` is the public code's CAM layer (Omega / K, see ``CAMHead``). Supported backbones:
    ``cam_backbones()``."""
    return cam_from_classifier(model, channel_mean)


def cam_grid(model: CAMNet, image_size: tuple[int, int]) -> tuple[int, int]:
    """Omega's H x W for ``image_size`` (H, W) inputs: one zero image through the features, no grad.

    Runs in eval mode (no batch statistics used or updated) and restores every module's mode.
    """
    first = next(m for m in model.features.modules() if isinstance(m, nn.Conv2d))
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            x = first.weight.new_zeros(1, first.in_channels, *image_size)
            height, width = model.features(x).shape[-2:]
    finally:
        for module, training in modes.items():
            module.training = training
    return int(height), int(width)
