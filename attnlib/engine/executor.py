"""The one run executor: a :class:`TrainingRun` (what to train, on which splits, how to score it) becomes a
stored :class:`~attnlib.engine.runstore.RunResult`, the same way for every study.

Every training run of every paper goes through :func:`execute`: seed, build the method, prepare it (e.g. load
the weights it is fine-tuned from), make the loaders, fit, score the test split with each checkpoint, add the
study's extra outputs, store (with the seconds each phase took, ``timing.json``). A run already stored is
loaded, an interrupted one resumes from its checkpoint.
Under a process group (torchrun, :mod:`attnlib.engine.distributed`) every rank calls :func:`execute` alike;
rank 0 alone stores the run.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from attnlib.core.seeding import seed_everything, torch_generator, worker_init_fn
from attnlib.data.contract import ContractDataset
from attnlib.engine import distributed
from attnlib.engine.runstore import RunResult, RunSpec, RunStore
from attnlib.engine.trainer import FitResult, TrainConfig, Trainer
from attnlib.evaluation.metrics import classification_metrics
from attnlib.methods.base import Method

#: Scores a method on a loader (the test set) on a device: extra test metrics such as CAM localisation.
Evaluator = Callable[[Method, DataLoader, torch.device], dict[str, float]]
CHECKPOINTS = ("best", "last")


@dataclass(frozen=True)
class Trained:
    """What a run's ``after`` hook sees once the fit and the test scoring are done (last weights loaded)."""

    method: Method
    trainer: Trainer
    fit: FitResult
    loaders: Mapping[str, DataLoader]
    prepared: Any


@dataclass
class TrainingRun:
    """One training run of a study, as the run store keys it and as :func:`execute` trains it.

    ``config`` is the run's identity besides the seed, profile, data and code (arm, dataset, ...); the
    training configuration joins it as ``"train"`` and the evaluators' names as ``"evaluators"`` (only when
    there are any). ``datasets``: ``"train"``, optionally ``"val"`` (validation loss: best checkpoint, plateau
    schedule, early stop) and ``"test"`` (scored with the ``best`` and ``last`` weights when there is a
    validation split, with the ``last`` ones otherwise; with ``test_every_epoch`` also after every epoch).
    ``prepare(method)`` runs on the fresh method before training (its value reaches ``after``); ``after``
    returns extra ``metrics`` / ``predictions`` / ``states`` to store. ``keep``: the weights stored (the
    figures' need: ``("best",)``, ``("last",)`` or none); ``scored``: the checkpoints the test split is
    scored with when not the default (:attr:`checkpoints`).
    """

    study: str
    config: Mapping[str, Any]
    seed: int
    profile: str
    datasets: Mapping[str, Dataset]
    train: TrainConfig
    build: Callable[[], Method]
    label_names: Sequence[str]
    checkpoint_every: int | None = 1
    test_every_epoch: bool = False
    evaluators: Mapping[str, Evaluator] = field(default_factory=dict)
    keep: Sequence[str] = ("best",)
    scored: Sequence[str] | None = None
    prepare: Callable[[Method], Any] | None = None
    after: Callable[[Trained], Mapping[str, Mapping[str, Any]]] | None = None
    num_workers: int = 0

    def __post_init__(self) -> None:
        if "train" not in self.datasets or set(self.datasets) - {"train", "val", "test"}:
            raise ValueError(f"a run's splits are train [, val, test], got {sorted(self.datasets)}")
        for name, chosen in (("keep", self.keep), ("scored", self.scored or ())):
            unknown = set(chosen) - set(CHECKPOINTS)
            if unknown:
                raise ValueError(f"{name} names weights of {CHECKPOINTS}, got {sorted(unknown)}")

    @property
    def checkpoints(self) -> tuple[str, ...]:
        """The weights the test split is scored with: ``scored``, else best and last with a validation split
        and last without."""
        if self.scored is not None:
            return tuple(self.scored)
        return CHECKPOINTS if "val" in self.datasets else ("last",)

    def spec(self) -> RunSpec:
        """The run's identity in the store."""
        config = {**self.config, "train": train_identity(self.train)}
        if self.evaluators:
            config["evaluators"] = sorted(self.evaluators)
        return RunSpec(self.study, config, int(self.seed), self.profile, data_fingerprint(self.datasets))


def train_identity(config: TrainConfig) -> dict[str, Any]:
    """A training configuration as it joins a run's identity: every field but the progress-bar switch."""
    return {k: v for k, v in asdict(config).items() if k != "progress"}


