"""Glue between datasets, the trainer, the metrics and the run store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from attnlib.metrics import classification_metrics
from attnlib.seeding import torch_generator, worker_init_fn
from attnlib.training.methods import Method
from attnlib.training.trainer import Trainer

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
