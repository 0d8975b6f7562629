"""Memory guard of the pixel CNN (paper 2): the estimate by hand, and refusals on fake free memory (CPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnlib.methods.global_attention import GlobalAttention, GlobalAttentionConfig
from attnlib.models import pixel_attention
from attnlib.models.pixel_attention import (
    PixelMemoryError,
    check_pixel_memory,
    free_memory_bytes,
    pixel_memory_bytes,
)

N, C, H, W, K = 6, 2, 8, 8, 4


def fake_free(monkeypatch: pytest.MonkeyPatch, free: int | None) -> list[torch.device]:
    """Report ``free`` bytes on every device; returns the devices asked about."""
    asked: list[torch.device] = []
    monkeypatch.setattr(pixel_attention, "free_memory_bytes", lambda device: asked.append(device) or free)
    return asked


def method() -> GlobalAttention:
    torch.manual_seed(0)
    image_cnn = nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, 2))
    return GlobalAttention(image_cnn, torch.randn(N, C, H, W), GlobalAttentionConfig(k=K))


def test_estimate_matches_a_hand_count():
    # N=2, C=1, 4 x 4, K=3, 3 x 3: P 32; weights 3*(9*2+1) + (3+1) = 61, times 5 (weight, grad, Adam m, v
    # and Adam's update temporary) = 305; first-conv output, activation and their gradients 4*3*16 = 192.
    assert pixel_memory_bytes(2, 1, 4, 4, 3, 3, device="cuda") == 4 * (32 + 305 + 192)
    assert pixel_memory_bytes(2, 1, 4, 4, 3, 3, device="cpu") == 4 * (2 * 32 + 305 + 192)  # oneDNN's P copy
    assert pixel_memory_bytes(2, 1, 4, 4, 3, 3, device="cuda", element_size=8) == 8 * (32 + 305 + 192)


def test_estimate_of_a_realistic_case():
    # 240 images of 64 x 64 x 1 on CUDA, K=32: P (3.75 MiB) dominates the weights (32 * 2161 + 33 floats)
    estimate = pixel_memory_bytes(240, 1, 64, 64, 32, device="cuda")
    assert estimate == 4 * (240 * 64 * 64 + 5 * (32 * (9 * 240 + 1) + 33) + 4 * 32 * 64 * 64)


def test_free_memory_of_the_cpu_is_positive_and_unknown_devices_are_none():
    free = free_memory_bytes("cpu")
    assert free is not None and free > 0
    assert free_memory_bytes("meta") is None


def test_check_refuses_with_a_clear_message(monkeypatch):
    fake_free(monkeypatch, 1000)
    with pytest.raises(PixelMemoryError) as caught:
        check_pixel_memory(240, 3, 224, 224, 32, device="cpu")
    message = str(caught.value)
    for part in ("N=240", "C=3", "H=224", "W=224", "K=32", "0.00 GiB is free", "smaller images, fewer"):
        assert part in message
    assert "or the CPU" not in message
    assert isinstance(caught.value, MemoryError)


def test_check_suggests_the_cpu_on_cuda(monkeypatch):
    fake_free(monkeypatch, 1000)
    with pytest.raises(PixelMemoryError, match="or the CPU"):
        check_pixel_memory(240, 3, 224, 224, 32, device="cuda")


def test_check_passes_at_the_boundary_and_counts_resident_bytes(monkeypatch):
    needed = pixel_memory_bytes(N, C, H, W, K, device="cpu")
    fake_free(monkeypatch, needed)
    assert check_pixel_memory(N, C, H, W, K, device="cpu") == needed
    fake_free(monkeypatch, needed - 1)
    with pytest.raises(PixelMemoryError):
        check_pixel_memory(N, C, H, W, K, device="cpu")
    assert check_pixel_memory(N, C, H, W, K, device="cpu", resident_bytes=1) == needed


def test_check_skips_devices_of_unknown_free_memory(monkeypatch):
    fake_free(monkeypatch, None)
    assert check_pixel_memory(N, C, H, W, K, device="cpu") > 0


def test_global_attention_refuses_at_construction(monkeypatch):
    # P (N*C*H*W floats) is already in memory when the method is built: only the rest must be free
    rest = pixel_memory_bytes(N, C, H, W, K, device="cpu") - 4 * N * C * H * W
    fake_free(monkeypatch, rest)
    method()
    fake_free(monkeypatch, rest - 1)
    with pytest.raises(PixelMemoryError, match=f"N={N} images x C={C} x H={H} x W={W}"):
        method()


def test_global_attention_refuses_a_move_and_stays_as_it_was(monkeypatch):
    m = method()
    asked = fake_free(monkeypatch, 1000)
    with pytest.raises(PixelMemoryError):
        m.to(torch.float64)  # a new dtype needs a new P (8 bytes a value): checked in full
    assert asked == [torch.device("cpu")]
    assert m.pixels.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in m.parameters())
    with pytest.raises(PixelMemoryError):
        nn.Sequential(m).double()  # also when moved as part of a larger module


def test_global_attention_moves_without_a_check_when_p_stays(monkeypatch):
    m = method()
    asked = fake_free(monkeypatch, 1000)
    m.to("cpu")
    m.to(memory_format=torch.channels_last)
    m.train().eval()
    assert asked == []
    fake_free(monkeypatch, 10**12)
    m.to(torch.float64)
    assert m.pixels.dtype == torch.float64 and "pixels" not in m.state_dict()


def test_cpu_warns_where_onednn_leaves_its_fast_kernel(monkeypatch, caplog):
    from attnlib.models import pixel_attention as pa

    monkeypatch.setattr(pa, "free_memory_bytes", lambda device: 2**40)
    with caplog.at_level("WARNING"):
        pa.check_pixel_memory(2**31 // (4 * 64 * 64) - 1, 1, 64, 64, 4, device="cpu")
    assert caplog.text == ""
    with caplog.at_level("WARNING"):
        pa.check_pixel_memory(2**31 // (4 * 64 * 64), 1, 64, 64, 4, device="cpu")
    assert "slow reference kernel" in caplog.text
