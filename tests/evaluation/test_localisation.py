"""The CAM localisation evaluator (Eq. 12 per class) under the paper's peak rule and the public code's rule."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from attnlib.evaluation.localisation import CAM_RULE_KEYS, cam_localisation_evaluator
from attnlib.methods.base import Method, StepOutput

LEFT, RIGHT, MEDIASTINUM = 0, 1, 2
#: (label, peak cell of Omega_Y on a 4 x 4 grid): the heart is cell (1, 1), the lungs column 3
CASES = [
    (0, (1, 1)),  # normal: not scored
    (1, (1, 1)),  # cardiomegaly, in the heart: hit under both rules
    (1, (1, 2)),  # beside the heart: neighbourhood rule only
    (1, (3, 3)),  # two cells away: miss
    (2, (0, 3)),  # pneumonia, in the right lung: hit under both rules
    (2, (2, 2)),  # beside the lungs: neighbourhood rule only
    (2, (3, 2)),  # beside the lungs: neighbourhood rule only
    (2, (1, 0)),  # far from the lungs (and no wrap-around from row 0's end): miss
]


class MapsFromBatch(Method):
    """Returns the batch's own ``omega`` as its CAM, with constant logits."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(3))

    def step(self, batch: dict[str, Any]) -> StepOutput:
        logits = self.bias.expand(len(batch["lab"]), 3)
        return StepOutput(losses={"loss": logits.sum()}, outputs={"logits": logits, "omega": batch["omega"]})


def _items() -> list[dict[str, Any]]:
    items = []
    for label, (i, j) in CASES:
        masks = torch.zeros(4, 8, 8)  # each grid cell is 2 x 2 pixels
        masks[MEDIASTINUM, 2:4, 2:4] = 1
        masks[RIGHT, :, 6:8] = 1
        omega = torch.zeros(3, 4, 4)
        omega[label, i, j] = 1.0
        items.append({"img": torch.zeros(1, 8, 8), "lab": label, "masks": masks, "omega": omega})
    return items


def test_evaluator_reports_both_rules_per_class_by_hand():
    result = cam_localisation_evaluator(MapsFromBatch(), DataLoader(_items(), batch_size=3), torch.device("cpu"))
    assert CAM_RULE_KEYS == {"peak": "interpretability", "neighbourhood": "interpretability_public"}
    assert result == pytest.approx({
        "interpretability": 2 / 7,
        "interpretability/cardiomegaly": 1 / 3,
        "interpretability/pneumonia": 1 / 4,
        "interpretability_public": 5 / 7,
        "interpretability_public/cardiomegaly": 2 / 3,
        "interpretability_public/pneumonia": 3 / 4,
    })
