"""classification_metrics against hand-computed values and an independent Hand & Till AUC."""

from __future__ import annotations

import itertools
import json
import logging
import math

import numpy as np
import pytest

from attnlib.metrics import classification_metrics


def _hand_till(labels: np.ndarray, probs: np.ndarray) -> float:
    """Hand & Till (2001) M: mean over class pairs of (A(i|j) + A(j|i)) / 2, counted pair by pair.

    A(i|j) = P(score_i of a random class-i sample > score_i of a random class-j sample), ties 1/2.
    """
    k = probs.shape[1]
    pair_means = []
    for i, j in itertools.combinations(range(k), 2):
        a = []
        for pos, neg in ((i, j), (j, i)):
            s_pos = probs[labels == pos, pos]
            s_neg = probs[labels == neg, pos]
            wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in s_pos for n in s_neg)
            a.append(wins / (len(s_pos) * len(s_neg)))
        pair_means.append(sum(a) / 2)
    return sum(pair_means) / len(pair_means)


def test_binary_hand_computed():
    labels = [0, 0, 1, 1]
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    m = classification_metrics(labels, np.stack([1 - p1, p1], axis=1), ["neg", "pos"])
    # positives (0.35, 0.8) vs negatives (0.1, 0.4): 3 of 4 pairs ordered correctly
    assert m["auc"] == pytest.approx(0.75)
    # predictions 0, 0, 0, 1
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["precision/neg"] == pytest.approx(2 / 3)
    assert m["recall/neg"] == pytest.approx(1.0)
    assert m["precision/pos"] == pytest.approx(1.0)
    assert m["recall/pos"] == pytest.approx(0.5)
    assert m["confusion"] == [[2, 0], [1, 1]]
    assert m["n"] == 4


def test_three_classes_hand_computed():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [
            [0.7, 0.2, 0.1],  # 0 -> 0
            [0.2, 0.5, 0.3],  # 0 -> 1
            [0.1, 0.8, 0.1],  # 1 -> 1
            [0.1, 0.6, 0.3],  # 1 -> 1
            [0.3, 0.3, 0.4],  # 2 -> 2
            [0.5, 0.2, 0.3],  # 2 -> 0
        ]
    )
    m = classification_metrics(labels, probs, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert (m["precision/a"], m["recall/a"]) == pytest.approx((1 / 2, 1 / 2))
    assert (m["precision/b"], m["recall/b"]) == pytest.approx((2 / 3, 1.0))
    assert (m["precision/c"], m["recall/c"]) == pytest.approx((1.0, 1 / 2))
    # Pairs by hand (a tie counts 1/2): (a,b): A(a|b) = 4/4, A(b|a) = 4/4 -> 1;
    # (a,c): A(a|c) = 2/4, A(c|a) = 3.5/4 -> 11/16; (b,c): A(b|c) = 4/4, A(c|b) = 3.5/4 -> 15/16.
    assert m["auc"] == pytest.approx((1 + 11 / 16 + 15 / 16) / 3)
    assert m["auc"] == pytest.approx(_hand_till(labels, probs))


@pytest.mark.parametrize("k", [3, 4])
def test_multiclass_auc_is_hand_and_till(k):
    rng = np.random.default_rng(k)
    labels = np.repeat(np.arange(k), 15)
    logits = rng.normal(size=(len(labels), k)) + 1.2 * np.eye(k)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probs = np.round(probs, 2)  # creates ties
    probs /= probs.sum(axis=1, keepdims=True)
    m = classification_metrics(labels, probs, [f"c{c}" for c in range(k)])
    assert m["auc"] == pytest.approx(_hand_till(labels, probs), abs=1e-12)


def test_absent_class_gives_nan_auc_with_warning(caplog):
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]])
    with caplog.at_level(logging.WARNING, logger="attnlib.metrics"):
        m = classification_metrics([0, 1, 0], probs, ["a", "b", "c"])
    assert math.isnan(m["auc"])
    assert "c" in caplog.text and "NaN" in caplog.text
    assert m["accuracy"] == pytest.approx(1.0)
    assert m["precision/c"] == 0.0 and m["recall/c"] == 0.0  # zero_division=0


def test_result_is_plain_json():
    m = classification_metrics(
        np.array([0, 1]), np.array([[0.9, 0.1], [0.3, 0.7]], dtype=np.float32), ["x", "y"]
    )
    assert json.loads(json.dumps(m)) == m
    assert all(type(v) in (int, float, list) for v in m.values())


def test_shape_and_label_errors():
    with pytest.raises(ValueError, match="shape"):
        classification_metrics([0, 1], np.ones((2, 3)) / 3, ["a", "b"])
    with pytest.raises(ValueError, match=r"0\.\.1"):
        classification_metrics([0, 2], np.ones((2, 2)) / 2, ["a", "b"])
