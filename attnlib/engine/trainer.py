"""One training loop for every method: best-validation weights, LR schedule, early stopping, resume.

After every epoch the whole state (weights, optimizer, scheduler, history, best weights, RNG
states of python/numpy/torch/CUDA and of the training loader's generator) is written atomically
to ``<workdir>/checkpoint.pt``; ``fit`` on a workdir holding one continues after its last epoch,
and with deterministic training reaches exactly the weights an uninterrupted run reaches (a run
stopped by ``max_hours`` excepted: where it stops depends on the machine).

Under a process group of W > 1 processes (torchrun, :mod:`attnlib.engine.distributed`) every rank runs
``fit`` with the same arguments: ``TrainConfig.batch_size`` and the loaders' batches stay global, each rank
trains on a contiguous chunk of every batch with DistributedDataParallel and scores a chunk of every
validation batch; the history holds the global means, identical on every rank. Rank 0 writes the
checkpoint (with every rank's RNG states) and every rank resumes from it; the world size is part of its
identity. Each rank's python/numpy/torch RNGs are seeded with ``seed + rank``.
"""

from __future__ import annotations

import io
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, MultiStepLR, ReduceLROnPlateau
from torch.utils.data import DataLoader

from attnlib.core.device import default_device
from attnlib.core.io import atomic_write_bytes
from attnlib.core.progress import tqdm
from attnlib.core.seeding import seed_everything
from attnlib.engine import distributed
from attnlib.engine.distributed import DistributedStep
from attnlib.methods.base import Method, StepOutput

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
_CHECKPOINT_FORMAT = 3
OptimizerName = Literal["adam", "adamax", "sgd", "sgd_momentum", "sgd_nesterov"]
Monitor = Literal["loss", "accuracy"]
#: Why a fit ended: all ``epochs`` done, ``early_stop_patience`` reached, or ``max_hours`` spent.
StopReason = Literal["epochs", "early_stop", "max_hours"]
StateDict = dict[str, Tensor]


@dataclass
class TrainConfig:
    """Training hyper-parameters (saved with every run).

    The LR follows ``ReduceLROnPlateau`` on the validation loss (``plateau_factor``,
    ``plateau_patience``) unless ``lr_milestones`` is given: then it is multiplied by
    ``milestone_factor`` after each listed epoch (step schedule of ABN and GALA). With
    ``plateau_patience=None`` and no milestones the LR stays constant (global attention's Adam).
    ``early_stop_patience``: stop after that many epochs without a lower validation loss.
    ``reload_best_on_lr_drop`` (the public GG-CAM code's recipe; plateau schedule only): whenever the
    plateau schedule lowers the LR, the method's weights, the optimizer state (e.g. Adam's moments and
    step counts) and the scheduler state (its bad-epoch count) go back to those of the best-validation
    epoch, and training goes on at the lowered LR, which overwrites the LR stored in the restored
    optimizer state (as the public code does). History column ``reloaded_from``: the epoch restored
    after that epoch, 0 for none.
    ``max_hours``: stop after the epoch during which the training time, summed over resumed
    sessions, reached that many hours (the public GG-CAM code: 23.5).
    ``amp`` (bf16 autocast) and ``channels_last`` apply on CUDA only: on CPUs without native bf16 autocast
    runs many times slower, and channels_last's gain on the CPU depends on the network (README, Speed).
    ``monitor``: what "best" means for the best checkpoint, the plateau schedule and early stopping: the lowest
    validation ``"loss"`` (the method's total, the default) or the highest validation ``"accuracy"`` (the same
    rule for methods whose losses differ, e.g. a benchmark across methods).
    """

    epochs: int
    batch_size: int
    optimizer: OptimizerName = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    plateau_patience: int | None = 10
    plateau_factor: float = 0.1
    lr_milestones: tuple[int, ...] = ()
    milestone_factor: float = 0.1
    early_stop_patience: int | None = None
    reload_best_on_lr_drop: bool = False
    max_hours: float | None = None
    amp: bool = True
    channels_last: bool = True
    deterministic: bool = True
    progress: bool = True
    monitor: Monitor = "loss"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive, got {self.epochs}, {self.batch_size}")
        if self.optimizer not in OptimizerName.__args__:
            raise ValueError(f"optimizer must be one of {OptimizerName.__args__}, got {self.optimizer!r}")
        self.lr_milestones = tuple(self.lr_milestones)
        if self.monitor not in Monitor.__args__:
            raise ValueError(f"monitor must be one of {Monitor.__args__}, got {self.monitor!r}")
        if self.reload_best_on_lr_drop and (self.plateau_patience is None or self.lr_milestones):
            raise ValueError("reload_best_on_lr_drop needs the plateau schedule (no lr_milestones)")
        if self.max_hours is not None and not self.max_hours > 0:
            raise ValueError(f"max_hours must be positive or None, got {self.max_hours}")


