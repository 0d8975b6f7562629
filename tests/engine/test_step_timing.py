"""The interleaved step timing shared by the scripts in benchmarks/."""

from __future__ import annotations

import torch

from attnlib.engine.step_timing import time_round_robin, timed_step

CPU = torch.device("cpu")


def _arm(name: str, calls: list[str], autocast: list[bool] | None = None):
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)

    def loss() -> torch.Tensor:
        calls.append(name)
        if autocast is not None:
            autocast.append(torch.is_autocast_enabled("cpu"))
        return (weight * 2).sum()

    return (loss, optimizer), weight


def test_round_robin_rotates_the_first_arm_and_drops_the_warmup():
    calls: list[str] = []
    arms = {name: _arm(name, calls)[0] for name in "abc"}
    times = time_round_robin(arms, CPU, steps=2, warmup=1)
    assert "".join(calls) == "abc" + "bca" + "cab"  # round by round, the first arm rotating
    assert list(times) == list("abc")
    assert all(len(values) == 2 and min(values) >= 0 for values in times.values())


def test_timed_step_zeroes_backpropagates_and_steps():
    arm, weight = _arm("a", [])
    timed_step(arm, CPU)
    timed_step(arm, CPU)  # gradients are reset, not accumulated: two steps of 0.1 * 2
    assert torch.allclose(weight.detach(), torch.full((3,), 0.6))


def test_timed_step_without_optimizer_and_under_autocast():
    leaf = torch.ones(2, requires_grad=True)
    assert timed_step((lambda: (3 * leaf).sum(), None), CPU) >= 0
    assert torch.equal(leaf.grad, torch.full((2,), 3.0))
    seen: list[bool] = []
    arm, _ = _arm("a", [], seen)
    timed_step(arm, CPU, amp=True)
    timed_step(arm, CPU)
    assert seen == [True, False]
