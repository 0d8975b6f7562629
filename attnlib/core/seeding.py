"""Seeding and determinism: one call before a model is built, plus DataLoader helpers.

CPU kernels sum in an order that depends on the thread count, so a run's numbers depend on it too. The
sweep fixes it for every kernel it starts with ``$ATTNLIB_THREADS`` (and OMP/MKL/OpenBLAS variables, which
torch and numpy read at start); :func:`seed_everything` applies ``$ATTNLIB_THREADS`` to torch again.
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

log = logging.getLogger(__name__)

#: cuBLAS needs a fixed workspace for deterministic matrix products (CUDA >= 10.2).
CUBLAS_WORKSPACE = ":4096:8"
#: Intra-op (and, where still allowed, inter-op) threads of torch in every run of a process.
THREADS_ENV = "ATTNLIB_THREADS"


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device) and set the determinism flags.

    ``deterministic`` turns on ``torch.use_deterministic_algorithms`` with ``warn_only=True``:
    ops that have no deterministic implementation (e.g. ``adaptive_avg_pool2d`` backward on CUDA,
    used by every ResNet) warn instead of failing. cuDNN benchmarking is always off. On a machine
    with CUDA, ``CUBLAS_WORKSPACE_CONFIG`` is set to ``:4096:8`` unless already set; it only takes
    effect if cuBLAS has not been used yet in this process, so call this first. With ``$ATTNLIB_THREADS``
    set, torch's thread pools are set to that many threads (see :func:`apply_threads`).
    """
    apply_threads()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if torch.cuda.is_available() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = deterministic
    log.debug("seeded everything with %d (deterministic=%s)", seed, deterministic)


def threads_from_env() -> int | None:
    """``$ATTNLIB_THREADS`` as a thread count, None when unset or empty; ValueError unless a positive
    integer."""
    text = os.environ.get(THREADS_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"${THREADS_ENV} must be a positive integer, got {text!r}")
    return int(text)


def apply_threads() -> None:
    """Set torch's intra-op threads, and its inter-op threads while torch still allows it (before any
    inter-op work), to ``$ATTNLIB_THREADS``; nothing when it is unset."""
    threads = threads_from_env()
    if threads is None:
        return
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != threads:
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # torch allows it once, before inter-op work; intra-op threads decide the sums
            log.debug("inter-op threads stay at %d", torch.get_num_interop_threads())


def run_threads() -> int:
    """The intra-op thread count torch computes with now: what a run seeded by :func:`seed_everything`
    uses."""
    return torch.get_num_threads()


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and python ``random`` from the worker's torch seed.

    Torch already gives each worker the seed ``base_seed + worker_id``; without this numpy and
    ``random`` would hold the same state in every worker (and in every epoch with forked workers).
    """
    seed = torch.initial_seed()
    np.random.seed(seed % 2**32)
    random.seed(seed)


def torch_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (for DataLoader shuffling)."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