@dataclass
class FitResult:
    """Outcome of ``Trainer.fit``; states are CPU copies of the method's ``state_dict``.

    ``stopped_early``: ended by early stopping (``stop_reason == "early_stop"``).
    """

    history: pd.DataFrame
    best_epoch: int
    last_epoch: int
    best_state: StateDict
    last_state: StateDict
    stopped_early: bool
    stop_reason: StopReason


@dataclass
class _Progress:
    """The resumable bookkeeping of a fit (everything but modules, optimizer and RNGs).

    ``best_optimizer`` and ``best_scheduler`` (CPU copies of their state dicts at the best epoch) are
    kept only for ``reload_best_on_lr_drop``; ``hours`` is the training time so far.
    """

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_state: StateDict | None = None
    best_optimizer: dict[str, Any] | None = None
    best_scheduler: dict[str, Any] | None = None
    best_epoch: int = 0
    best_loss: float = math.inf
    bad_epochs: int = 0
    hours: float = 0.0
    stop_reason: StopReason | None = None


class Trainer:
    """Trains any ``Method``: ``fit`` then ``predict``; never branches on the method."""

    def __init__(
        self,
        config: TrainConfig,
        device: str | torch.device | None = None,
        checkpoint_every: int | None = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``checkpoint_every``: write the resumable checkpoint after every that many epochs and after
        the last; None never writes one (short fits whose restart costs less than the writes).
        ``clock``: seconds, for ``max_hours``."""
        if checkpoint_every is not None and checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be a positive number of epochs or None, got {checkpoint_every}")
        self.config = config
        self.device = default_device(device)
        self._cuda = self.device.type == "cuda"
        self._channels_last = self._cuda and config.channels_last
        self.checkpoint_every = checkpoint_every
        self.clock = clock

    def fit(
        self,
        method: Method,
        train_loader: DataLoader,
        val_loader: DataLoader | None,
        workdir: Path,
        seed: int,
        eval_loaders: Mapping[str, DataLoader] | None = None,
    ) -> FitResult:
        """Train ``method``, resuming from ``workdir/checkpoint.pt`` when present.

        Seeds everything with ``seed`` (``seed + rank`` under a process group) first. The method ends with
        its last-epoch weights.
        ``eval_loaders`` (name -> loader, e.g. ``{"test": ...}``) are scored after every epoch like the
        validation set, as history columns ``<name>_loss``, ``<name>_accuracy``, ...; they never select
        weights or steer the LR. Without a validation set (``val_loader=None``) the best weights are
        the last ones, and neither the plateau schedule nor early stopping is allowed.
        """
        cfg = self.config
        eval_loaders = dict(eval_loaders or {})
        clash = sorted(eval_loaders.keys() & {"train", "val"})
        if clash:
            raise ValueError(f"eval_loaders may not be named {clash}: those history columns are taken")
        if val_loader is None:
            needs_val = [name for name, on in (
                ("plateau schedule (set plateau_patience=None or lr_milestones)",
                 cfg.plateau_patience is not None and not cfg.lr_milestones),
                ("early stopping", cfg.early_stop_patience is not None),
            ) if on]
            if needs_val:
                raise ValueError(f"no validation set, but {' and '.join(needs_val)} needs one")
        loaders = {"training": train_loader, "validation": val_loader, **eval_loaders}
        for name, loader in loaders.items():
            if loader is not None and len(loader) == 0:
                raise ValueError(f"the {name} set is empty: nothing to {'fit' if name == 'training' else 'score'}")
        batches, val_batches, eval_batches = train_loader, val_loader, eval_loaders
        world, rank = distributed.world_size(), distributed.rank()
        if world > 1:  # each rank's chunks of the same global batches; the generators stay train_loader's
            batches = distributed.shard_loader(train_loader, rank, world)
            if val_loader is not None:
                val_batches = distributed.shard_loader(val_loader, rank, world, skip_empty=True)
            eval_batches = {
                name: distributed.shard_loader(loader, rank, world, skip_empty=True)
                for name, loader in eval_loaders.items()
            }
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        seed_everything(seed + rank, cfg.deterministic)
        self.place(method)
        if world > 1:
            distributed.sync_batchnorm(method, self.device)
        optimizer = self.optimizer(method)
        scheduler = self._scheduler(optimizer)
        checkpoint = workdir / CHECKPOINT
        progress = _Progress()
        if distributed.broadcast_object(checkpoint.is_file()):
            progress = self._resume(checkpoint, seed, method, optimizer, scheduler, train_loader)
        started, hours_before = self.clock(), progress.hours
        disable = not cfg.progress or not distributed.is_main()
        with (
            tqdm(total=cfg.epochs, initial=progress.epoch, unit="epoch", disable=disable) as bar,
            DistributedStep(method, self.device) as step,
        ):
            while progress.epoch < cfg.epochs and progress.stop_reason is None:
                row = self._epoch(
                    progress.epoch + 1, method, step, optimizer, batches, val_batches, eval_batches
                )
                lrs = _lrs(optimizer)
                if isinstance(scheduler, ReduceLROnPlateau):
                    scheduler.step(self._monitored(row))
                elif scheduler is not None:
                    scheduler.step()
                self._track(progress, row, method, optimizer, scheduler)
                if cfg.reload_best_on_lr_drop:
                    dropped = _lrs(optimizer) != lrs
                    reloaded = self._reload_best(progress, method, optimizer, scheduler) if dropped else 0
                    row["reloaded_from"] = reloaded
                progress.history.append(row)
                progress.hours = distributed.broadcast_object(hours_before + (self.clock() - started) / 3600)
                out_of_time = cfg.max_hours is not None and progress.hours >= cfg.max_hours
                if progress.stop_reason is None and out_of_time:
                    progress.stop_reason = "max_hours"
                    log.info("stop after epoch %d: %.2f hours of training", progress.epoch, progress.hours)
                every = self.checkpoint_every
                done = progress.epoch == cfg.epochs or progress.stop_reason is not None
                if every is not None and (progress.epoch % every == 0 or done):
                    self._save(checkpoint, seed, method, optimizer, scheduler, train_loader, progress)
                shown = {"loss": "train_loss", "val_loss": "val_loss", "val_acc": "val_accuracy"}
                bar.set_postfix({k: f"{row[c]:.4g}" for k, c in shown.items() if c in row}, refresh=False)
                bar.update()
        return _result(progress, method)

    @torch.no_grad()
    def predict(self, method: Method, loader: DataLoader) -> pd.DataFrame:
        """Softmax probabilities per sample: ``id, label, prob_0 .. prob_<k-1>, pred``.

        Under a process group every rank scores the whole ``loader`` (no communication)."""
        self.place(method)
        method.eval()
        ids: list[str] = []
        labels, probs = [], []
        for batch in loader:
            out = self._step(method, self.to_device(batch))
            probs.append(torch.softmax(out.outputs["logits"].float(), dim=1).cpu())
            labels.append(batch["lab"].cpu())
            ids.extend(str(i) for i in batch["id"])
        p = torch.cat(probs).numpy()
        columns: dict[str, Any] = {"id": ids, "label": torch.cat(labels).numpy()}
        columns.update({f"prob_{k}": p[:, k] for k in range(p.shape[1])})
        columns["pred"] = p.argmax(axis=1)
        return pd.DataFrame(columns)

    def _epoch(
        self,
        epoch: int,
        method: Method,
        step: DistributedStep,
        optimizer: Optimizer,
        train_loader: DataLoader,
        val_loader: DataLoader | None,
        eval_loaders: Mapping[str, DataLoader],
    ) -> dict[str, float]:
        """Train one epoch, score the validation and evaluation sets, and return the history row."""
        start = time.perf_counter()
        row: dict[str, float] = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        row.update({f"lr_{g['name']}": g["lr"] for g in optimizer.param_groups if "name" in g})
        method.on_epoch_start(epoch)
        train, wait = self._train_epoch(method, step, optimizer, train_loader)
        row.update({f"train_{k}": v for k, v in train.items()})
        scored = {"val": val_loader} if val_loader is not None else {}
        for name, loader in {**scored, **eval_loaders}.items():
            values, waited = self._validate(method, loader)
            row.update({f"{name}_{k}": v for k, v in values.items()})
            wait += waited
        elapsed = time.perf_counter() - start
        row.update(method.scalars())
        row.update(data_seconds=wait, compute_seconds=elapsed - wait, epoch_seconds=elapsed)
        log.debug("epoch %d: %s", epoch, row)
        return row

    def _train_epoch(
        self, method: Method, step: DistributedStep, optimizer: Optimizer, loader: DataLoader
    ) -> tuple[dict[str, float], float]:
        """One pass of optimisation; returns mean losses and seconds spent waiting for data.

        Under a process group each rank's loss is scaled so that the averaged gradient is the global
        batch's (``distributed.gradient_scale``), and rank 0's buffers go to every rank at the end."""
        method.train()
        means, wait = _Means(), 0.0
        world = distributed.world_size()
        for batch, waited in _timed(loader):
            wait += waited
            batch = self.to_device(batch)
            optimizer.zero_grad(set_to_none=True)
            out = self._step(method, batch, step)
            loss = out.losses["loss"]
            if world > 1:
                loss = loss * distributed.gradient_scale(len(batch["lab"]), self.device)
            loss.backward()
            optimizer.step()
            means.add(out.losses, len(batch["lab"]))
        distributed.broadcast_buffers(method)
        return means.result(), wait

    @torch.no_grad()
    def _validate(self, method: Method, loader: DataLoader) -> tuple[dict[str, float], float]:
        """Mean losses and accuracy on ``loader`` in eval mode; returns them and seconds spent waiting for data."""
        method.eval()
        means, wait = _Means(), 0.0
        for batch, waited in _timed(loader):
            wait += waited
            batch = self.to_device(batch)
            out = self._step(method, batch)
            correct = (out.outputs["logits"].argmax(dim=1) == batch["lab"]).float().mean()
            means.add({**out.losses, "accuracy": correct}, len(batch["lab"]))
        return means.result(), wait

    def _step(
        self, method: Method, batch: dict[str, Any], step: DistributedStep | None = None
    ) -> StepOutput:
        """``method.step`` (or ``step``, its DDP form) under bf16 autocast when enabled on CUDA; checks the
        output contract."""
        with self._autocast():
            out = (step or method.step)(batch)
        if "loss" not in out.losses or "logits" not in out.outputs:
            raise KeyError(f"{type(method).__name__}.step() must return losses['loss'] and outputs['logits']")
        return out

    def _autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._cuda and self.config.amp)

    def place(self, method: Method) -> None:
        """Move ``method`` to the device, its 4-D weights channels_last on CUDA when the configuration says so."""
        method.to(self.device)
        if self._channels_last:
            method.to(memory_format=torch.channels_last)

    def to_device(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Tensors of ``batch`` on the device (4-D float ones channels-last where :meth:`place` makes the weights
        so)."""
        moved = {}
        for key, value in batch.items():
            if isinstance(value, Tensor):
                value = value.to(self.device, non_blocking=True)
                if (
                    self._channels_last
                    and value.dim() == 4
                    and value.is_floating_point()
                ):
                    value = value.contiguous(memory_format=torch.channels_last)
            moved[key] = value
        return moved

    def optimizer(self, method: Method) -> Optimizer:
        """The configured optimiser over ``method``'s parameter groups (kind, rate, momentum, weight decay)."""
        cfg = self.config
        groups = method.param_groups(cfg.lr)
        if cfg.optimizer == "adam":
            return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.optimizer == "adamax":
            return torch.optim.Adamax(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        momentum = 0.0 if cfg.optimizer == "sgd" else cfg.momentum
        return torch.optim.SGD(
            groups,
            lr=cfg.lr,
            momentum=momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.optimizer == "sgd_nesterov",
        )

    def _scheduler(self, optimizer: Optimizer) -> LRScheduler | ReduceLROnPlateau | None:
        cfg = self.config
        if cfg.lr_milestones:
            return MultiStepLR(optimizer, milestones=list(cfg.lr_milestones), gamma=cfg.milestone_factor)
        if cfg.plateau_patience is None:
            return None
        return ReduceLROnPlateau(optimizer, factor=cfg.plateau_factor, patience=cfg.plateau_patience)

    def _monitored(self, row: dict[str, float]) -> float:
        """The validation value that ``monitor`` minimises: the loss, or minus the accuracy."""
        return row["val_loss"] if self.config.monitor == "loss" else -row["val_accuracy"]

    def _track(
        self,
        progress: _Progress,
        row: dict[str, float],
        method: Method,
        optimizer: Optimizer,
        scheduler: LRScheduler | ReduceLROnPlateau | None,
    ) -> None:
        """Record the epoch (after the scheduler's step): best states, early-stopping counter."""
        progress.epoch = int(row["epoch"])
        if "val_loss" not in row:  # no validation set: the last weights stand for the best (``_result``)
            return
        if self._monitored(row) < progress.best_loss:
            progress.best_loss = self._monitored(row)
            progress.best_epoch = progress.epoch
            progress.best_state = _cpu_state(method)
            if self.config.reload_best_on_lr_drop:
                progress.best_optimizer = _cpu_copy(optimizer.state_dict())
                progress.best_scheduler = _cpu_copy(scheduler.state_dict())
            progress.bad_epochs = 0
        else:
            progress.bad_epochs += 1
        patience = self.config.early_stop_patience
        if patience is not None and progress.bad_epochs >= patience:
            progress.stop_reason = "early_stop"
            log.info(
                "early stop after epoch %d: no better validation %s for %d epochs (best epoch %d)",
                progress.epoch,
                self.config.monitor,
                patience,
                progress.best_epoch,
            )

    @staticmethod
    def _reload_best(
        progress: _Progress, method: Method, optimizer: Optimizer, scheduler: LRScheduler | ReduceLROnPlateau
    ) -> int:
        """Restore the best epoch's weights, optimizer and scheduler states at the current (lowered) LRs.

        Returns the restored epoch, 0 when no epoch had a finite validation loss yet (nothing restored).
        """
        if progress.best_state is None:
            return 0
        lrs = _lrs(optimizer)
        method.load_state_dict(progress.best_state)
        # copies: load_state_dict keeps some tensors (Adam's CPU step counts) and lists as they are
        optimizer.load_state_dict(_cpu_copy(progress.best_optimizer))
        scheduler.load_state_dict(_cpu_copy(progress.best_scheduler))
        for group, lr in zip(optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        log.info("epoch %d: LR lowered to %g, epoch %d restored", progress.epoch, lrs[0], progress.best_epoch)
        return progress.best_epoch

    def _identity(self, seed: int) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: the seed, the world size and every setting but
        ``progress``."""
        settings = asdict(self.config)
        settings.pop("progress")
        return {"seed": seed, "world_size": distributed.world_size(), **settings}

    def _save(
        self,
        path: Path,
        seed: int,
        method: Method,
        optimizer: Optimizer,
        scheduler: LRScheduler | ReduceLROnPlateau | None,
        train_loader: DataLoader,
        progress: _Progress,
    ) -> None:
        """Rank 0 writes the checkpoint with every rank's RNG states (by rank); the others wait for it."""
        rng = distributed.all_gather_object(_rng_state(train_loader))
        if distributed.is_main():
            payload = {
                "format": _CHECKPOINT_FORMAT,
                "identity": self._identity(seed),
                "method": method.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "progress": dict(vars(progress)),
                "rng": rng,
            }
            buffer = io.BytesIO()
            torch.save(payload, buffer)
            atomic_write_bytes(path, buffer.getvalue())
        distributed.barrier()

    def _resume(
        self,
        path: Path,
        seed: int,
        method: Method,
        optimizer: Optimizer,
        scheduler: LRScheduler | ReduceLROnPlateau | None,
        train_loader: DataLoader,
    ) -> _Progress:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise RuntimeError(
                f"{path}: unreadable training checkpoint ({exc}); delete it to start over"
            ) from exc
        if payload.get("format") != _CHECKPOINT_FORMAT:
            raise RuntimeError(
                f"{path}: checkpoint format {payload.get('format')!r}, expected {_CHECKPOINT_FORMAT}"
            )
        expected = self._identity(seed)
        written_by = payload["identity"]["world_size"]
        if written_by != expected["world_size"]:
            raise ValueError(
                f"{path}: checkpoint was written by {written_by} process(es), this run has "
                f"{expected['world_size']}; resume with as many processes or delete the checkpoint"
            )
        differ = sorted(
            k
            for k in expected.keys() | payload["identity"].keys()
            if expected.get(k) != payload["identity"].get(k)
        )
        if differ:
            raise ValueError(
                f"{path}: checkpoint was written by another run (differs in {differ}); "
                "use another workdir or delete the checkpoint"
            )
        method.load_state_dict(payload["method"])
        optimizer.load_state_dict(payload["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(payload["scheduler"])
        _set_rng_state(payload["rng"][distributed.rank()], train_loader, path)
        progress = _Progress(**payload["progress"])
        log.info("resuming from %s after epoch %d", path, progress.epoch)
        return progress


class _Means:
    """Sample-weighted running means of named scalar tensors (one device sync at the end); under a process
    group the sums and counts of every rank make one mean, the same on every rank."""

    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}

    def add(self, values: Mapping[str, Tensor], n: int) -> None:
        for name, value in values.items():
            weighted = value.detach().float() * n
            self._sums[name] = self._sums[name] + weighted if name in self._sums else weighted
            self._counts[name] = self._counts.get(name, 0) + n

    def result(self) -> dict[str, float]:
        if distributed.world_size() == 1:
            return {name: total.item() / self._counts[name] for name, total in self._sums.items()}
        local = {name: (total.item(), self._counts[name]) for name, total in self._sums.items()}
        ranks = distributed.all_gather_object(local)  # a rank may have scored nothing: no names
        names = dict.fromkeys(name for part in ranks for name in part)
        return {
            name: sum(p[name][0] for p in ranks if name in p) / sum(p[name][1] for p in ranks if name in p)
            for name in names
        }


def _timed(loader: DataLoader) -> Iterator[tuple[Any, float]]:
    """Batches of ``loader`` with the seconds spent waiting for each (worker start-up included)."""
    start = time.perf_counter()
    iterator = iter(loader)
    for batch in iterator:
        yield batch, time.perf_counter() - start
        start = time.perf_counter()


def _cpu_state(method: Method) -> StateDict:
    """A detached CPU copy of ``method.state_dict()``."""
    return {k: v.detach().to("cpu", copy=True) for k, v in method.state_dict().items()}


def _cpu_copy(value: Any) -> Any:
    """A copy of a nested state (dicts, lists, tuples) with every tensor detached and copied to the CPU."""
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cpu_copy(v) for v in value)
    return value


def _lrs(optimizer: Optimizer) -> list[float]:
    return [group["lr"] for group in optimizer.param_groups]


def _result(progress: _Progress, method: Method) -> FitResult:
    last = _cpu_state(method)
    best_state, best_epoch = progress.best_state, progress.best_epoch
    if best_state is None:
        if any("val_loss" in row for row in progress.history):
            log.warning("no epoch had a finite validation loss; the last weights stand in for the best")
        best_state, best_epoch = last, progress.epoch
    return FitResult(
        history=pd.DataFrame(progress.history),
        best_epoch=best_epoch,
        last_epoch=progress.epoch,
        best_state=best_state,
        last_state=last,
        stopped_early=progress.stop_reason == "early_stop",
        stop_reason=progress.stop_reason or "epochs",
    )


def _generators(loader: DataLoader) -> list[torch.Generator]:
    """The distinct generators that drive ``loader``'s shuffling and worker seeds."""
    found: list[torch.Generator] = []
    for generator in (loader.generator, getattr(loader.sampler, "generator", None)):
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


def _rng_state(loader: DataLoader) -> dict[str, Any]:
    """Every random state training depends on, in types ``torch.load(weights_only=True)`` accepts."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, key.tolist(), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": [g.get_state() for g in _generators(loader)],
    }


def _set_rng_state(state: Mapping[str, Any], loader: DataLoader, path: Path) -> None:
    generators = _generators(loader)
    if len(generators) != len(state["loader"]):
        raise ValueError(
            f"{path}: checkpoint holds {len(state['loader'])} loader generator state(s) but the training "
            f"loader has {len(generators)}; build the loader as for the interrupted run"
        )
    random.setstate(state["python"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for generator, saved in zip(generators, state["loader"], strict=True):
        generator.set_state(saved)
