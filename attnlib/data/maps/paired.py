"""Images and their human maps under the same random crop and flip (torchvision.transforms.v2).

GALA trains on ClickMe images with identical random crops and flips of image and map (methods.md
section 4). The map travels as a ``tv_tensors.Mask`` beside the ``tv_tensors.Image``, so one v2
transform call draws one crop and one flip for both.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from attnlib.data.maps.sources import bounding_box_map

MapKind = Literal["clickme", "box"]


class PairedMaps(Dataset):
    """The items of ``base`` with a human map ``map`` (1 x H x W float32), both augmented together, and
    ``has_map``.

    The map is ``maps[i]`` when ``maps`` (N x 1 x H x W) is given (``has_map`` True), otherwise the item's
    own ``map`` and ``has_map`` (True when the item does not say; e.g.
    :class:`~attnlib.data.real.clickme.ClickMe`, whose map-less images carry a zero map). ``kind`` "box"
    replaces it by its bounding box (:func:`~attnlib.data.maps.sources.bounding_box_map` at ``box_threshold``;
    the paper's control; a map-less image keeps its zero map).
    ``padding`` > 0: a random crop of the image's size from the image padded by ``padding`` pixels
    (zeros) and a random horizontal flip; 0: no augmentation (evaluation).
    """

    def __init__(
        self,
        base: Any,
        maps: Tensor | None = None,
        kind: MapKind = "clickme",
        padding: int = 0,
        box_threshold: float = 0.1,
    ) -> None:
        if kind not in ("clickme", "box"):
            raise ValueError(f"map kind must be 'clickme' or 'box', got {kind!r}")
        if maps is not None and (maps.dim() != 4 or maps.shape[1] != 1 or len(maps) != len(base)):
            raise ValueError(f"maps must be N x 1 x H x W with N = {len(base)}, got {tuple(maps.shape)}")
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.base, self.maps, self.kind, self.padding, self.box_threshold = (
            base,
            maps,
            kind,
            padding,
            box_threshold,
        )
        self.label_names = base.label_names
        self._transform = None
        digest = hashlib.sha256(f"{base.fingerprint}:{kind}:{padding}:{box_threshold}".encode())
        if maps is not None:
            digest.update(maps.numpy().astype(np.float32).tobytes())
        self.fingerprint = digest.hexdigest()[:12]

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.base[i])
        human = self.maps[i] if self.maps is not None else torch.as_tensor(item["map"])
        if self.kind == "box":
            human = torch.from_numpy(bounding_box_map(human[0].numpy(), self.box_threshold))[None]
        image = torch.as_tensor(item["img"])
        if self.padding:
            if self._transform is None:
                size = tuple(image.shape[-2:])
                self._transform = v2.Compose(
                    [v2.RandomCrop(size, padding=self.padding), v2.RandomHorizontalFlip()]
                )
            image, human = self._transform(tv_tensors.Image(image), tv_tensors.Mask(human))
        item["img"] = image.as_subclass(Tensor)
        item["map"] = human.as_subclass(Tensor).float()
        item["has_map"] = self.maps is not None or bool(item.get("has_map", True))
        return item
