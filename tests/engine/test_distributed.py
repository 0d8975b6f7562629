"""Data-parallel training (attnlib.engine.distributed): 2 CPU processes (gloo) under torchrun against one
process with the same global batch.

One ``torchrun --standalone --nproc-per-node=2`` launch of this file (``__main__``: :func:`_worker`) runs
every scenario and saves each rank's results; the ``ddp`` fixture starts it once per module and the tests
compare its files with single-process runs made here. The sampler and the single-process helpers are tested
without processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from attnlib.core.seeding import torch_generator
from attnlib.engine import distributed, trainer
from attnlib.engine.distributed import ShardedBatchSampler, shard_loader
from attnlib.engine.executor import TrainingRun, execute, make_loaders
from attnlib.engine.runstore import RunStore
from attnlib.engine.trainer import CHECKPOINT, FitResult, TrainConfig, Trainer
from attnlib.methods.base import Classifier

WORLD = 2
BATCH = 7  # 23 training samples: batches 7, 7, 7, 2, split 4 + 3 and 1 + 1 over two ranks
TIMING = ["data_seconds", "compute_seconds", "epoch_seconds"]
# training reads per rank: 4+4+4+1 = 13 (rank 0) and 3+3+3+1 = 10 (rank 1) an epoch; both ranks crash at
# their first read of epoch 3's second step (before it communicates), after the checkpoint of epoch 2
CRASH_AFTER = (2 * 13 + 4, 2 * 10 + 3)


class Blobs(Dataset):
    """``n`` 1x6x6 images whose brightness encodes the class, plus noise; follows the dataset contract.
    ``fail_after``: reading more items than that raises (a simulated crash)."""

    def __init__(self, n: int, seed: int, fail_after: int | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = np.arange(n) % 2
        noise = torch.randn(n, 1, 6, 6, generator=g) * 0.7
        self.images = noise + torch.as_tensor(self.labels, dtype=torch.float32).view(-1, 1, 1, 1)
        self.label_names, self.fingerprint = ["a", "b"], f"blobs-{n}-{seed}"
        self.fail_after, self.reads = fail_after, 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise RuntimeError("simulated crash")
        return {"idx": i, "id": f"s{i:03d}", "img": self.images[i], "lab": int(self.labels[i])}


def datasets(fail_after: int | None = None) -> dict[str, Blobs]:
    """Train 23 (uneven chunks and last batch), val 8 (last batch 1: rank 1 scores one batch), test 5."""
    return {"train": Blobs(23, 1, fail_after), "val": Blobs(8, 2), "test": Blobs(5, 3)}


class ChunkBatchNorm(nn.BatchNorm2d):
    """BatchNorm as WORLD ranks compute it on the CPU (no SyncBatchNorm there): each rank's chunk of the batch
    by its own statistics, the running statistics from rank 0's chunk (DDP hands rank 0's buffers to all)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        self.num_batches_tracked.add_(1)
        out, stats = [], (self.running_mean, self.running_var)
        for r, chunk in enumerate(torch.tensor_split(x, WORLD)):
            mean, var = stats if r == 0 else (stats[0].clone(), stats[1].clone())
            out.append(F.batch_norm(chunk, mean, var, self.weight, self.bias, True, self.momentum, self.eps))
        return torch.cat(out)


class FreezingClassifier(Classifier):
    """Freezes its convolution from epoch 3 on (as ABNStaged freezes its feature extractor)."""

    def on_epoch_start(self, epoch: int) -> None:
        if epoch >= 3:
            self.model[0].requires_grad_(False)


def net(norm: type[nn.Module] | None = None, dropout: float = 0.0) -> nn.Sequential:
    # no bias before a norm: its gradient is rounding noise, which Adam turns into steps of size lr
    layers = [nn.Conv2d(1, 4, 3, bias=norm is None), *([norm(4)] if norm else []), nn.ReLU(), nn.Flatten()]
    return nn.Sequential(*layers, nn.Dropout(dropout), nn.Linear(64, 2))


def build(kind: str) -> Classifier:
    """The scenario's method, initialised from seed 0."""
    torch.manual_seed(0)
    return {
        "plain": lambda: Classifier(net()),
        "freezing": lambda: FreezingClassifier(net()),
        "batchnorm": lambda: Classifier(net(nn.BatchNorm2d)),
        "chunk_batchnorm": lambda: Classifier(net(ChunkBatchNorm)),
        "dropout": lambda: Classifier(net(dropout=0.5)),
    }[kind]()


def train_config(**overrides: Any) -> TrainConfig:
    """SGD: a gradient off by a factor shows (Adam would hide it)."""
    settings = {"epochs": 4, "batch_size": BATCH, "optimizer": "sgd_momentum", "lr": 0.05, "progress": False}
    return TrainConfig(**{**settings, **overrides})


