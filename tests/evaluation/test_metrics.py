"""classification_metrics against hand values, independent Hand & Till and one-vs-rest AUCs and scikit-learn;
Eq. 12 (the paper's peak rule and the public code's neighbourhood rule) on hand-made maps."""

from __future__ import annotations

import itertools
import json
import logging
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from attnlib.data.real.egd_cxr import LABEL_NAMES, MASK_FILES
from attnlib.evaluation.metrics import CAM_ORGANS, cam_in_mask, classification_metrics


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


def _one_vs_rest(labels: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest AUC counted pair by pair: per class c, P(score_c of a class-c sample > score_c of a
    sample of another class), ties 1/2; the mean over classes."""
    per_class = []
    for c in range(probs.shape[1]):
        pos, neg = probs[labels == c, c], probs[labels != c, c]
        wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
        per_class.append(wins / (len(pos) * len(neg)))
    return sum(per_class) / len(per_class)


def test_one_vs_rest_auc_hand_computed():
    labels = np.array([0, 0, 0, 1, 2])
    probs = np.array([[0.6, 0.3, 0.1], [0.3, 0.4, 0.3], [0.2, 0.2, 0.6], [0.3, 0.5, 0.2], [0.4, 0.1, 0.5]])
    m = classification_metrics(labels, probs, ["a", "b", "c"])
    # one-vs-rest: a: positives 0.6, 0.3, 0.2 vs 0.3, 0.4 -> (2 + 0.5 + 0) / 6; b: 0.5 beats all 4 -> 1;
    # c: 0.5 vs 0.1, 0.3, 0.6, 0.2 -> 3 / 4; macro mean 13 / 18
    assert m["auc_ovr"] == pytest.approx((5 / 12 + 1 + 3 / 4) / 3)
    # one-vs-one: (a,b) (1.5/3 + 1) / 2, (a,c) (1/3 + 2/3) / 2, (b,c) 1 -> mean 0.75: the two differ
    assert m["auc"] == pytest.approx((0.75 + 0.5 + 1.0) / 3)


@pytest.mark.parametrize("k", [3, 4])
def test_both_aucs_match_sklearn(k):
    rng = np.random.default_rng(10 + k)
    labels = rng.integers(0, k, size=60)
    labels[:k] = np.arange(k)  # every class present
    logits = rng.normal(size=(len(labels), k)) + 0.8 * np.eye(k)[labels]
    probs = np.round(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), 2)  # creates ties
    probs /= probs.sum(axis=1, keepdims=True)
    m = classification_metrics(labels, probs, [f"c{c}" for c in range(k)])
    assert m["auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovo", average="macro"), abs=1e-12)
    assert m["auc_ovr"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro"), abs=1e-12)
    assert m["auc_ovr"] == pytest.approx(_one_vs_rest(labels, probs), abs=1e-12)
    assert m["auc_ovr"] != pytest.approx(m["auc"], abs=1e-6)  # unbalanced classes: different quantities


def test_one_vs_rest_equals_the_binary_auc_for_two_classes():
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    m = classification_metrics([0, 0, 1, 1], np.stack([1 - p1, p1], axis=1), ["neg", "pos"])
    assert m["auc_ovr"] == m["auc"] == pytest.approx(0.75)


def test_absent_class_gives_nan_auc_with_warning(caplog):
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]])
    with caplog.at_level(logging.WARNING, logger="attnlib.evaluation.metrics"):
        m = classification_metrics([0, 1, 0], probs, ["a", "b", "c"])
    assert math.isnan(m["auc"]) and math.isnan(m["auc_ovr"])
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


def _cam_case(h: int, w: int, size: int, labels: list[int]) -> tuple[torch.Tensor, ...]:
    """Zero maps (B x 3 x h x w), the labels and empty masks (B x 4 x size x size) to fill in by hand."""
    b = len(labels)
    return torch.zeros(b, 3, h, w), torch.tensor(labels), torch.zeros(b, 4, size, size)


LEFT, RIGHT, MEDIASTINUM, AORTIC_KNOB = range(4)


def test_cam_in_mask_argmax_inside_and_outside():
    # 4 x 4 grid on 8 x 8 masks: grid cell (i, j) is pixels [2i:2i+2, 2j:2j+2]
    omega, labels, masks = _cam_case(4, 4, 8, [1, 1, 2, 2, 2, 0])
    masks[:, MEDIASTINUM, 2:6, 2:6] = 1  # cells (1..2, 1..2)
    masks[:, LEFT, :, 0:2] = 1  # column 0
    masks[:, RIGHT, :, 6:8] = 1  # column 3
    masks[:, AORTIC_KNOB, 0:2, 0:2] = 1  # never scored
    omega[0, 1, 1, 2] = 5.0  # cardiomegaly, peak in the heart -> 1
    omega[0, 0, 0, 0] = 9.0  # another class's larger peak elsewhere is ignored
    omega[1, 1, 0, 0] = 5.0  # cardiomegaly, peak on the aortic knob and left lung, not the heart -> 0
    omega[2, 2, 3, 0] = 5.0  # pneumonia, peak in the left lung -> 1
    omega[3, 2, 2, 3] = 5.0  # pneumonia, peak in the right lung -> 1
    omega[4, 2, 1, 1] = 5.0  # pneumonia, peak in the heart -> 0
    omega[4, 1, 0, 0] = 9.0
    omega[5, 0, 1, 1] = 5.0  # normal: not scored
    result = cam_in_mask(omega, labels, masks)
    assert result.dtype == torch.float32
    assert result[:5].tolist() == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert math.isnan(result[5].item())


def test_cam_in_mask_negative_maps_and_ties():
    omega, labels, masks = _cam_case(2, 2, 2, [1, 1])
    masks[:, MEDIASTINUM, 1, 1] = 1
    omega[0, 1] = torch.tensor([[-3.0, -2.0], [-4.0, -1.0]])  # maximum -1 in the heart, although all < 0
    omega[1, 1] = 7.0  # all equal: the first cell (0, 0) wins, outside the heart
    assert cam_in_mask(omega, labels, masks).tolist() == [1.0, 0.0]


def test_cam_in_mask_scaling_needs_half_a_cell():
    # 2 x 2 grid on 4 x 4 masks: each cell is 2 x 2 = 4 pixels; the peak is always cell (0, 0)
    omega, labels, masks = _cam_case(2, 2, 4, [1, 1, 1, 1])
    omega[:, 1, 0, 0] = 1.0
    masks[0, MEDIASTINUM, 0, 0:2] = 1  # 2 of 4 pixels: exactly half counts
    masks[1, MEDIASTINUM, 0, 0] = 1  # 1 of 4 pixels: does not
    masks[1, MEDIASTINUM, 2:4, 2:4] = 1  # a full cell elsewhere does not help
    masks[2, MEDIASTINUM, 0:2, 0:2] = 1  # full cell
    masks[3, MEDIASTINUM, 0:2, 0:2] = 0.4  # soft mask: 0.4 coverage is not enough
    assert cam_in_mask(omega, labels, masks).tolist() == [1.0, 0.0, 1.0, 0.0]


def test_cam_in_mask_pneumonia_uses_the_union_of_both_lungs():
    # the peak cell has one pixel of each lung: 1/4 each, 2/4 together -> inside only as a union
    omega, labels, masks = _cam_case(2, 2, 4, [2, 1])
    omega[:, :, 0, 0] = 1.0
    masks[:, LEFT, 0, 0] = 1
    masks[:, RIGHT, 1, 1] = 1
    # the same masks for cardiomegaly: lungs are not the heart
    assert cam_in_mask(omega, labels, masks).tolist() == [1.0, 0.0]


def test_cam_in_mask_uses_the_egd_cxr_class_and_mask_order():
    assert list(MASK_FILES) == ["left_lung", "right_lung", "mediastinum", "aortic_knob"]
    assert list(LABEL_NAMES) == ["normal", "cardiomegaly", "pneumonia"]
    assert CAM_ORGANS == {1: (MEDIASTINUM,), 2: (LEFT, RIGHT)}


def test_cam_in_mask_errors():
    omega, labels, masks = _cam_case(4, 4, 8, [1, 2])
    with pytest.raises(ValueError, match=r"H >= 4, W >= 4"):
        cam_in_mask(omega, labels, masks[:, :, :2, :2])
    with pytest.raises(ValueError, match=r"2 x 4 x H x W"):
        cam_in_mask(omega, labels, masks[:, :3])
    with pytest.raises(ValueError, match="labels B"):
        cam_in_mask(omega, labels[:1], masks)
    with pytest.raises(ValueError, match=r"got \[3\]"):
        cam_in_mask(omega, torch.tensor([1, 3]), masks)


def _public_code_reference(omega: np.ndarray, inside: np.ndarray) -> bool:
    """The public code's rule, as its ``interpretate``/``index_expand(idx, mask, 1)`` loop: numpy's first argmax,
    then a hit when any cell of the 3 x 3 neighbourhood that lies on the grid is inside."""
    a, b = np.unravel_index(np.argmax(omega, axis=None), omega.shape)
    cells = [(i, j) for i in range(a - 1, a + 2) for j in range(b - 1, b + 2)
             if 0 <= i < omega.shape[0] and 0 <= j < omega.shape[1]]
    return any(inside[c] for c in cells)


def test_cam_in_mask_neighbourhood_rule_next_to_the_organ():
    # 4 x 4 grid on 8 x 8 masks: the heart is cell (1, 1) only
    omega, labels, masks = _cam_case(4, 4, 8, [1, 1, 1, 1])
    masks[:, MEDIASTINUM, 2:4, 2:4] = 1
    omega[0, 1, 1, 1] = 1.0  # peak in the heart: hit under both rules
    omega[1, 1, 1, 2] = 1.0  # peak beside the heart: peak rule miss, neighbourhood hit
    omega[2, 1, 2, 2] = 1.0  # diagonal neighbour: neighbourhood hit
    omega[3, 1, 3, 3] = 1.0  # two cells away: miss under both
    assert cam_in_mask(omega, labels, masks).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert cam_in_mask(omega, labels, masks, rule="neighbourhood").tolist() == [1.0, 1.0, 1.0, 0.0]


def test_cam_in_mask_neighbourhood_rule_at_the_grid_edges():
    # 3 x 5 grid on 6 x 10 masks: grid cell (i, j) is pixels [2i:2i+2, 2j:2j+2]
    omega, labels, masks = _cam_case(3, 5, 10, [1, 1, 1, 2])
    masks = masks[:, :, :6]
    masks[0, MEDIASTINUM, 2:4, 2:4] = 1  # cell (1, 1); peak in the corner (0, 0): diagonal neighbour -> hit
    omega[0, 1, 0, 0] = 1.0
    masks[1, MEDIASTINUM, 0:2, 8:10] = 1  # cell (0, 4), the end of row 0; peak at (1, 0), the start of row 1:
    omega[1, 1, 1, 0] = 1.0  # neighbours in the flattened order, not on the grid -> miss (no wrap-around)
    masks[2, MEDIASTINUM, 4:6, 0:2] = 1  # cell (2, 0); peak in the opposite corner (0, 4) -> miss
    omega[2, 1, 0, 4] = 1.0
    masks[3, LEFT, 2:4, 6:8] = 1  # cell (1, 3); peak in the corner (2, 4) -> hit
    omega[3, 2, 2, 4] = 1.0
    assert cam_in_mask(omega, labels, masks, rule="neighbourhood").tolist() == [1.0, 0.0, 0.0, 1.0]
    assert cam_in_mask(omega, labels, masks).tolist() == [0.0, 0.0, 0.0, 0.0]


def test_cam_in_mask_ties_go_to_the_first_argmax_under_both_rules():
    # equal maxima at (0, 3) and (3, 0) of a 4 x 4 grid: the first in row-major order, (0, 3), is the peak
    omega, labels, masks = _cam_case(4, 4, 8, [1, 1])
    omega[:, 1, 0, 3] = omega[:, 1, 3, 0] = 2.0
    masks[0, MEDIASTINUM, 4:8, 0:4] = 1  # cells (2..3, 0..1): around the second maximum only
    masks[1, MEDIASTINUM, 0:4, 4:8] = 1  # cells (0..1, 2..3): around the first
    for rule in ("peak", "neighbourhood"):
        assert cam_in_mask(omega, labels, masks, rule=rule).tolist() == [0.0, 1.0]
    flat = omega[0, 1].flatten()
    assert int(flat.argmax()) == int(np.argmax(flat.numpy())) == 3


def test_cam_in_mask_neighbourhood_rule_matches_the_public_code_loop():
    rng = np.random.default_rng(0)
    b, h, w = 64, 5, 7
    labels = rng.integers(1, 3, size=b)
    omega = rng.normal(size=(b, 3, h, w)).round(1)  # rounding makes ties of the maximum
    cells = rng.random((b, h, w)) < 0.15
    masks = np.zeros((b, 4, 2 * h, 2 * w), dtype=np.float32)
    for i in range(b):  # each inside cell fills its 2 x 2 pixels of the organ's (first) mask
        masks[i, CAM_ORGANS[labels[i]][0]] = np.kron(cells[i], np.ones((2, 2)))
    result = cam_in_mask(torch.as_tensor(omega), torch.as_tensor(labels), torch.as_tensor(masks), rule="neighbourhood")
    expected = [float(_public_code_reference(omega[i, labels[i]], cells[i])) for i in range(b)]
    assert result.tolist() == expected
    assert 0 < sum(expected) < b


def test_cam_in_mask_unknown_rule():
    omega, labels, masks = _cam_case(2, 2, 2, [1])
    with pytest.raises(ValueError, match="rule must be 'peak' or 'neighbourhood', got 'any'"):
        cam_in_mask(omega, labels, masks, rule="any")
