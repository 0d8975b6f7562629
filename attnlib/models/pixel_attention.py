"""Global spatial attention (paper 2): a pixel CNN maps the stacked training set to one weight map.

All N training images (C channels, H x W) are stacked along the channel axis into the pixel
representation P (1 x N*C x H x W). The pixel CNN (conv k x k with K channels, stride 1, same padding,
activation; conv 1 x 1 to one channel; sigmoid) turns P into a single H x W map M in (0, 1) that
weights every input image, ``X * M``. M depends only on the pixel CNN's weights, never on a batch.
``PixelWeight`` is the paper's L1 baseline: a free per-pixel weight W initialised to 1.
P grows with N*C*H*W and the pixel CNN reads all of it every step: ``pixel_memory_bytes`` estimates
what training the pixel CNN needs and ``check_pixel_memory`` refuses a device that cannot hold it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

#: On the CPU, oneDNN's fast weight-gradient convolution refuses inputs of 2**31 bytes and more and falls
#: back to a reference kernel that is orders of magnitude slower (measured: benchmarks/global_attention_step.py).
CPU_FAST_CONV_LIMIT_BYTES = 2**31

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


class PixelMemoryError(MemoryError):
    """The pixel CNN's estimated memory exceeds what the device has free.

    A ``MemoryError`` (what ``except MemoryError`` handlers expect of a lack of memory), raised before
    anything is allocated, instead of an out-of-memory error deep inside a convolution.
    """


def pixel_memory_bytes(
    n: int,
    c: int,
    h: int,
    w: int,
    k: int,
    kernel_size: int = 3,
    *,
    device: str | torch.device = "cpu",
    element_size: int = 4,
) -> int:
    """Estimated bytes to train the pixel CNN on P (N x C x H x W images, first conv K x k x k) with Adam.

    Elements, each ``element_size`` bytes (4: float32):

    - P, ``N*C*H*W``; on the CPU twice, since oneDNN copies the convolution's input into its blocked
      layout (measured: the forward raises the peak RSS by a second P);
    - every weight of the pixel CNN (``pixel_cnn_parameter_count``, dominated by the first conv's
      ``K*k*k*N*C``) five times: weight, gradient, Adam's two moments and the temporary of Adam's update;
    - the first conv's ``K*H*W`` output and its activation, and the gradients of both: ``4*K*H*W``.

    Not counted: the few H x W maps of the head, the image CNN, and a cuDNN workspace on CUDA. On the CPU
    the measured growth of the peak RSS is 96-100 % of this estimate for N of 2,000 and more
    (``benchmarks/global_attention_step.py``).
    """
    pixel_copies = 2 if torch.device(device).type == "cpu" else 1
    elements = (
        pixel_copies * n * c * h * w + 5 * pixel_cnn_parameter_count(n, c, k, kernel_size) + 4 * k * h * w
    )
    return elements * element_size


def free_memory_bytes(device: str | torch.device) -> int | None:
    """Bytes free on ``device``: CUDA's free memory plus the caching allocator's unused reserve; on the
    CPU ``MemAvailable`` of /proc/meminfo (else free physical pages); None where unknown (other devices).
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def check_pixel_memory(
    n: int,
    c: int,
    h: int,
    w: int,
    k: int,
    kernel_size: int = 3,
    *,
    device: str | torch.device = "cpu",
    element_size: int = 4,
    resident_bytes: int = 0,
) -> int:
    """The ``pixel_memory_bytes`` estimate; raises ``PixelMemoryError`` when it exceeds the free memory.

    ``resident_bytes``: part of the estimate already allocated on ``device`` (e.g. P itself), hence not
    needed from the free memory. Devices whose free memory is unknown are not checked.
    """
    device = torch.device(device)
    needed = pixel_memory_bytes(n, c, h, w, k, kernel_size, device=device, element_size=element_size)
    free = free_memory_bytes(device)
    if free is not None and needed - resident_bytes > free:
        remedy = "smaller images, fewer training images" + (" or the CPU" if device.type == "cuda" else "")
        to_allocate = (needed - resident_bytes) / 2**30
        pending = f" ({to_allocate:.2f} GiB not yet allocated)" if resident_bytes else ""
        raise PixelMemoryError(
            f"the pixel CNN needs about {needed / 2**30:.2f} GiB{pending} on {device} for P of N={n} images "
            f"x C={c} x H={h} x W={w} ({n * c * h * w:,} values, K={k}), but only {free / 2**30:.2f} GiB "
            f"is free; use {remedy}"
        )
    if device.type == "cpu" and n * c * h * w * element_size >= CPU_FAST_CONV_LIMIT_BYTES:
        log.warning(
            "P of N=%d x C=%d x H=%d x W=%d is %.2f GiB, at or above 2 GiB: on the CPU oneDNN computes the pixel "
            "CNN's weight gradient with its slow reference kernel (minutes per step); use smaller or fewer images, "
            "or a GPU", n, c, h, w, n * c * h * w * element_size / 2**30,
        )
    return needed


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
