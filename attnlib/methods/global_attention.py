"""Global spatial attention (paper 2) and its L1 baseline as training methods.

``GlobalAttention`` trains an image CNN on ``X * M``, where M (H x W) comes from a pixel CNN over the
whole training set (``attnlib.models.pixel_attention``), with loss ``CE + lambda |M|_1``; after the
cut-off epoch E the pixel CNN is frozen and M is computed once for good. ``PixelWeightL1`` is the
baseline with a free per-pixel weight W (init 1) and a mean-|W| penalty. The vanilla CNN is
``attnlib.methods.base.Classifier``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlib.losses.global_attention import REDUCTIONS, Reduction, l1_penalty, penalised_loss
from attnlib.methods.base import Method, StepOutput
from attnlib.models.pixel_attention import (
    ACTIVATIONS,
    Activation,
    PixelCNN,
    PixelWeight,
    apply_weight_map,
    check_pixel_memory,
    pixel_representation,
)

log = logging.getLogger(__name__)

@dataclass
class GlobalAttentionConfig:
    """Pixel-CNN and loss set-up of paper 2 (learning rate, weight decay, epochs live in ``TrainConfig``).

    ``k``: K, channels of the pixel CNN's first conv (paper: {32, 62, 128, 256}); ``kernel_size`` its
    size (3); ``l1_weight``: lambda (paper: {0.1, 0.01, 0.001, 0.0001}); ``cutoff_epoch``: E, the last
    epoch in which the pixel CNN trains (60 of 250 in the paper).
    ``l1_reduction``: the paper writes ``|M|_1`` without saying whether it is summed or averaged. The
    default ``"mean"`` keeps lambda's scale independent of the image size and matches the paper's
    sensitivity study: with a sum over e.g. 224 x 224 pixels, lambda = 0.1 would weigh the penalty
    thousands of times more than the cross-entropy (M near 0.5 gives |M|_1 ~ 25,000), yet accuracy is
    reported flat over lambda in {0.1 ... 0.0001} and hurt only by lambda ~ 10, which under the mean is
    the first value where the penalty outweighs CE. The L1 baseline is also said to average over pixels.
    """

    k: int = 32
    activation: Activation = "relu"
    kernel_size: int = 3
    l1_weight: float = 0.01
    l1_reduction: Reduction = "mean"
    cutoff_epoch: int = 60

    def __post_init__(self) -> None:
        if self.k < 1 or self.kernel_size < 1:
            raise ValueError(f"k and kernel_size must be positive, got {self.k}, {self.kernel_size}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.l1_weight < 0:
            raise ValueError(f"l1_weight must be non-negative, got {self.l1_weight}")
        if self.l1_reduction not in REDUCTIONS:
            raise ValueError(f"l1_reduction must be one of {REDUCTIONS}, got {self.l1_reduction!r}")
        if self.cutoff_epoch < 0:
            raise ValueError(f"cutoff_epoch must be non-negative, got {self.cutoff_epoch}")


class GlobalAttention(Method):
    """Paper 2's method: the image CNN sees ``X * M``, M = PixelCNN(P) shared by all images.

    ``train_images`` (N x C x H x W, the training set as the image CNN sees it) become the pixel
    representation P, held as a non-persistent buffer: it moves with ``.to(device)`` but is left out of
    ``state_dict()``, since it is data (N*C*H*W floats) rather than weights and would bloat every
    checkpoint; to load a checkpoint, build the method from the same training images.

    ``step`` reads ``img`` (B x C x H x W) and ``lab``. Losses: ``loss`` (CE + lambda L1), ``ce``, ``l1``
    (``|M|_1`` with the configured reduction); outputs ``logits`` and ``map`` (M expanded to B x 1 x H x W,
    a view). M is computed once per step; from epoch E + 1 on (``on_epoch_start``) the pixel CNN is
    frozen and M computed once and cached, so steps no longer run the pixel CNN. The cache is dropped on
    ``load_state_dict`` and recomputed from the loaded weights on first use.

    Memory guard: at construction (before the pixel CNN is built) and before P moves to another device
    or dtype (``.to``, ``.cuda``, ``.double``, ... all pass through ``_apply``), ``check_pixel_memory``
    raises ``PixelMemoryError`` if the pixel CNN's estimated memory exceeds what the target device has
    free; a refused move leaves the module as it was.
    """

    def __init__(
        self, image_cnn: nn.Module, train_images: Tensor, config: GlobalAttentionConfig | None = None
    ) -> None:
        super().__init__()
        self.image_cnn = image_cnn
        self.config = config or GlobalAttentionConfig()
        n, c, h, w = train_images.shape
        pixels = pixel_representation(train_images.detach().float())
        self._image_shape = (n, c, h, w)
        self._check_pixel_memory(pixels.device, pixels.element_size(), resident_bytes=pixels.nbytes)
        self.pixel_cnn = PixelCNN(n, c, self.config.k, self.config.kernel_size, self.config.activation)
        self.register_buffer("pixels", pixels, persistent=False)
        self.register_buffer("frozen_map", None, persistent=False)
        self.frozen = False
        self.register_load_state_dict_post_hook(_drop_frozen_map)

    def step(self, batch: Mapping[str, Any]) -> StepOutput:
        images = batch["img"]
        if images.shape[-2:] != self.pixels.shape[-2:]:
            raise ValueError(
                f"batch images are {tuple(images.shape[-2:])} but the pixel CNN was built on "
                f"{tuple(self.pixels.shape[-2:])} training images"
            )
        weight_map = self._weight_map()
        logits = self.image_cnn(apply_weight_map(images, weight_map))
        ce = F.cross_entropy(logits, batch["lab"])
        l1 = l1_penalty(weight_map.float(), self.config.l1_reduction)
        return StepOutput(
            losses={"loss": penalised_loss(ce, l1, self.config.l1_weight), "ce": ce, "l1": l1},
            outputs={"logits": logits, "map": weight_map.expand(len(images), 1, *weight_map.shape)},
        )

    def on_epoch_start(self, epoch: int) -> None:
        """Train the pixel CNN up to epoch E; from E + 1 on freeze it and fix M (also after a resume)."""
        freeze = epoch > self.config.cutoff_epoch
        if freeze != self.frozen:
            self.pixel_cnn.requires_grad_(not freeze)
            self.frozen = freeze
            self.frozen_map = None
            if freeze:
                log.info("epoch %d > cut-off %d: pixel CNN frozen", epoch, self.config.cutoff_epoch)
        if freeze:
            self._weight_map()

    def weight_map(self) -> Tensor:
        """The current M (H x W), without gradient."""
        with torch.no_grad():
            return self._weight_map().detach()

    def scalars(self) -> dict[str, float]:
        m = self.weight_map()
        return {"map_mean": m.mean().item(), "map_min": m.min().item(), "map_max": m.max().item()}

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> GlobalAttention:
        """Check the memory before P goes to another device or dtype (``fn`` of an empty tensor tells)."""
        target = fn(self.pixels.new_empty(0))
        if (target.device, target.dtype) != (self.pixels.device, self.pixels.dtype):
            self._check_pixel_memory(target.device, target.element_size())
        return super()._apply(fn, recurse)

    def _check_pixel_memory(self, device: torch.device, element_size: int, resident_bytes: int = 0) -> None:
        """``check_pixel_memory`` for this method's P and pixel CNN; ``resident_bytes``: P already there."""
        check_pixel_memory(
            *self._image_shape,
            self.config.k,
            self.config.kernel_size,
            device=device,
            element_size=element_size,
            resident_bytes=resident_bytes,
        )

    def _weight_map(self) -> Tensor:
        """M from the pixel CNN; once frozen, the cached M (computed in float32 on first use)."""
        if not self.frozen:
            return self.pixel_cnn(self.pixels)
        if self.frozen_map is None:
            with torch.no_grad(), torch.autocast(self.pixels.device.type, enabled=False):
                self.frozen_map = self.pixel_cnn(self.pixels)
        return self.frozen_map


