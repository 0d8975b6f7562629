"""Glue between datasets, the trainer, the metrics and the run store."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from attnlib.metrics import classification_metrics
from attnlib.seeding import seed_everything, torch_generator, worker_init_fn
from attnlib.training.methods import Method
from attnlib.training.runstore import RunResult, RunSpec, RunStore
from attnlib.training.trainer import TrainConfig, Trainer

SPLITS = ("train", "val", "test")


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


def train_and_evaluate(
    method: Method,
    loaders: Mapping[str, DataLoader],
    trainer: Trainer,
    workdir: Path,
    seed: int,
    label_names: Sequence[str],
) -> dict[str, Any]:
    """Fit on ``train``/``val``, then score ``test`` with the best-validation and the last weights.

    Returns what ``RunStore.run`` stores: ``history``, ``metrics`` (``best``/``last`` as from
    ``classification_metrics`` plus ``best_epoch``, ``last_epoch``, ``stopped_early``),
    ``predictions`` (``best``/``last`` frames of ``Trainer.predict``) and ``states``.
    The method ends with its last-epoch weights.
    """
    missing = set(SPLITS) - loaders.keys()
    if missing:
        raise KeyError(f"loaders lack split(s) {sorted(missing)}")
    fit = trainer.fit(method, loaders["train"], loaders["val"], workdir, seed)
    states = {"best": fit.best_state, "last": fit.last_state}
    predictions, metrics = {}, {}
    for name, state in states.items():
        method.load_state_dict(state)
        frame = trainer.predict(method, loaders["test"])
        probs = frame[[f"prob_{k}" for k in range(len(label_names))]].to_numpy()
        predictions[name] = frame
        metrics[name] = classification_metrics(frame["label"].to_numpy(), probs, label_names)
    metrics.update(best_epoch=fit.best_epoch, last_epoch=fit.last_epoch, stopped_early=fit.stopped_early)
    return {"history": fit.history, "metrics": metrics, "predictions": predictions, "states": states}


def data_fingerprint(datasets: Mapping[str, Dataset]) -> str:
    """One hash over the splits' own ``fingerprint`` attributes (every attnlib dataset has one)."""
    parts = []
    for name in sorted(datasets):
        fingerprint = getattr(datasets[name], "fingerprint", None)
        if fingerprint is None:
            raise TypeError(f"dataset of split {name!r} has no fingerprint attribute")
        parts.append(f"{name}={fingerprint}")
    return hashlib.sha256(";".join(parts).encode()).hexdigest()[:12]


def run_seeds(
    store: RunStore,
    study: str,
    arm: str,
    build_method: Callable[[], Method],
    datasets: Mapping[str, Dataset],
    train_config: TrainConfig,
    seeds: Sequence[int],
    profile: str,
    *,
    config: Mapping[str, Any] | None = None,
    label_names: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    num_workers: int = 0,
) -> list[RunResult]:
    """Train and test one arm of a study once per seed, through the run store.

    A seed whose run is already stored is loaded, not retrained; an interrupted one resumes from
    its checkpoint. The run's identity is the arm, ``config``, the training configuration, the
    profile and the data fingerprint, so any change to those makes a new run.
    """
    names = list(label_names or datasets["train"].label_names)
    train = {k: v for k, v in asdict(train_config).items() if k != "progress"}
    run_config = {"arm": arm, **(config or {}), "train": train}
    fingerprint = data_fingerprint(datasets)
    results = []
    for seed in seeds:
        spec = RunSpec(study, run_config, int(seed), profile, fingerprint)

        def fn(workdir: Path, seed: int = int(seed)) -> dict[str, Any]:
            seed_everything(seed, deterministic=train_config.deterministic)
            method = build_method()
            loaders = make_loaders(datasets, train_config.batch_size, seed, num_workers)
            trainer = Trainer(train_config, device=device)
            return train_and_evaluate(method, loaders, trainer, workdir, seed, names)

        results.append(store.run(spec, fn))
    return results
