"""What the image loaders of the real layouts share: the dataset-contract item of an RGB image (ImageNet
standardisation optional) and the rule for hidden files (macOS resource forks and the like)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_item(i: int, image_id: str, img: np.ndarray, label: int, standardize: bool) -> dict[str, object]:
    """The dataset-contract item of an RGB image in [0, 1] (C x H x W), ImageNet-standardised when asked."""
    if standardize:
        mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
        std = np.asarray(IMAGENET_STD, dtype=np.float32)[:, None, None]
        img = (img - mean) / std
    return {"idx": i, "id": image_id, "img": torch.from_numpy(img), "lab": label}


def is_hidden(rel: str) -> bool:
    """Whether any part of the relative path starts with ``.`` (e.g. the ``._*`` resource forks)."""
    return any(part.startswith(".") for part in Path(rel).parts)
