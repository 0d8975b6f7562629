"""The dataset contract every attnlib dataset follows, and the base class that holds its shared methods.

An item is a dict: ``idx`` (int), ``id`` (str, unique in the dataset), ``img`` (float tensor C x H x W),
``lab`` (int class index), plus what the dataset knows about the image (``hmap`` gaze heat map, ``masks``
organ masks, ``map`` / ``has_map`` a human importance map, ...). A dataset has ``label_names``, a ``metadata``
frame (one row per item, an ``id`` column), and a ``fingerprint``: a short hash of everything a model sees, so
that a change of data makes a new run in the run store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from torch.utils.data import Dataset


@runtime_checkable
class ContractDataset(Protocol):
    """What the trainer, the run executor and the studies need of a dataset (module docstring)."""

    label_names: list[str]
    fingerprint: str

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, Any]: ...


class TableDataset(Dataset, ABC):
    """Base of the datasets whose items are the rows of ``metadata``: ``len`` is its row count; a subclass
    sets ``metadata`` and ``label_names`` and implements ``__getitem__`` and ``fingerprint``."""

    metadata: pd.DataFrame
    label_names: list[str]

    def __len__(self) -> int:
        return len(self.metadata)

    @abstractmethod
    def __getitem__(self, i: int) -> dict[str, Any]:
        """Item ``i`` of the contract (module docstring)."""

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """A short hash of everything a model sees of this dataset."""


class LabelledDataset(TableDataset):
    """A :class:`TableDataset` whose class labels are known without decoding images (``labels``, one int per
    row): it counts its classes."""

    labels: np.ndarray

    @property
    def class_counts(self) -> dict[str, int]:
        """Items per class, in :attr:`label_names` order."""
        counts = np.bincount(self.labels, minlength=len(self.label_names))
        return dict(zip(self.label_names, counts.tolist(), strict=True))
