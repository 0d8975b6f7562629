"""Throughput of training steps: images/s, step time and model FLOP utilisation (MFU) against a peak.

A :class:`StepArm` is one method's training step as the trainer runs it (``Trainer._train_epoch``): zero the
gradients, ``method.step(batch).losses["loss"]`` under bf16 autocast when ``amp``, backward, optimiser step;
the method, its batch and its optimiser placed and built by the trainer (``Trainer.place``, ``to_device``,
``optimizer``). :func:`measure` counts each arm's FLOPs once
(:func:`step_flops`, ``torch.utils.flop_counter``: matrix products and convolutions of the forward and the
backward, not elementwise work nor the optimiser's update), times the arms round-robin
(:func:`~attnlib.engine.step_timing.time_round_robin`) and compares each method with its plain backbone.

MFU = achieved FLOP/s / peak FLOP/s. The peak is the card's dense bf16 tensor-core peak
(:data:`PEAK_BF16_TFLOPS`, from NVIDIA's datasheets, matched on ``torch.cuda.get_device_name``) unless given;
CPUs have no table, so their MFU is NaN unless a peak is given.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch
from torch.optim import Optimizer
from torch.utils.flop_counter import FlopCounterMode

from attnlib.engine.step_timing import Arm, autocast, time_round_robin
from attnlib.methods.base import Method

aten = torch.ops.aten

#: Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s; the first key contained in the lower-cased device
#: name wins, so a variant comes before its family ("h100 pcie" before "h100").
PEAK_BF16_TFLOPS: dict[str, float] = {
    "h200": 989.0,
    "h100 pcie": 756.0,
    "h100 nvl": 835.0,
    "h100": 989.0,  # SXM5 ("NVIDIA H100 80GB HBM3")
    "a100": 312.0,
    "l40s": 362.0,
}
#: Issue 25's goals: a method's step at most this many times its plain backbone's; an MFU of at least this
#: (ResNet-50 workloads).
RATIO_GOAL = 1.10
MFU_GOAL = 0.40


@dataclass
class StepArm:
    """One method's training step: ``batch`` already placed (``Trainer.to_device``), ``optimizer`` over the
    method's parameter groups, bf16 autocast when ``amp``. ``baseline``: the name of the arm of its plain
    backbone (None: this arm is one); ``mfu_goal``: whether :data:`MFU_GOAL` applies to it."""

    method: Method
    batch: Mapping[str, Any]
    optimizer: Optimizer
    amp: bool = False
    baseline: str | None = None
    mfu_goal: bool = False

    def timing_arm(self) -> Arm:
        """The arm of :mod:`~attnlib.engine.step_timing`: the method's loss and its optimiser."""
        return lambda: self.method.step(self.batch).losses["loss"], self.optimizer

    @property
    def batch_size(self) -> int:
        return len(self.batch["lab"])


@dataclass(frozen=True)
class Throughput:
    """One arm's measurement: FLOPs per step (forward + backward), median step (s), images/s, achieved
    TFLOP/s, MFU (NaN without a peak), the ratios of its median step and of its FLOPs to its baseline's (NaN
    for a plain arm: a step ratio above the FLOP ratio is overhead beyond the method's extra arithmetic), and
    the goals (None where a goal does not apply or cannot be judged)."""

    name: str
    baseline: str | None
    batch_size: int
    amp: bool
    flops: int
    median_s: float
    images_per_s: float
    tflops: float
    mfu: float
    ratio: float
    flop_ratio: float
    ratio_ok: bool | None
    mfu_ok: bool | None


def peak_tflops(device: torch.device, override: float | None = None) -> tuple[float, str]:
    """The device's peak TFLOP/s for MFU and where it comes from: ``override`` when given, else the table's
    entry for a known CUDA card; NaN and the reason otherwise."""
    if override is not None:
        if not override > 0:
            raise ValueError(f"the peak must be positive, got {override}")
        return float(override), f"{override:g} TFLOP/s (given)"
    if device.type != "cuda":
        return math.nan, f"no peak table for {device.type}: an MFU needs a given peak"
    name = torch.cuda.get_device_name(device)
    key = next((key for key in PEAK_BF16_TFLOPS if key in name.lower()), None)
    if key is None:
        return math.nan, f"{name}: not in the peak table, an MFU needs a given peak"
    return PEAK_BF16_TFLOPS[key], f"{name}: {PEAK_BF16_TFLOPS[key]:g} TFLOP/s dense bf16 (table)"


def mfu(flops: float, seconds: float, peak: float) -> float:
    """Model FLOP utilisation: ``flops`` done in ``seconds`` over a peak of ``peak`` TFLOP/s."""
    return flops / seconds / (peak * 1e12)


