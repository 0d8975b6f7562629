"""Timing of training steps for the scripts in ``benchmarks/``: interleaved arms in one process.

An *arm* is ``(loss, optimizer)``: ``loss()`` runs the forward and returns the loss to back-propagate,
``optimizer`` (or None: no parameters to zero or step) the optimiser it steps. ``time_round_robin``
times the arms in turn, rotating which goes first, so that drift of the machine (load, clocks, caches)
hits all of them alike; warm-up rounds are dropped. On CUDA every timing is bracketed by a
synchronisation, so it covers the kernels and not only their launch. ``amp`` runs the forward under bf16
autocast, for every arm or per arm (e.g. fp32 against bf16 in one interleaved run).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

#: a step's loss, and the optimiser it steps (None: only the forward and backward are timed)
Arm = tuple[Callable[[], Tensor], torch.optim.Optimizer | None]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels (CUDA); nothing to wait for elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` when ``amp``, else nothing (the trainer's forward context)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()


def timed_step(arm: Arm, device: torch.device, amp: bool = False) -> float:
    """Seconds for one training step: zero grads, forward (the arm's loss), backward, optimiser step.

    ``amp``: the forward under bf16 autocast (the backward outside it, as the trainer does).
    """
    loss, optimizer = arm
    synchronize(device)
    start = time.perf_counter()
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    with autocast(device, amp):
        value = loss()
    value.backward()
    if optimizer is not None:
        optimizer.step()
    synchronize(device)
    return time.perf_counter() - start


def time_round_robin(
    arms: Mapping[str, Arm],
    device: torch.device,
    steps: int,
    warmup: int,
    amp: bool | Mapping[str, bool] = False,
) -> dict[str, list[float]]:
    """Step times (s) of every arm, ``warmup + steps`` rounds round-robin with the first arm rotating
    (no arm always follows the same one); the first ``warmup`` rounds are dropped. ``amp``: for all arms,
    or by arm name (every arm named)."""
    names = list(arms)
    amps = {name: amp[name] for name in names} if isinstance(amp, Mapping) else dict.fromkeys(names, amp)
    times: dict[str, list[float]] = {name: [] for name in names}
    for step in range(warmup + steps):
        shift = step % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed = timed_step(arms[name], device, amps[name])
            if step >= warmup:
                times[name].append(elapsed)
    return times