def _drop_frozen_map(module: nn.Module, _incompatible_keys: Any) -> None:
    """Loaded pixel-CNN weights invalidate a cached M."""
    module.frozen_map = None


class PixelWeightL1(Method):
    """Paper 2's L1 baseline: the image CNN sees ``X * W``, W (H x W) learnable from 1, loss CE + c mean|W|.

    ``image_size``: (H, W); ``l1_weight``: the coefficient c (searched over powers of ten in the paper).
    Losses ``loss``, ``ce``, ``l1`` (mean |W|); outputs ``logits`` and ``map`` (W as B x 1 x H x W view).
    """

    def __init__(self, image_cnn: nn.Module, image_size: tuple[int, int], l1_weight: float = 0.01) -> None:
        super().__init__()
        if l1_weight < 0:
            raise ValueError(f"l1_weight must be non-negative, got {l1_weight}")
        self.image_cnn = image_cnn
        self.pixel_weight = PixelWeight(*image_size)
        self.l1_weight = l1_weight

    def step(self, batch: Mapping[str, Any]) -> StepOutput:
        images = batch["img"]
        logits = self.image_cnn(self.pixel_weight(images))
        ce = F.cross_entropy(logits, batch["lab"])
        weight = self.pixel_weight.weight
        l1 = l1_penalty(weight, "mean")
        return StepOutput(
            losses={"loss": penalised_loss(ce, l1, self.l1_weight), "ce": ce, "l1": l1},
            outputs={"logits": logits, "map": weight.expand(len(images), 1, *weight.shape)},
        )

    def scalars(self) -> dict[str, float]:
        return {"map_mean": self.pixel_weight.weight.detach().mean().item()}