def execute(store: RunStore, run: TrainingRun, device: str | torch.device | None = None) -> RunResult:
    """Train (or load) ``run`` through ``store`` (module docstring); returns the stored result.

    Stores ``history``, ``metrics`` (per scored checkpoint the ``classification_metrics`` plus every
    evaluator's values; ``last_epoch``; ``best_epoch``, ``stopped_early`` and ``stop_reason`` with a
    validation split), ``predictions`` (per scored checkpoint, ``Trainer.predict``'s frame) and the ``keep``
    weights. An evaluator key that is already a metric is an error.

    Under a process group of W > 1 ranks rank 0 runs ``store.run``; when it trains, every other rank trains
    with it in the same work folder (the trainer splits the batches) and runs the same scoring and hooks
    without storing, then loads what rank 0 stored. A stored run is loaded by every rank without training.
    """

    def fn(workdir: Path) -> dict[str, Any]:
        clock = _Phases()
        seed_everything(run.seed, deterministic=run.train.deterministic)
        with clock("prepare"):
            method = run.build()
            prepared = run.prepare(method) if run.prepare is not None else None
            loaders = make_loaders(run.datasets, run.train.batch_size, run.seed, run.num_workers)
        trainer = Trainer(run.train, device=device, checkpoint_every=run.checkpoint_every)
        evaluate = {"test": loaders["test"]} if run.test_every_epoch and "test" in loaders else None
        with clock("fit"):
            fit = trainer.fit(method, loaders["train"], loaders.get("val"), workdir, run.seed, eval_loaders=evaluate)
        weights = {"best": fit.best_state, "last": fit.last_state}
        metrics: dict[str, Any] = {}
        predictions: dict[str, pd.DataFrame] = {}
        if "test" in loaders:
            for name in run.checkpoints:
                method.load_state_dict(weights[name])
                with clock("score"):
                    predictions[name], metrics[name] = score(method, loaders["test"], trainer, run.label_names)
                for evaluator_name, evaluator in run.evaluators.items():
                    with clock("evaluators"):
                        values = evaluator(method, loaders["test"], trainer.device)
                    clash = sorted(values.keys() & metrics[name].keys())
                    if clash:
                        raise ValueError(f"evaluator {evaluator_name!r} returns {clash}, which are already metrics")
                    metrics[name].update({k: float(v) for k, v in values.items()})
        metrics["last_epoch"] = fit.last_epoch
        if "val" in loaders:
            metrics.update(best_epoch=fit.best_epoch, stopped_early=fit.stopped_early, stop_reason=fit.stop_reason)
        output: dict[str, Any] = {
            "history": fit.history, "metrics": metrics, "predictions": predictions,
            "states": {name: weights[name] for name in run.keep},
        }
        if run.after is not None:
            with clock("after"):
                extra = run.after(Trained(method, trainer, fit, loaders, prepared))
            unknown = set(extra) - {"metrics", "predictions", "states"}
            if unknown:
                raise ValueError(f"a run's after hook returns metrics, predictions or states, not {sorted(unknown)}")
            for part, values in extra.items():
                output[part].update(values)
        output["timing"] = clock.seconds
        return output

    if distributed.world_size() == 1:
        return store.run(run.spec(), fn)
    return _execute_distributed(store, run.spec(), fn)


def _execute_distributed(store: RunStore, spec: RunSpec, fn: Callable[[Path], dict[str, Any]]) -> RunResult:
    """Rank 0 sends the work folder when ``store.run`` calls ``fn`` and None once it has returned; the other
    ranks run ``fn`` in that folder, then load the stored run."""
    if distributed.is_main():

        def announced(workdir: Path) -> dict[str, Any]:
            distributed.broadcast_object(str(workdir))
            return fn(workdir)

        result = store.run(spec, announced)
        distributed.broadcast_object(None)
        return result
    workdir = distributed.broadcast_object(None)
    if workdir is not None:
        fn(Path(workdir))
        distributed.broadcast_object(None)
    stored = store.load(spec)
    if stored is None:
        raise RuntimeError(
            f"rank {distributed.rank()}: run {spec.study}/{spec.key}/seed{spec.seed} is not in {store.root} "
            "after rank 0 stored it (do all processes share that folder?)"
        )
    return stored


class _Phases:
    """Seconds spent in each named phase of a run (summed over repeats), for the run's ``timing.json``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


def make_loaders(
    datasets: Mapping[str, Dataset], batch_size: int, seed: int, num_workers: int = 0
) -> dict[str, DataLoader]:
    """One DataLoader per split: ``"train"`` shuffled by ``torch_generator(seed)``, the others in order.

    All use ``worker_init_fn``; memory is pinned when CUDA is available.
    """
    loaders = {}
    for name, dataset in datasets.items():
        train = name == "train"
        loaders[name] = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            generator=torch_generator(seed) if train else None,
            num_workers=num_workers,
            worker_init_fn=worker_init_fn,
            pin_memory=torch.cuda.is_available(),
        )
    return loaders


def score(
    method: Method, loader: DataLoader, trainer: Trainer, label_names: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``Trainer.predict`` on ``loader`` and the ``classification_metrics`` of those predictions."""
    frame = trainer.predict(method, loader)
    probs = frame[[f"prob_{k}" for k in range(len(label_names))]].to_numpy()
    return frame, classification_metrics(frame["label"].to_numpy(), probs, label_names)


def data_fingerprint(datasets: Mapping[str, Dataset]) -> str:
    """One hash over the splits' ``fingerprint`` (the dataset contract,
    :class:`~attnlib.data.contract.ContractDataset`)."""
    parts = []
    for name in sorted(datasets):
        if not isinstance(datasets[name], ContractDataset):
            raise TypeError(
                f"dataset of split {name!r} ({type(datasets[name]).__name__}) does not follow the dataset contract "
                "(attnlib.data.contract): it needs label_names and a fingerprint"
            )
        parts.append(f"{name}={datasets[name].fingerprint}")
    return hashlib.sha256(";".join(parts).encode()).hexdigest()[:12]
