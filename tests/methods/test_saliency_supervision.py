"""RightForRightReasons and NeuralHarmonizer on slim_resnet10 at 32 px: training, eval, missing maps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import attnlib.models  # noqa: F401  (registers the backbones)
from attnlib.methods.base import Method
from attnlib.methods.saliency_supervision import NeuralHarmonizer, RightForRightReasons
from attnlib.models.registry import create_model

B, S, N_CLASSES = 8, 32, 3


def _batch(has_map: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    human = torch.zeros(B, 1, S, S)
    human[:, :, 8:24, 8:24] = 1.0
    return {
        "img": torch.rand(B, 3, S, S, generator=g),
        "lab": torch.randint(0, N_CLASSES, (B,), generator=g),
        "map": human if has_map else torch.zeros_like(human),
        "has_map": torch.full((B,), has_map),
    }


def _method(name: str) -> tuple[Method, str, float]:
    """(method, name of its supervision loss, the label smoothing of its cross-entropy); weight 1."""
    torch.manual_seed(0)
    model = create_model("slim_resnet10", N_CLASSES, in_chans=3, pretrained=False)
    if name == "rrr":
        return RightForRightReasons(model, lambda_1=1.0), "penalty", 0.0
    return NeuralHarmonizer(model, weight=1.0), "map_loss", 0.1


@pytest.mark.parametrize("name", ["rrr", "harmonizer"])
def test_sgd_steps_lower_the_supervision_loss(name):
    method, key, smoothing = _method(name)
    method.train()
    batch = _batch()
    optimizer = torch.optim.SGD(method.parameters(), lr=2e-3)
    values = []
    for _ in range(3):
        out = method.step(batch)
        assert set(out.losses) == {"loss", "ce", key}
        assert out.outputs["logits"].shape == (B, N_CLASSES)
        ce = F.cross_entropy(out.outputs["logits"], batch["lab"], label_smoothing=smoothing)
        torch.testing.assert_close(out.losses["ce"], ce)
        torch.testing.assert_close(out.losses["loss"], out.losses["ce"] + out.losses[key])  # weight 1
        values.append(out.losses[key].item())
        optimizer.zero_grad()
        out.losses["loss"].backward()
        optimizer.step()
    assert values[0] > 0 and values[-1] < values[0]


@pytest.mark.parametrize("name", ["rrr", "harmonizer"])
def test_eval_under_no_grad_and_batches_without_maps_give_the_cross_entropy(name):
    method, key, smoothing = _method(name)
    batch = _batch()
    method.eval()
    with torch.no_grad():
        out = method.step(batch)
    assert set(out.losses) == {"loss", "ce"} and not out.losses["loss"].requires_grad
    ce = F.cross_entropy(method.model(batch["img"]), batch["lab"], label_smoothing=smoothing)
    torch.testing.assert_close(out.losses["loss"], ce)
    method.train()
    no_key = method.step({k: v for k, v in batch.items() if k not in ("map", "has_map")})
    assert set(no_key.losses) == {"loss", "ce"}
    unmapped = method.step(_batch(has_map=False))
    assert unmapped.losses[key].item() == 0
    assert unmapped.losses["loss"].item() == unmapped.losses["ce"].item()
    unmapped.losses["loss"].backward()  # the double-backward graph stays valid when the term is 0


@pytest.mark.parametrize("name", ["rrr", "harmonizer"])
def test_eval_mode_with_grad_keeps_the_logits_differentiable_in_the_batch_images(name):
    """A saliency explanation differentiates the logits w.r.t. the batch's own images in eval mode."""
    method, _, _ = _method(name)
    method.eval()
    batch = _batch()
    batch["img"] = batch["img"].clone().requires_grad_(True)
    out = method.step(batch)
    assert set(out.losses) == {"loss", "ce"}
    (grad,) = torch.autograd.grad(out.outputs["logits"].sum(), batch["img"])
    assert grad.abs().sum() > 0


def test_constructors_reject_bad_settings():
    model = create_model("slim_resnet10", N_CLASSES, in_chans=1, pretrained=False)
    with pytest.raises(ValueError, match="lambda_1"):
        RightForRightReasons(model, lambda_1=-1.0)
    with pytest.raises(ValueError, match="weight"):
        NeuralHarmonizer(model, weight=-1.0)
    with pytest.raises(ValueError, match="levels"):
        NeuralHarmonizer(model, weight=1.0, levels=0)
