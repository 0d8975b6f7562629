"""An in-memory labelled image set (the dataset contract over one tensor) and its index views.

Paper 2 trains on small structured sets (a few hundred images) many times over (5 CV folds and a final
fit per network and seed), and its pixel CNN needs the whole training set as one tensor anyway, so
the images are decoded once into an :class:`ArrayDataset` and every fold is a view of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from attnlib.core.progress import tqdm


class ArrayDataset(Dataset):
    """``images`` (N x C x H x W float32), ``labels`` (N), ``ids`` and ``label_names`` as a dataset.

    Items: ``idx, id, img, lab``. ``fingerprint`` identifies the data a model sees: given by the
    source (e.g. a loader's fingerprint and split) and extended by :meth:`subset` with the indices.
    """

    def __init__(
        self, images: Tensor, labels: Sequence[int], ids: Sequence[str], label_names: Sequence[str], fingerprint: str
    ) -> None:
        if images.dim() != 4:
            raise ValueError(f"images must be N x C x H x W, got shape {tuple(images.shape)}")
        self.images = images.float()
        self.labels = np.asarray(labels, dtype=np.int64)
        self.ids = [str(i) for i in ids]
        self.label_names = list(label_names)
        self.fingerprint = fingerprint
        if not len(self.images) == len(self.labels) == len(self.ids):
            raise ValueError(f"{len(self.images)} images, {len(self.labels)} labels and {len(self.ids)} ids")
        if len(self.labels) and not 0 <= self.labels.min() <= self.labels.max() < len(self.label_names):
            raise ValueError(f"labels must lie in [0, {len(self.label_names)}), got {sorted(set(self.labels))}")

    @classmethod
    def from_dataset(cls, dataset: Any, desc: str = "loading images") -> ArrayDataset:
        """Decode every item of an attnlib dataset (``img``, ``lab``, ``id``; ``label_names``, ``fingerprint``)."""
        items = [dataset[i] for i in tqdm(range(len(dataset)), desc=desc, leave=False)]
        if not items:
            raise ValueError(f"{type(dataset).__name__} is empty: nothing to load")
        images = torch.stack([torch.as_tensor(item["img"]) for item in items])
        return cls(images, [int(item["lab"]) for item in items], [item["id"] for item in items],
                   dataset.label_names, dataset.fingerprint)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"idx": i, "id": self.ids[i], "img": self.images[i], "lab": int(self.labels[i])}

    def subset(self, indices: Sequence[int] | np.ndarray) -> ArrayDataset:
        """The items ``indices`` (in that order) as a new set sharing no storage with this one's views."""
        index = np.asarray(indices, dtype=np.int64)
        digest = hashlib.sha256(f"{self.fingerprint}:".encode() + index.tobytes()).hexdigest()[:12]
        return ArrayDataset(self.images[torch.from_numpy(index)], self.labels[index],
                            [self.ids[i] for i in index], self.label_names, digest)
