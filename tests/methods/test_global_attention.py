"""Global spatial attention (paper 2): pixel CNN, weight map, loss, cut-off freezing, L1 baseline (CPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from attnlib.engine.trainer import TrainConfig, Trainer
from attnlib.losses.global_attention import l1_penalty
from attnlib.methods.global_attention import (
    GlobalAttention,
    GlobalAttentionConfig,
    PixelWeightL1,
)
from attnlib.models.pixel_attention import (
    PixelCNN,
    PixelWeight,
    pixel_cnn_parameter_count,
    pixel_representation,
)

N, C, H, W = 8, 1, 16, 16


def tiny_cnn(channels: int = C, num_classes: int = 2) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 7 * 7, num_classes)
    )


def batch(seed: int, b: int = 4) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"img": torch.randn(b, C, H, W, generator=g), "lab": torch.arange(b) % 2}


def method(**config) -> GlobalAttention:
    torch.manual_seed(0)
    images = torch.randn(N, C, H, W, generator=torch.Generator().manual_seed(1))
    return GlobalAttention(tiny_cnn(), images, GlobalAttentionConfig(k=4, **config))


@pytest.mark.parametrize(("n", "c", "k", "kernel"), [(8, 1, 4, 3), (5, 3, 32, 3), (2, 3, 7, 5), (1, 1, 1, 1)])
def test_parameter_count_formula_matches_numel(n, c, k, kernel):
    cnn = PixelCNN(n, c, k, kernel)
    assert pixel_cnn_parameter_count(n, c, k, kernel) == sum(p.numel() for p in cnn.parameters())


def test_parameter_count_of_the_paper_formula():
    assert pixel_cnn_parameter_count(10, 3, 32) == 32 * (9 * 30 + 1) + 33


def test_pixel_representation_is_image_major():
    images = torch.randn(3, 2, 4, 5)
    p = pixel_representation(images)
    assert p.shape == (1, 6, 4, 5)
    for n in range(3):
        for c in range(2):
            assert torch.equal(p[0, n * 2 + c], images[n, c])


def test_map_shape_range_and_batch_independence():
    m = method()
    out_a, out_b = m.step(batch(2)), m.step(batch(3, b=3))
    map_a, map_b = out_a.outputs["map"], out_b.outputs["map"]
    assert map_a.shape == (4, 1, H, W) and map_b.shape == (3, 1, H, W)
    assert torch.equal(map_a[0, 0], map_b[0, 0]) and torch.equal(map_a[0], map_a[3])
    assert ((map_a > 0) & (map_a < 1)).all()
    assert m.weight_map().shape == (H, W) and not m.weight_map().requires_grad
    assert torch.equal(m.weight_map(), map_a[0, 0].detach())


def test_pixels_move_with_the_method_but_stay_out_of_the_state_dict():
    m = method()
    assert "pixels" not in m.state_dict() and all(not k.startswith("frozen") for k in m.state_dict())
    assert m.pixels.shape == (1, N * C, H, W) and not m.pixels.requires_grad
    m.to(torch.float64)
    assert m.pixels.dtype == torch.float64


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_is_ce_plus_lambda_l1(reduction):
    m = method(l1_weight=0.3, l1_reduction=reduction)
    b = batch(4)
    out = m.step(b)
    with torch.no_grad():
        mp = m.pixel_cnn(m.pixels)
        ce = F.cross_entropy(m.image_cnn(b["img"] * mp), b["lab"])
        l1 = mp.abs().mean() if reduction == "mean" else mp.abs().sum()
    assert out.losses["ce"].item() == pytest.approx(ce.item(), rel=1e-6)
    assert out.losses["l1"].item() == pytest.approx(l1.item(), rel=1e-6)
    assert out.losses["loss"].item() == pytest.approx(ce.item() + 0.3 * l1.item(), rel=1e-6)


def test_pixel_cnn_trains_before_the_cutoff():
    m = method(cutoff_epoch=2)
    m.on_epoch_start(2)
    m.step(batch(5)).losses["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.pixel_cnn.parameters())


def test_after_cutoff_pixel_cnn_frozen_and_map_not_recomputed(monkeypatch):
    m = method(cutoff_epoch=1)
    optimizer = torch.optim.Adam(m.param_groups(1e-2), weight_decay=1e-3)
    m.on_epoch_start(1)
    m.step(batch(5)).losses["loss"].backward()
    optimizer.step()
    m.on_epoch_start(2)
    pixel_before = [p.detach().clone() for p in m.pixel_cnn.parameters()]
    image_before = [p.detach().clone() for p in m.image_cnn.parameters()]
    map_before = m.weight_map()
    calls = []
    forward = PixelCNN.forward
    monkeypatch.setattr(PixelCNN, "forward", lambda self, x: calls.append(1) or forward(self, x))
    for seed in (6, 7):
        optimizer.zero_grad(set_to_none=True)
        m.step(batch(seed)).losses["loss"].backward()
        optimizer.step()
    assert calls == []
    assert all(not p.requires_grad and p.grad is None for p in m.pixel_cnn.parameters())
    assert all(torch.equal(a, p) for a, p in zip(pixel_before, m.pixel_cnn.parameters(), strict=True))
    assert any(not torch.equal(a, p) for a, p in zip(image_before, m.image_cnn.parameters(), strict=True))
    assert torch.equal(m.weight_map(), map_before)


def test_loading_weights_refreshes_the_frozen_map():
    m = method(cutoff_epoch=0)
    m.on_epoch_start(1)
    cached = m.weight_map()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    state["pixel_cnn.head.bias"] += 1.0
    m.load_state_dict(state)
    assert not torch.equal(m.weight_map(), cached)
    assert torch.equal(m.weight_map(), m.pixel_cnn(m.pixels).detach())


class Tiny(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, C, H, W, generator=g)
        self.labels = torch.arange(n) % 2

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"idx": i, "id": f"s{i}", "img": self.images[i], "lab": int(self.labels[i])}


def test_trainer_runs_end_to_end(tmp_path):
    train, val = Tiny(N, 0), Tiny(4, 1)
    torch.manual_seed(0)
    m = GlobalAttention(tiny_cnn(), train.images, GlobalAttentionConfig(k=4, cutoff_epoch=1))
    initial = m.weight_map().mean().item()
    trainer = Trainer(TrainConfig(epochs=3, batch_size=4, progress=False), device="cpu")
    result = trainer.fit(m, DataLoader(train, batch_size=4), DataLoader(val, batch_size=4), tmp_path, seed=0)
    history = result.history
    assert len(history) == 3
    for column in ("train_ce", "train_l1", "val_ce", "val_l1", "map_mean"):
        assert history[column].notna().all()
    assert m.frozen and history.map_mean.iloc[0] != initial  # the pixel CNN trained in epoch 1 only
    assert history.map_mean.iloc[0] == history.map_mean.iloc[1] == history.map_mean.iloc[2]


def test_l1_baseline_starts_at_one_and_penalises_mean_abs_weight():
    torch.manual_seed(0)
    m = PixelWeightL1(tiny_cnn(), (H, W), l1_weight=0.5)
    assert torch.equal(PixelWeight(H, W).weight, torch.ones(H, W))
    assert torch.equal(m.pixel_weight.weight, torch.ones(H, W))
    with torch.no_grad():
        m.pixel_weight.weight.mul_(torch.linspace(-2, 2, H * W).view(H, W))
    b = batch(8)
    out = m.step(b)
    l1 = m.pixel_weight.weight.abs().mean()
    assert out.losses["l1"].item() == pytest.approx(l1.item())
    assert out.losses["l1"].item() == pytest.approx(l1_penalty(m.pixel_weight.weight).item())
    assert out.losses["loss"].item() == pytest.approx(out.losses["ce"].item() + 0.5 * l1.item())
    assert out.outputs["map"].shape == (4, 1, H, W)