def _conv_backward_flops(
    grad_out_shape: list[int], x_shape: list[int], w_shape: list[int], _bias: Any, _stride: Any,
    _padding: Any, _dilation: Any, transposed: bool, _output_padding: Any, _groups: int,
    output_mask: list[bool], **_: Any,
) -> int:
    """FLOPs of ``aten.convolution_backward``: each gradient asked for (input, weight) costs the forward's
    ``2 * batch * positions * prod(weight shape)``, positions those of the output (of the input when
    transposed). Replaces torch's formula, which (torch 2.14; pytorch PR 183405) counts a grouped
    convolution's weight gradient as if it were not grouped: ``groups`` times too many."""
    positions = math.prod((x_shape if transposed else grad_out_shape)[2:])
    forward = 2 * x_shape[0] * positions * math.prod(w_shape)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


class _GlobalOnly:
    """Stands in for ``FlopCounterMode``'s module tracker, whose hooks break ``torch.autograd.grad`` on a leaf
    (pytorch#131753; RRR and the harmonizer differentiate their input): every FLOP counts toward "Global"."""

    parents = frozenset({"Global"})

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def step_flops(arm: StepArm, device: torch.device) -> int:
    """FLOPs of one forward and backward of ``arm``: ``FlopCounterMode`` (its convolution backward corrected
    for groups, no per-module breakdown); the gradients are left set."""
    loss, optimizer = arm.timing_arm()
    optimizer.zero_grad(set_to_none=True)
    counter = FlopCounterMode(display=False, custom_mapping={aten.convolution_backward: _conv_backward_flops})
    counter.mod_tracker = _GlobalOnly()
    with counter:
        with autocast(device, arm.amp):
            value = loss()
        value.backward()
    return counter.get_total_flops()


def measure(
    arms: Mapping[str, StepArm], device: torch.device, steps: int, warmup: int, peak: float = math.nan
) -> list[Throughput]:
    """Each arm's :class:`Throughput`: FLOPs counted once, then ``warmup + steps`` training steps timed
    round-robin (warm-up dropped); ``peak`` in TFLOP/s (NaN: no MFU)."""
    for name, arm in arms.items():
        if arm.baseline is not None and arm.baseline not in arms:
            raise ValueError(f"arm {name!r}: its baseline {arm.baseline!r} is not one of {list(arms)}")
    flops = {name: step_flops(arm, device) for name, arm in arms.items()}
    times = time_round_robin(
        {name: arm.timing_arm() for name, arm in arms.items()}, device, steps, warmup,
        amp={name: arm.amp for name, arm in arms.items()},
    )
    medians = {name: statistics.median(values) for name, values in times.items()}
    rows = []
    for name, arm in arms.items():
        seconds = medians[name]
        plain = arm.baseline is None
        ratio = math.nan if plain else seconds / medians[arm.baseline]
        flop_ratio = math.nan if plain else flops[name] / flops[arm.baseline]
        utilisation = mfu(flops[name], seconds, peak)
        rows.append(Throughput(
            name=name, baseline=arm.baseline, batch_size=arm.batch_size, amp=arm.amp, flops=flops[name],
            median_s=seconds, images_per_s=arm.batch_size / seconds, tflops=flops[name] / seconds / 1e12,
            mfu=utilisation, ratio=ratio, flop_ratio=flop_ratio,
            ratio_ok=None if plain else ratio <= RATIO_GOAL,
            mfu_ok=utilisation >= MFU_GOAL if arm.mfu_goal and not math.isnan(utilisation) else None,
        ))
    return rows


def to_frame(rows: list[Throughput]) -> pd.DataFrame:
    """The rows as a table: one row per arm, the columns of :class:`Throughput`."""
    return pd.DataFrame([asdict(row) for row in rows])


def format_table(rows: list[Throughput]) -> str:
    """A fixed-width table: step ms, images/s, GFLOP per step, TFLOP/s, MFU, step and FLOP ratios to plain,
    the goals."""
    verdict = {True: "pass", False: "FAIL", None: "-"}
    width = max(len(row.name) for row in rows)
    header = (
        f"{'arm':{width}s}  {'prec':4s} {'batch':>5s} {'ms/step':>9s} {'img/s':>9s} {'GFLOP/step':>11s} "
        f"{'TFLOP/s':>8s} {'MFU':>6s} {'x plain':>7s} {'FLOP x':>6s}  {f'<={RATIO_GOAL:g}x':6s} "
        f"{f'MFU>={MFU_GOAL:.0%}':8s}"
    )
    lines = [header]
    for row in rows:
        mfu_text = "n/a" if math.isnan(row.mfu) else f"{row.mfu:.1%}"
        ratio_text = "-" if math.isnan(row.ratio) else f"{row.ratio:.3f}"
        flop_text = "-" if math.isnan(row.flop_ratio) else f"{row.flop_ratio:.2f}"
        lines.append(
            f"{row.name:{width}s}  {'bf16' if row.amp else 'fp32':4s} {row.batch_size:5d} "
            f"{row.median_s * 1000:9.1f} {row.images_per_s:9.1f} {row.flops / 1e9:11.2f} {row.tflops:8.3f} "
            f"{mfu_text:>6s} {ratio_text:>7s} {flop_text:>6s}  {verdict[row.ratio_ok]:6s} "
            f"{verdict[row.mfu_ok]:8s}"
        )
    return "\n".join(lines)