def fit(kind: str, workdir: Path, fail_after: int | None = None) -> FitResult:
    """The scenario ``kind`` trained in ``workdir`` on 4 epochs, scoring val and (each epoch) test."""
    data = make_loaders(datasets(fail_after), BATCH, seed=5)
    return Trainer(train_config(), device="cpu").fit(
        build(kind), data["train"], data["val"], workdir, seed=5, eval_loaders={"test": data["test"]}
    )


def training_run(builds: list[str]) -> TrainingRun:
    def counted() -> Classifier:
        builds.append("built")
        return build("plain")

    return TrainingRun(
        study="ddp_test", config={"arm": "plain"}, seed=5, profile="test", datasets=datasets(),
        train=train_config(epochs=3), build=counted, label_names=["a", "b"],
    )


def summary(result: FitResult) -> dict[str, Any]:
    history = result.history.drop(columns=TIMING)
    return {"history": history, "last": result.last_state, "best": result.best_state}


def _worker(out: Path) -> None:
    """One rank of the torchrun launch: every scenario, results saved to ``out/rank<r>.pt``."""
    assert distributed.init_from_env() == WORLD
    rank = distributed.rank()
    writes: list[str] = []
    write = trainer.atomic_write_bytes

    def counted_write(path: Any, data: bytes) -> Path:
        writes.append(str(path))
        return write(path, data)

    trainer.atomic_write_bytes = counted_write  # type: ignore[assignment]
    results = {kind: summary(fit(kind, out / kind)) for kind in ("plain", "freezing", "batchnorm", "dropout")}
    try:
        fit("dropout", out / "resumed", fail_after=CRASH_AFTER[rank])
    except RuntimeError as crash:
        results["crash"] = str(crash)
    results["resumed"] = summary(fit("dropout", out / "resumed"))
    builds: list[str] = []
    stored = [execute(RunStore(out / "store"), training_run(builds)) for _ in range(2)]
    results["execute"] = {"builds": len(builds), "paths": [str(r.path) for r in stored],
                          "history": stored[0].history, "predictions": stored[1].predictions}
    results["writes"] = writes
    torch.save(results, out / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """The 2-rank torchrun launch's folder and each rank's results."""
    out = tmp_path_factory.mktemp("ddp")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}",
               __file__, str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ATTNLIB_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def assert_close_fits(got: dict[str, Any], expected: FitResult, rtol: float = 1e-5) -> None:
    want = summary(expected)
    pd.testing.assert_frame_equal(got["history"], want["history"], rtol=rtol, atol=0)
    for name in ("last", "best"):
        for key, value in want[name].items():
            torch.testing.assert_close(got[name][key], value, rtol=rtol, atol=1e-6, msg=f"{name} {key}")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["plain", "freezing"])
def test_two_ranks_give_the_one_process_loss_curve(ddp, tmp_path, kind):
    """Shuffled, uneven 4 + 3 chunks and a last batch of 2; val's last batch of 1 is scored by rank 0 alone;
    ``freezing`` changes the trainable parameters mid-fit (the DDP wrapper is rebuilt)."""
    _, ranks = ddp
    expected = fit(kind, tmp_path)
    assert_close_fits(ranks[0][kind], expected)
    pd.testing.assert_frame_equal(ranks[0][kind]["history"], ranks[1][kind]["history"])  # alike on every rank
    for key, value in ranks[0][kind]["last"].items():
        assert torch.equal(value, ranks[1][kind]["last"][key])


@pytest.mark.slow
def test_batchnorm_on_cpu_normalises_each_ranks_chunk(ddp, tmp_path):
    """No SyncBatchNorm on the CPU: two ranks match one process whose BatchNorm normalises each rank's chunk
    by itself and keeps rank 0's running statistics (rtol 1e-5), not one with whole-batch BatchNorm."""
    _, ranks = ddp
    got = ranks[0]["batchnorm"]
    assert_close_fits(got, fit("chunk_batchnorm", tmp_path / "chunks"))
    whole = fit("batchnorm", tmp_path / "whole").history
    assert not np.allclose(got["history"].train_loss, whole.train_loss, rtol=1e-3)


@pytest.mark.slow
def test_rank_0_writes_checkpoints_and_a_resumed_run_equals_an_uninterrupted_one(ddp, tmp_path):
    """With dropout each rank draws its own numbers (seed + rank); both ranks' RNG states are in the
    checkpoint, so the crashed and resumed run ends with the uninterrupted run's weights exactly."""
    out, ranks = ddp
    assert ranks[0]["crash"] == ranks[1]["crash"] == "simulated crash"
    for key, value in ranks[0]["dropout"]["last"].items():
        assert torch.equal(ranks[0]["resumed"]["last"][key], value), key
    pd.testing.assert_frame_equal(ranks[0]["resumed"]["history"], ranks[0]["dropout"]["history"])
    assert ranks[1]["writes"] == []
    written = {Path(p).relative_to(out) for p in ranks[0]["writes"]}
    fits = {Path(kind, CHECKPOINT) for kind in ("plain", "freezing", "batchnorm", "dropout", "resumed")}
    (executed,) = written - fits  # and the executor's run, in the run store's work folder
    assert fits <= written and executed.parts[0] == "store" and executed.parent.name == "seed5.work"
    payload = torch.load(out / "dropout" / CHECKPOINT, weights_only=True)
    assert payload["identity"]["world_size"] == WORLD
    assert len(payload["rng"]) == WORLD
    assert not torch.equal(payload["rng"][0]["torch"], payload["rng"][1]["torch"])  # seeds 5 and 6
    with pytest.raises(ValueError, match="written by 2 process"):
        fit("dropout", out / "dropout")  # one process may not resume it


