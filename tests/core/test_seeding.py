"""Seeding, determinism flags, DataLoader worker seeding, device choice."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from attnlib.core.device import default_device
from attnlib.core.seeding import seed_everything, threads_from_env, torch_generator, worker_init_fn


@pytest.fixture(autouse=True)
def _restore_determinism():
    """Leave torch's global determinism flags as the test found them."""
    flags = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    yield
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags[2], flags[3]


def _draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_seed_everything_repeats_python_numpy_and_torch_draws():
    seed_everything(7)
    first = _draws()
    seed_everything(7)
    assert _draws() == first
    seed_everything(8)
    assert _draws() != first


def test_seed_everything_sets_determinism_flags():
    seed_everything(0, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    seed_everything(0, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark


def test_cublas_workspace_set_only_with_cuda_and_never_overwritten(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    seed_everything(0)
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    seed_everything(0)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    seed_everything(0)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


_THREADS_SCRIPT = """
import torch
from attnlib.core.seeding import run_threads, seed_everything
before = torch.get_num_threads()
seed_everything(0)
print(before, torch.get_num_threads(), torch.get_num_interop_threads(), run_threads())
"""


def _threads_after_seeding(threads: str | None) -> list[int]:
    """(threads before, intra-op and inter-op threads after seed_everything, run_threads()) in a fresh
    Python (inter-op threads can be set once per process), with $ATTNLIB_THREADS = ``threads``."""
    env = {k: v for k, v in os.environ.items() if k not in ("ATTNLIB_THREADS", "OMP_NUM_THREADS")}
    if threads is not None:
        env["ATTNLIB_THREADS"] = threads
    done = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], env=env, capture_output=True, text=True,
                          check=True, timeout=120)
    return [int(n) for n in done.stdout.split()]


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to tell 1 thread from the default")
def test_seed_everything_applies_attnlib_threads():
    before, *after = _threads_after_seeding("1")
    assert before > 1 and after == [1, 1, 1]
    before, intra, _, run = _threads_after_seeding(None)  # unset: torch's own choice stays
    assert before == intra == run > 1


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5"])
def test_threads_env_must_be_a_positive_integer(monkeypatch, text):
    monkeypatch.setenv("ATTNLIB_THREADS", text)
    with pytest.raises(ValueError, match="ATTNLIB_THREADS must be a positive integer"):
        seed_everything(0)
    monkeypatch.setenv("ATTNLIB_THREADS", "")
    assert threads_from_env() is None


def test_worker_init_fn_seeds_numpy_and_random_from_torch_seed():
    torch.manual_seed(1234)
    worker_init_fn(0)
    got = (float(np.random.rand()), random.random())
    np.random.seed(1234)
    random.seed(1234)
    assert got == (float(np.random.rand()), random.random())


class _NumpyNoise(Dataset):
    """Each item is a numpy draw: identical across workers unless workers are seeded apart."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> float:
        return float(np.random.rand())


def _worker_draws(seed: int) -> list[float]:
    loader = DataLoader(
        _NumpyNoise(),
        batch_size=1,
        num_workers=2,
        worker_init_fn=worker_init_fn,
        generator=torch_generator(seed),
    )
    return [float(x) for x in loader]


def test_workers_draw_differently_and_reproducibly():
    draws = _worker_draws(3)
    assert len(set(draws)) == 4  # items 0,2 from worker 0 and 1,3 from worker 1 all differ
    assert _worker_draws(3) == draws
    assert _worker_draws(4) != draws


def test_torch_generator_is_seeded():
    assert torch.equal(
        torch.randperm(20, generator=torch_generator(5)), torch.randperm(20, generator=torch_generator(5))
    )
    assert not torch.equal(
        torch.randperm(20, generator=torch_generator(5)), torch.randperm(20, generator=torch_generator(6))
    )


def test_default_device_prefers_cuda_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == torch.device("cpu")
    assert default_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device() == torch.device("cuda")


def test_default_device_refuses_cuda_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"'cuda'.*CUDA is not available"):
        default_device("cuda")


def test_default_device_refuses_missing_gpu_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError, match=r"'cuda:3'.*only 1 GPU"):
        default_device("cuda:3")
