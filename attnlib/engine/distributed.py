"""Data-parallel training over processes: the torch.distributed plumbing of the trainer and the run executor.

Start one process per GPU (or per CPU worker) with torchrun; the entry point's first call is
:func:`init_from_env`, then it trains as one process would::

    torchrun --nproc-per-node=4 --no-python attnlib train ...            # one machine, 4 processes
    torchrun --nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
        --no-python attnlib train ...                                     # two machines sharing a disk

(``--no-python`` runs the ``attnlib`` console script; a module runs as ``torchrun ... -m package.module``.)
Without torchrun's environment, or with one process, no process group starts and every helper answers as
rank 0 of 1, so single-process code needs none.

What W > 1 processes do in :class:`~attnlib.engine.trainer.Trainer` and
:func:`~attnlib.engine.executor.execute`:

- the batch size stays global: every batch of the one-process loader is split into W contiguous chunks,
  one per rank (:class:`ShardedBatchSampler`), so step t trains on the samples one process trains on;
- DistributedDataParallel averages the gradients, each rank's loss scaled by n_local * W / n_global
  (:func:`gradient_scale`), which makes the average the gradient of the global batch's mean loss, also
  for an uneven last batch (exact for losses that are means over samples; a term normalised otherwise,
  e.g. by the number of maps in the batch, is normalised per rank);
- BatchNorm layers become SyncBatchNorm on accelerators; on the CPU, where torch's SyncBatchNorm does not
  run, each rank normalises with its own chunk's statistics and rank 0's running statistics are kept
  (DDP sends them to every rank before each step, :func:`broadcast_buffers` after each epoch);
- epoch means are summed over ranks, so every rank logs the global means;
- each rank's python/numpy/torch RNGs start from ``seed + rank`` (dropout draws differ between ranks);
  loader workers take their seeds from the shared loader generator, the same on every rank;
- rank 0 alone writes checkpoints and stores runs, in folders every process reads (a shared disk).

Validation, evaluation and prediction run ``method.step`` without DDP: validation and per-epoch evaluation
score each rank's chunk of every batch (a rank with an empty chunk skips it), ``Trainer.predict`` scores the
whole loader on every rank.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, Sampler

from attnlib.methods.base import Method, StepOutput

log = logging.getLogger(__name__)


def initialized() -> bool:
    """Whether this process belongs to a process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the process group; 0 without one."""
    return dist.get_rank() if initialized() else 0


def world_size() -> int:
    """The number of processes in the process group; 1 without one."""
    return dist.get_world_size() if initialized() else 1


def local_rank() -> int:
    """This process's index on its machine (torchrun's ``LOCAL_RANK``); 0 without a process group."""
    return int(os.environ.get("LOCAL_RANK", "0")) if initialized() else 0


def is_main() -> bool:
    """Whether this process is rank 0 (the one that writes files)."""
    return rank() == 0


def init_from_env() -> int:
    """Join the process group that torchrun's environment describes; returns the world size.

    Starts nothing (and returns 1) unless ``WORLD_SIZE`` > 1. With CUDA: backend NCCL, this process's GPU
    set to ``LOCAL_RANK``; otherwise gloo. ``MASTER_ADDR``, ``MASTER_PORT`` and ``RANK`` come from the
    environment too. The group is destroyed when the process exits. Calling it again changes nothing.
    """
    if initialized():
        return world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 1
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    atexit.register(_destroy)
    log.info("rank %d of %d (%s)", rank(), world_size(), dist.get_backend())
    return world_size()


def _destroy() -> None:
    if initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here; nothing in a single process."""
    if world_size() > 1:
        dist.barrier()


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """``tensor`` replaced in place by its sum over the ranks (on the backend's device); returned."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), by rank: ``[obj]`` in a single process."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (picklable) on every rank; ``obj`` itself in a single process."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers of ``module`` (e.g. BatchNorm running statistics) to every rank."""
    if world_size() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=src)


def gradient_scale(n_local: int, device: torch.device) -> Tensor:
    """``n_local * W / n_global``: the factor on a rank's mean loss over its ``n_local`` samples that makes
    DDP's average of the W gradients the gradient of the mean loss over all ``n_global`` samples."""
    total = all_reduce_sum(torch.tensor(float(n_local), device=device))
    return n_local * world_size() / total


