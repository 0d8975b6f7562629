"""attnlib.evaluation.attention_use on a linear model, whose input gradient is its weight row: hand-computed
evidence mass, cue following on constructed predictions, alignment against scipy's spearmanr."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats as scipy_stats
from torch import nn
from torch.utils.data import DataLoader

from attnlib.evaluation.attention_use import attention_use_evaluator, input_gradient_saliency
from attnlib.methods.base import Method, StepOutput

C, S, K = 2, 4, 3
CPU = torch.device("cpu")


class Linear(Method):
    """logits = W vec(img) + b: d logit_k / d img = W[k] (as C x S x S), whatever the image."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(C * S * S, K)
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)

    def step(self, batch: Mapping[str, Any]) -> StepOutput:
        logits = self.linear(batch["img"].flatten(1))
        return StepOutput({"loss": F.cross_entropy(logits, batch["lab"])}, {"logits": logits})


# (lab, cue): every prediction is class 0 (bias), so the cue is followed exactly when it shows class 0
ITEMS = [(1, 0), (2, 1), (0, 0), (0, 2), (1, -1), (2, 0), (1, 2)]


def _weight() -> torch.Tensor:
    weight = torch.randn(K, C * S * S, generator=torch.Generator().manual_seed(0)) * 0.01
    weight[2] = 0  # class 2: no saliency at all
    return weight


def _items() -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    items = []
    for k, (lab, cue) in enumerate(ITEMS):
        evidence = np.zeros((1, S, S), np.float32)
        evidence[0, k % 3 : k % 3 + 2, 1:3 + k % 2] = 1
        items.append({
            "img": torch.tensor(rng.uniform(0, 1, (C, S, S)), dtype=torch.float32),
            "lab": lab,
            "cue": cue,
            "evidence": torch.from_numpy(evidence),
            "clean_map": torch.tensor(rng.uniform(0, 1, (1, S, S)), dtype=torch.float32),
        })
    return items


def _method() -> Linear:
    return Linear(_weight(), torch.tensor([10.0, 0.0, 0.0]))


def _saliency(lab: int) -> np.ndarray:
    return _weight()[lab].abs().reshape(C, S, S).sum(0).numpy()


def test_input_gradient_saliency_is_the_weight_row_summed_over_channels():
    method = _method().eval()
    batch = next(iter(DataLoader(_items(), batch_size=len(ITEMS))))
    saliency = input_gradient_saliency(method, batch)
    assert saliency.shape == (len(ITEMS), S, S)
    for k, (lab, _) in enumerate(ITEMS):
        np.testing.assert_allclose(saliency[k].numpy(), _saliency(lab), rtol=1e-6)
    assert all(p.grad is None for p in method.parameters())


def test_attention_use_scores_by_hand():
    items = _items()
    method = _method()
    scores = attention_use_evaluator(ceiling=0.8)(method, DataLoader(items, batch_size=3), CPU)
    # the cue shows another class than the label in items 0, 1, 3, 5, 6; predicted (class 0) in 0 and 5
    assert scores["cue_following"] == pytest.approx(2 / 5)
    shares, rhos = [], []
    for item in items:
        if item["lab"] == 2:  # zero saliency: left out
            continue
        saliency, evidence = _saliency(item["lab"]), item["evidence"][0].numpy() > 0.5
        shares.append(saliency[evidence].sum() / saliency.sum())
        rhos.append(scipy_stats.spearmanr(saliency.ravel(), item["clean_map"].numpy().ravel()).statistic)
    assert scores["evidence_mass"] == pytest.approx(np.mean(shares))
    assert scores["evidence_area"] == pytest.approx(np.mean([i["evidence"].numpy().mean() for i in items]))
    assert scores["alignment"] == pytest.approx(np.mean(rhos))
    assert scores["alignment_fraction"] == pytest.approx(np.mean(rhos) / 0.8)
    assert not method.training
    assert all(p.grad is None for p in method.parameters())


def test_attention_use_without_cues_or_ceiling():
    items = [{**item, "cue": -1 if k % 2 else item["lab"]} for k, item in enumerate(_items())]
    scores = attention_use_evaluator(ceiling=None)(_method(), DataLoader(items, batch_size=4), CPU)
    assert math.isnan(scores["cue_following"])
    assert math.isnan(scores["alignment_fraction"])
    assert np.isfinite(scores["alignment"])
    with pytest.raises(ValueError, match="ceiling"):
        attention_use_evaluator(ceiling=0.0)


def test_attention_use_runs_under_no_grad():
    """The executor may score inside torch.no_grad(); the saliency still needs its gradient."""
    with torch.no_grad():
        scores = attention_use_evaluator(ceiling=1.0)(_method(), DataLoader(_items(), batch_size=7), CPU)
    assert np.isfinite(scores["evidence_mass"])
