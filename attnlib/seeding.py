"""Seeding and determinism: one call before a model is built, plus DataLoader helpers."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

log = logging.getLogger(__name__)

#: cuBLAS needs a fixed workspace for deterministic matrix products (CUDA >= 10.2).
CUBLAS_WORKSPACE = ":4096:8"


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device) and set the determinism flags.

    ``deterministic`` turns on ``torch.use_deterministic_algorithms`` with ``warn_only=True``:
    ops that have no deterministic implementation (e.g. ``adaptive_avg_pool2d`` backward on CUDA,
    used by every ResNet) warn instead of failing. cuDNN benchmarking is always off. On a machine
    with CUDA, ``CUBLAS_WORKSPACE_CONFIG`` is set to ``:4096:8`` unless already set; it only takes
    effect if cuBLAS has not been used yet in this process, so call this first.
    """
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