class ShardedBatchSampler(Sampler[list[int]]):
    """Rank ``rank``'s chunk of every batch of ``batches``: ``torch.tensor_split(batch, world_size)[rank]``.

    The W ranks' chunks of step t partition the batch one process draws at step t (the same sampler, so
    the same shuffling from the same generator). ``skip_empty`` False (training, where every rank must
    step): a batch smaller than ``world_size`` is a ValueError, raised here when ``batches`` is a
    ``BatchSampler`` (sizes known), else when reached. True (scoring): a rank whose chunk is empty skips it.
    """

    def __init__(
        self, batches: Iterable[list[int]], rank: int, world_size: int, skip_empty: bool = False
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.batches, self.rank, self.world_size, self.skip_empty = batches, rank, world_size, skip_empty
        self._sizes = _batch_sizes(batches)
        if not skip_empty and self._sizes and min(self._sizes) < world_size:
            raise ValueError(self._too_small(min(self._sizes)))

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            if len(batch) < self.world_size and not self.skip_empty:
                raise ValueError(self._too_small(len(batch)))
            if self.rank < len(batch):
                yield torch.tensor_split(torch.as_tensor(batch), self.world_size)[self.rank].tolist()

    def __len__(self) -> int:
        if self._sizes is None:
            return len(self.batches)  # type: ignore[arg-type]
        return sum(size > self.rank for size in self._sizes)

    def _too_small(self, size: int) -> str:
        detail = ""
        if isinstance(self.batches, BatchSampler):
            n, b = len(self.batches.sampler), self.batches.batch_size  # type: ignore[arg-type]
            detail = f" ({n} samples in batches of {b})"
        return (
            f"a batch of {size} samples cannot be split over {self.world_size} processes{detail}: "
            "every process needs at least one sample per step; change the batch size, drop the last "
            "batch or use fewer processes"
        )


def _batch_sizes(batches: Iterable[list[int]]) -> list[int] | None:
    """The sizes of an epoch's batches of a ``BatchSampler``; None for other batch samplers."""
    if not isinstance(batches, BatchSampler):
        return None
    n, b = len(batches.sampler), batches.batch_size  # type: ignore[arg-type]
    last = [] if batches.drop_last or n % b == 0 else [n % b]
    return [b] * (n // b) + last


def shard_loader(loader: DataLoader, rank: int, world_size: int, skip_empty: bool = False) -> DataLoader:
    """A loader of the same dataset, workers, collation and generator whose batches are rank ``rank``'s
    chunks of ``loader``'s batches (:class:`ShardedBatchSampler`); it draws the same random numbers from
    the generator as ``loader`` does."""
    if isinstance(loader.dataset, IterableDataset) or loader.batch_sampler is None:
        raise ValueError("sharding needs a loader of a map-style dataset with batch_size set")
    return DataLoader(
        loader.dataset,
        batch_sampler=ShardedBatchSampler(loader.batch_sampler, rank, world_size, skip_empty),
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor,
        persistent_workers=loader.persistent_workers,
        pin_memory_device=loader.pin_memory_device,
        in_order=loader.in_order,
    )


def sync_batchnorm(method: Method, device: torch.device) -> None:
    """Replace ``method``'s BatchNorm layers in place by SyncBatchNorm (same parameters and buffers) where
    torch runs it: on ``device`` unless it is the CPU. Hooks on those layers are not carried over."""
    if device.type != "cpu":
        nn.SyncBatchNorm.convert_sync_batchnorm(method)  # a Method is no BatchNorm: converted in place


class _Step(nn.Module):
    """``method.step`` as a module's forward, for DistributedDataParallel."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: dict[str, Any]) -> StepOutput:
        return self.method.step(batch)


class DistributedStep(AbstractContextManager["DistributedStep"]):
    """``method.step`` whose backward averages gradients over the ranks (DistributedDataParallel); plain
    ``method.step`` in a single process.

    The DDP wrapper is (re)built whenever the set of trainable parameters changes, so a method that freezes
    a part mid-training (``on_epoch_start``, e.g. ``ABNStaged``) or unfreezes one stays in sync; DDP waits
    for a gradient of every trainable parameter in every step (``find_unused_parameters`` off). Leaving the
    context removes the wrapper's gradient hooks.
    """

    def __init__(self, method: Method, device: torch.device) -> None:
        self.method, self.device = method, device
        self._distributed = world_size() > 1
        self._ddp: DistributedDataParallel | None = None
        self._trainable: list[int] = []

    def __call__(self, batch: dict[str, Any]) -> StepOutput:
        if not self._distributed:
            return self.method.step(batch)
        trainable = [id(p) for p in self.method.parameters() if p.requires_grad]
        if trainable != self._trainable:
            self.close()
            self._trainable = trainable
            if trainable:
                self._ddp = DistributedDataParallel(_Step(self.method), device_ids=self._device_ids())
        return self.method.step(batch) if self._ddp is None else self._ddp(batch)

    def _device_ids(self) -> list[int] | None:
        """The one GPU of this process for DDP (CUDA); None elsewhere."""
        if self.device.type != "cuda":
            return None
        return [self.device.index if self.device.index is not None else torch.cuda.current_device()]

    def close(self) -> None:
        """Remove the DDP wrapper's hooks from the parameters (they would outlive a lingering reference)."""
        if self._ddp is not None:
            self._ddp._remove_autograd_hooks()
            self._ddp, self._trainable = None, []

    def __exit__(self, *exc: object) -> None:
        self.close()
