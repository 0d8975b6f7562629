"""Global spatial attention (paper 2): a pixel CNN maps the stacked training set to one weight map.

All N training images (C channels, H x W) are stacked along the channel axis into the pixel
representation P (1 x N*C x H x W). The pixel CNN (conv k x k with K channels, stride 1, same padding,
activation; conv 1 x 1 to one channel; sigmoid) turns P into a single H x W map M in (0, 1) that
weights every input image, ``X * M``. M depends only on the pixel CNN's weights, never on a batch.
``PixelWeight`` is the paper's L1 baseline: a free per-pixel weight W initialised to 1.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Activation = Literal["relu", "leaky_relu", "elu", "tanh"]
_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
}
ACTIVATIONS: tuple[str, ...] = Activation.__args__


def pixel_representation(images: Tensor) -> Tensor:
    """Paper 2's pixel representation P: the N x C x H x W training set as one 1 x (N*C) x H x W tensor.

    Image-major channel order: channel ``n * C + c`` of P is channel ``c`` of image ``n``
    (``P[0, n * C + c] == images[n, c]``).
    """
    if images.dim() != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    return images.reshape(1, n * c, h, w)


def apply_weight_map(images: Tensor, weight_map: Tensor) -> Tensor:
    """Paper 2's attended input ``X * M``: the H x W map broadcast over batch and channels."""
    return images * weight_map


def pixel_cnn_parameter_count(n_images: int, channels: int, k: int, kernel_size: int = 3) -> int:
    """Paper 2's parameter count of the pixel CNN, ``K(3*3*N*C + 1) + (K + 1)`` for a 3 x 3 first conv.

    ``k`` is K, the first conv's channels; ``kernel_size`` its spatial size (3 in the paper).
    """
    return k * (kernel_size * kernel_size * n_images * channels + 1) + (k + 1)


class PixelCNN(nn.Module):
    """Paper 2's pixel CNN: ``M = sigmoid(conv1x1(act(conv_kxk(P))))``, one H x W map in (0, 1).

    ``forward(P)`` takes the 1 x (N*C) x H x W pixel representation and returns M (H x W).
    """

    def __init__(
        self,
        n_images: int,
        channels: int,
        k: int = 32,
        kernel_size: int = 3,
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        if min(n_images, channels, k, kernel_size) < 1:
            raise ValueError(
                f"n_images, channels, k and kernel_size must be positive, "
                f"got {n_images}, {channels}, {k}, {kernel_size}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.in_channels = n_images * channels
        self.conv = nn.Conv2d(self.in_channels, k, kernel_size, stride=1, padding="same")
        self.activation = _ACTIVATIONS[activation]()
        self.head = nn.Conv2d(k, 1, 1)

    def forward(self, pixels: Tensor) -> Tensor:
        if pixels.dim() != 4 or pixels.shape[:2] != (1, self.in_channels):
            raise ValueError(
                f"expected the pixel representation 1 x {self.in_channels} x H x W, got {tuple(pixels.shape)}"
            )
        return torch.sigmoid(self.head(self.activation(self.conv(pixels))))[0, 0]


class PixelWeight(nn.Module):
    """Paper 2's L1 baseline weight: a learnable H x W map W, initialised to 1; ``forward(X) = X * W``."""

    def __init__(self, h: int, w: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(h, w))

    def forward(self, images: Tensor) -> Tensor:
        return apply_weight_map(images, self.weight)
