"""Step throughput (attnlib.engine.throughput): FLOPs of a training step by hand, MFU arithmetic, the peak
table, and a smoke run of benchmarks/throughput.py."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from attnlib.engine import throughput
from attnlib.engine.step_timing import time_round_robin
from attnlib.engine.throughput import (
    StepArm,
    measure,
    mfu,
    peak_tflops,
    step_flops,
)
from attnlib.engine.trainer import TrainConfig, Trainer
from attnlib.methods.base import Classifier
from attnlib.methods.saliency_supervision import RightForRightReasons

CPU = torch.device("cpu")
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "throughput.py"


def _arm(model: nn.Module, images: torch.Tensor, classes: int, **options) -> StepArm:
    method = Classifier(model)
    batch = {"img": images, "lab": torch.randint(0, classes, (len(images),))}
    return StepArm(method, batch, torch.optim.SGD(method.parameters(), lr=0.1), **options)


def test_linear_step_flops_are_forward_plus_the_gradients_asked_for():
    n, a, b, c = 5, 8, 6, 4
    flops = step_flops(_arm(nn.Sequential(nn.Linear(a, b), nn.Linear(b, c)), torch.rand(n, a), c), CPU)
    forward = 2 * n * a * b + 2 * n * b * c
    # the first layer's input needs no gradient: only its weight gradient; the second needs both
    assert flops == forward + 2 * n * a * b + 2 * (2 * n * b * c)


def test_grouped_convolution_backward_is_twice_its_forward():
    bsz, cin, ch, size, k = 2, 3, 16, 8, 5
    model = nn.Sequential(
        nn.Conv2d(cin, ch, 1), nn.Conv2d(ch, ch, 3, padding=1, groups=ch), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(ch, k),
    )
    flops = step_flops(_arm(model, torch.rand(bsz, cin, size, size), k), CPU)
    pointwise = 2 * bsz * size * size * ch * cin  # input is the image: weight gradient only
    depthwise = 2 * bsz * size * size * ch * 9  # torch 2.14 alone counts its weight gradient ch times over
    linear = 2 * bsz * ch * k
    assert flops == 2 * pointwise + 3 * depthwise + 3 * linear


def test_flops_of_an_input_gradient_method_are_counted():
    # RRR differentiates its input (autograd.grad on a leaf), which FlopCounterMode's module tracker breaks
    n, side, c = 4, 3, 5
    d = side * side
    method = RightForRightReasons(nn.Sequential(nn.Flatten(), nn.Linear(d, c)), lambda_1=1.0)
    batch = {"img": torch.rand(n, 1, side, side), "lab": torch.zeros(n, dtype=torch.long),
             "map": torch.rand(n, 1, side, side)}
    flops = step_flops(StepArm(method, batch, torch.optim.SGD(method.parameters(), lr=0.1)), CPU)
    product = 2 * n * d * c  # one n x d x c matrix product
    # forward; input gradient; backward through it (to that gradient's two factors); backward of the forward
    # (weight and, the input being a leaf that requires grad, input)
    assert flops == product * (1 + 1 + 2 + 2)


def test_mfu_and_the_peak_table(monkeypatch):
    assert mfu(3e12, 0.5, 12.0) == pytest.approx(0.5)  # 6 TFLOP/s of 12
    assert peak_tflops(CPU, 2.5) == (2.5, "2.5 TFLOP/s (given)")
    value, reason = peak_tflops(CPU)
    assert math.isnan(value) and "cpu" in reason
    with pytest.raises(ValueError):
        peak_tflops(CPU, 0.0)
    names = {"NVIDIA H100 80GB HBM3": 989.0, "NVIDIA H100 PCIe": 756.0, "NVIDIA H200": 989.0,
             "NVIDIA A100-SXM4-40GB": 312.0, "NVIDIA L40S": 362.0}
    for name, peak in names.items():
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda _device, name=name: name)
        assert peak_tflops(torch.device("cuda"))[0] == peak
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _device: "Tesla T4")
    assert math.isnan(peak_tflops(torch.device("cuda"))[0])


def test_measure_derives_rates_ratio_mfu_and_goals(monkeypatch):
    seen = {}

    def fake_times(arms, device, steps, warmup, amp):
        seen.update(amp)
        return {"plain": [0.1, 0.3, 0.2], "method": [0.25, 0.22, 0.3]}  # medians 0.2 and 0.25

    monkeypatch.setattr(throughput, "time_round_robin", fake_times)
    images = torch.rand(4, 8)
    arms = {
        "plain": _arm(nn.Linear(8, 2), images, 2, mfu_goal=True),
        "method": _arm(nn.Linear(8, 2), images, 2, amp=True, baseline="plain"),
    }
    plain, method = measure(arms, CPU, steps=3, warmup=0, peak=1e-9)
    flops = 2 * 2 * 4 * 8 * 2  # forward and weight gradient of the linear layer
    assert seen == {"plain": False, "method": True}
    assert (plain.flops, plain.median_s, plain.images_per_s) == (flops, 0.2, pytest.approx(20.0))
    assert plain.tflops == pytest.approx(flops / 0.2 / 1e12)
    assert plain.mfu == pytest.approx(flops / 0.2 / 1e3)  # peak 1e-9 TFLOP/s = 1000 FLOP/s
    assert plain.mfu_ok is True and math.isnan(plain.ratio) and plain.ratio_ok is None
    assert method.ratio == pytest.approx(1.25) and method.ratio_ok is False and method.mfu_ok is None
    assert method.flop_ratio == 1.0 and math.isnan(plain.flop_ratio)
    with pytest.raises(ValueError, match="baseline"):
        measure({"method": arms["method"]}, CPU, steps=1, warmup=0)


def test_round_robin_takes_the_precision_per_arm():
    seen: dict[str, list[bool]] = {"fp32": [], "bf16": []}
    leaf = torch.ones(2, requires_grad=True)

    def arm(name):
        def loss():
            seen[name].append(torch.is_autocast_enabled("cpu"))
            return leaf.sum()

        return loss, None

    arms = {name: arm(name) for name in seen}
    time_round_robin(arms, CPU, steps=2, warmup=0, amp={"fp32": False, "bf16": True})
    assert seen == {"fp32": [False, False], "bf16": [True, True]}


def test_the_trainer_places_and_builds_what_the_steps_time():
    """The throughput arms use the trainer's own placement and optimiser (channels_last on CUDA only)."""
    method = Classifier(nn.Conv2d(3, 4, 3))
    config = TrainConfig(epochs=1, batch_size=2, optimizer="sgd_nesterov", lr=0.05, weight_decay=1e-4)
    trainer = Trainer(config, CPU, checkpoint_every=None)
    trainer.place(method)
    assert not method.model.weight.is_contiguous(memory_format=torch.channels_last)
    raw = {"img": torch.rand(2, 3, 5, 5), "lab": torch.zeros(2), "id": ["a", "b"]}
    batch = trainer.to_device(raw)
    assert batch["img"].is_contiguous() and batch["id"] == ["a", "b"]
    optimizer = trainer.optimizer(method)
    assert isinstance(optimizer, torch.optim.SGD)
    group = {key: optimizer.param_groups[0][key] for key in ("lr", "nesterov", "momentum", "weight_decay")}
    assert group == {"lr": 0.05, "nesterov": True, "momentum": 0.9, "weight_decay": 1e-4}


def _script():
    spec = importlib.util.spec_from_file_location("throughput_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_script_smoke_on_cpu(tmp_path, capsys):
    script = _script()
    out = tmp_path / "throughput.csv"
    script.main(["--profile", "smoke", "--device", "cpu", "--methods", "gg-cam-resnet", "global-attention",
                 "benchmark", "--batch-size", "2", "--image-size", "16", "--pixel-images", "2",
                 "--steps", "1", "--warmup", "0", "--csv", str(out)])
    table = pd.read_csv(out)
    assert list(table["workload"].unique()) == ["gg-cam-resnet", "global-attention-resnet18", "benchmark"]
    assert len(table) == 9 and (table["flops"] > 0).all() and (table["batch_size"] == 2).all()
    plain = table["baseline"].isna()
    assert plain.sum() == 3 and table.loc[plain, "ratio"].isna().all()
    assert table.loc[~plain, "ratio"].gt(0).all() and table.loc[~plain, "flop_ratio"].ge(1).all()
    assert table["mfu"].isna().all()  # no peak on the CPU
    assert "MFU not reported" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown workloads"):
        script.select(script.workloads("smoke", None), ["nothing"])
