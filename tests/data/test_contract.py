"""The dataset contract: the shared base methods, and the run executor refusing a dataset without a fingerprint."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from attnlib.data.arrays import ArrayDataset
from attnlib.data.contract import ContractDataset, LabelledDataset
from attnlib.engine.executor import data_fingerprint


class Rows(LabelledDataset):
    def __init__(self, labels: list[int]) -> None:
        self.labels = np.asarray(labels)
        self.label_names = ["a", "b", "c"]
        self.metadata = pd.DataFrame({"id": [f"r{i}" for i in range(len(labels))]})

    def __getitem__(self, i: int) -> dict:
        return {"idx": i, "id": self.metadata.id[i], "img": torch.zeros(1, 2, 2), "lab": int(self.labels[i])}

    @property
    def fingerprint(self) -> str:
        return "rows-" + "".join(map(str, self.labels))


def test_length_and_class_counts_come_from_the_base():
    rows = Rows([0, 2, 2, 0, 2])
    assert len(rows) == 5 and rows.class_counts == {"a": 2, "b": 0, "c": 3}
    assert isinstance(rows, ContractDataset)


def test_a_subclass_without_fingerprint_cannot_be_made():
    class NoPrint(LabelledDataset):
        def __getitem__(self, i: int) -> dict:
            return {}

    with pytest.raises(TypeError, match="fingerprint"):
        NoPrint()


def test_the_executor_names_a_split_that_breaks_the_contract():
    arrays = ArrayDataset(torch.zeros(2, 1, 2, 2), np.array([0, 1]), ["x", "y"], ["a", "b"], "arrays")
    assert isinstance(arrays, ContractDataset)
    assert data_fingerprint({"train": arrays}) == data_fingerprint({"train": arrays})
    with pytest.raises(TypeError, match=r"split 'test' \(list\) does not follow the dataset contract"):
        data_fingerprint({"train": arrays, "test": [1, 2]})
