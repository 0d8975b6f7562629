"""Right for the Right Reasons (Ross et al. 2017, Eq. 1) against the closed form of a linear-softmax model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnlib.losses.rrr import annotation_mask, rrr_loss, rrr_penalty

B, C, H, W, K = 4, 2, 3, 3, 5


def _linear_setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(K, C * H * W, generator=g, dtype=torch.float64)
    bias = torch.randn(K, generator=g, dtype=torch.float64)
    images = torch.rand(B, C, H, W, generator=g, dtype=torch.float64)
    mask = (torch.rand(B, 1, H, W, generator=g) > 0.5).double()
    return weight, bias, images, mask


def _closed_form_penalty(weight, bias, images, mask) -> np.ndarray:
    """sum_k log p_k = sum_k z_k - K logsumexp(z), so d/dx = W^T (1 - K p)."""
    w, b = weight.numpy(), bias.numpy()
    x = images.numpy().reshape(B, -1)
    z = x @ w.T + b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    grad = (1 - K * p) @ w  # B x D, row n = W^T (1 - K p_n)
    a = np.broadcast_to(mask.numpy(), (B, C, H, W)).reshape(B, -1)
    return ((a * grad) ** 2).sum(axis=1)


def test_penalty_matches_closed_form():
    weight, bias, images, mask = _linear_setup()
    x = images.clone().requires_grad_(True)
    logits = x.flatten(1) @ weight.T + bias
    penalty = rrr_penalty(x, logits, mask)
    assert penalty.shape == (B,)
    expected = _closed_form_penalty(weight, bias, images, mask)
    np.testing.assert_allclose(penalty.detach().numpy(), expected, rtol=1e-10)
    # the single-channel mask broadcasts over channels exactly like the mask repeated per channel
    logits = x.flatten(1) @ weight.T + bias
    torch.testing.assert_close(rrr_penalty(x, logits, mask.expand(B, C, H, W)), penalty)


def test_penalty_needs_input_gradients():
    weight, bias, images, mask = _linear_setup()
    with pytest.raises(ValueError, match="requires_grad"):
        rrr_penalty(images, images.flatten(1) @ weight.T + bias, mask)


def test_annotation_mask_threshold_and_missing_maps():
    human = torch.tensor([[0.0, 0.1, 0.2, 0.3, 2.0]]).view(1, 1, 1, 5)  # max 2: threshold 0.1 * 2 = 0.2
    torch.testing.assert_close(annotation_mask(human), torch.tensor([[[[1.0, 1.0, 1.0, 0.0, 0.0]]]]))
    only_zero = torch.tensor([[[[1.0, 0.0, 0.0, 0.0, 0.0]]]])
    torch.testing.assert_close(annotation_mask(human, threshold=0.0), only_zero)
    maps = torch.stack([human[0], human[0], torch.zeros(1, 1, 5)])  # image 1 lacks a map, image 2 is all zero
    mask = annotation_mask(maps, has_map=torch.tensor([True, False, True]))
    assert mask.shape == (3, 1, 1, 5) and mask.dtype == torch.float32
    torch.testing.assert_close(mask[0], annotation_mask(human)[0])
    assert mask[1:].sum() == 0
    torch.testing.assert_close(annotation_mask(maps[:, 0]), annotation_mask(maps))  # B x H x W accepted
    with pytest.raises(ValueError, match="one boolean per image"):
        annotation_mask(maps, has_map=torch.tensor([True]))
    with pytest.raises(ValueError, match="B x 1 x H x W"):
        annotation_mask(torch.zeros(3, 2, 5, 5))


def test_mask_outside_the_map_penalises_only_outside():
    weight, bias, images, _ = _linear_setup()
    human = torch.zeros(B, 1, H, W, dtype=torch.float64)
    human[:, :, 1, 1] = 1.0  # the map covers the centre pixel only
    mask = annotation_mask(human)
    assert mask[:, 0, 1, 1].sum() == 0 and mask.sum() == B * (H * W - 1)
    inside_only = weight.view(K, C, H, W).clone()
    inside_only[:, :, human[0, 0] == 0] = 0  # a model that looks only at the centre pixel
    x = images.clone().requires_grad_(True)
    assert rrr_penalty(x, x.flatten(1) @ inside_only.flatten(1).T + bias, mask).abs().max() == 0


def test_penalty_trains_the_weights_by_double_backward():
    weight, bias, images, mask = _linear_setup()

    def penalty_of(w: torch.Tensor) -> torch.Tensor:
        x = images.clone().requires_grad_(True)
        return rrr_penalty(x, x.flatten(1) @ w.T + bias, mask).mean()

    w = weight.clone().requires_grad_(True)
    penalty_of(w).backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(penalty_of, (weight.clone().requires_grad_(True),))


def test_loss_is_batch_mean_of_ce_plus_penalty():
    weight, bias, images, mask = _linear_setup()
    labels = torch.tensor([0, 3, 1, 4])
    x = images.clone().requires_grad_(True)
    logits = x.flatten(1) @ weight.T + bias
    total, ce, penalty = rrr_loss(x, logits, labels, mask, lambda_1=10.0)
    expected_penalty = _closed_form_penalty(weight, bias, images, mask).mean()
    assert penalty.item() == pytest.approx(expected_penalty, rel=1e-10)
    assert ce.item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-12)
    assert total.item() == pytest.approx(ce.item() + 10.0 * expected_penalty, rel=1e-10)
    # A = 0 everywhere: no penalty, the loss is the cross-entropy
    logits = x.flatten(1) @ weight.T + bias
    total, ce, penalty = rrr_loss(x, logits, labels, torch.zeros_like(mask), lambda_1=1000.0)
    assert penalty.item() == 0 and total.item() == ce.item()
    with pytest.raises(ValueError, match="lambda_1"):
        rrr_loss(x, logits, labels, mask, lambda_1=-1.0)