@pytest.mark.slow
def test_execute_under_two_ranks_stores_one_run(ddp, tmp_path):
    out, ranks = ddp
    runs = [p for p in (out / "store" / "ddp_test").glob("*/*")]
    assert [p.name for p in runs] == ["seed5"]  # no work folder, lock or second run left
    for rank in ranks:
        assert rank["execute"]["builds"] == 1  # trained once, then loaded from the store
        assert rank["execute"]["paths"] == [str(runs[0])] * 2
    builds: list[str] = []
    alone = execute(RunStore(tmp_path), training_run(builds))
    pd.testing.assert_frame_equal(ranks[1]["execute"]["history"].drop(columns=TIMING),
                                  alone.history.drop(columns=TIMING), rtol=1e-5, atol=0)
    for name, frame in alone.predictions.items():
        pd.testing.assert_frame_equal(ranks[0]["execute"]["predictions"][name], frame, rtol=1e-5, atol=1e-7)


def rank_batches(seed: int, n: int, batch: int, world: int, drop_last: bool = False) -> list[list[list[int]]]:
    """Two epochs of each rank's index batches, every rank with its own loader generator seeded ``seed``."""
    per_rank = []
    for rank in range(world):
        loader = DataLoader(range(n), batch_size=batch, shuffle=True, drop_last=drop_last,
                            generator=torch_generator(seed))
        sharded = shard_loader(loader, rank, world)
        per_rank.append([b.tolist() for _ in range(2) for b in sharded])
    return per_rank


@pytest.mark.parametrize(("n", "batch", "world"), [(23, 7, 2), (24, 7, 3), (20, 5, 5), (9, 4, 1)])
def test_sharded_batches_partition_the_one_process_batches(n, batch, world):
    single = DataLoader(range(n), batch_size=batch, shuffle=True, generator=torch_generator(11))
    expected = [b.tolist() for _ in range(2) for b in single]
    per_rank = rank_batches(11, n, batch, world)
    assert all(len(r) == len(expected) for r in per_rank)
    for step, whole in enumerate(expected):
        chunks = [r[step] for r in per_rank]
        assert sum(chunks, []) == whole  # contiguous chunks, in rank order
        assert max(map(len, chunks)) - min(map(len, chunks)) <= 1
    assert expected[0] != expected[len(expected) // 2]  # shuffled, and anew each epoch


def test_a_batch_smaller_than_the_world_is_refused_for_training():
    loader = DataLoader(range(9), batch_size=4, shuffle=True, generator=torch_generator(0))  # last batch 1
    message = r"batch of 1 samples cannot be split over 2 processes \(9 samples in batches of 4\)"
    with pytest.raises(ValueError, match=message):
        shard_loader(loader, 1, 2)
    with pytest.raises(ValueError, match="batch of 3 samples cannot be split over 4"):
        shard_loader(DataLoader(range(9), batch_size=3), 0, 4)
    assert len(rank_batches(0, 9, 4, 2, drop_last=True)[1]) == 4  # two epochs of two batches


def test_scoring_shards_skip_empty_chunks():
    loader = DataLoader(range(9), batch_size=4)  # batches 4, 4, 1
    shards = [shard_loader(loader, rank, 2, skip_empty=True) for rank in range(2)]
    assert [[b.tolist() for b in s] for s in shards] == [[[0, 1], [4, 5], [8]], [[2, 3], [6, 7]]]
    assert [len(s) for s in shards] == [3, 2]
    unsized = ShardedBatchSampler(iter([[0, 1, 2], [3]]), 1, 2)  # sizes known only when reached
    with pytest.raises(ValueError, match="batch of 1 samples"):
        list(unsized)
    with pytest.raises(ValueError, match="rank must be in"):
        ShardedBatchSampler([[0]], 2, 2)


def test_single_process_helpers_need_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env() == 1 and not distributed.initialized()
    assert (distributed.rank(), distributed.world_size(), distributed.local_rank()) == (0, 1, 0)
    assert distributed.is_main()
    assert distributed.all_gather_object({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast_object("x") == "x"
    assert distributed.all_reduce_sum(torch.tensor(3.0)).item() == 3.0
    assert distributed.gradient_scale(5, torch.device("cpu")).item() == 1.0
    distributed.barrier()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
