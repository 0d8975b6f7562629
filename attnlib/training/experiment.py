"""Glue between datasets, the trainer, the metrics and the run store."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from attnlib.metrics import CamRule, cam_in_mask, classification_metrics
from attnlib.seeding import seed_everything, torch_generator, worker_init_fn
from attnlib.training.methods import Method
from attnlib.training.runstore import RunResult, RunSpec, RunStore
from attnlib.training.trainer import TrainConfig, Trainer

SPLITS = ("train", "val", "test")
#: Scores a method on a loader (the test set) on a device: extra test metrics such as CAM localisation.
Evaluator = Callable[[Method, DataLoader, torch.device], dict[str, float]]


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
    evaluators: Mapping[str, Evaluator] | None = None,
) -> dict[str, Any]:
    """Fit on ``train``/``val``, then score ``test`` with the best-validation and the last weights.

    Returns what ``RunStore.run`` stores: ``history``, ``metrics`` (``best``/``last`` as from
    ``classification_metrics``, plus the values of every evaluator run on the test loader with those
    weights, plus ``best_epoch``, ``last_epoch``, ``stopped_early``, ``stop_reason``), ``predictions``
    (``best``/``last`` frames of ``Trainer.predict``) and ``states`` (the ``best`` weights only: the figures read them, nothing
    reads the last ones, which cost as much disk again). An evaluator's key that is already a metric is an
    error. The method ends with its last-epoch weights.
    """
    missing = set(SPLITS) - loaders.keys()
    if missing:
        raise KeyError(f"loaders lack split(s) {sorted(missing)}")
    fit = trainer.fit(method, loaders["train"], loaders["val"], workdir, seed)
    states = {"best": fit.best_state, "last": fit.last_state}
    predictions, metrics = {}, {}
    for name, state in states.items():
        method.load_state_dict(state)
        predictions[name], metrics[name] = score(method, loaders["test"], trainer, label_names)
        for evaluator_name, evaluator in (evaluators or {}).items():
            values = evaluator(method, loaders["test"], trainer.device)
            clash = sorted(values.keys() & metrics[name].keys())
            if clash:
                raise ValueError(f"evaluator {evaluator_name!r} returns {clash}, which are already metrics")
            metrics[name].update({k: float(v) for k, v in values.items()})
    metrics.update(
        best_epoch=fit.best_epoch,
        last_epoch=fit.last_epoch,
        stopped_early=fit.stopped_early,
        stop_reason=fit.stop_reason,
    )
    return {"history": fit.history, "metrics": metrics, "predictions": predictions, "states": {"best": states["best"]}}


def score(
    method: Method, loader: DataLoader, trainer: Trainer, label_names: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``Trainer.predict`` on ``loader`` and the ``classification_metrics`` of those predictions."""
    frame = trainer.predict(method, loader)
    probs = frame[[f"prob_{k}" for k in range(len(label_names))]].to_numpy()
    return frame, classification_metrics(frame["label"].to_numpy(), probs, label_names)


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
    evaluators: Mapping[str, Evaluator] | None = None,
) -> list[RunResult]:
    """Train and test one arm of a study once per seed, through the run store.

    A seed whose run is already stored is loaded, not retrained; an interrupted one resumes from
    its checkpoint. The run's identity is the arm, ``config``, the training configuration, the
    profile and the data fingerprint, so any change to those makes a new run. ``evaluators`` are
    passed to ``train_and_evaluate``; their names join the identity (as ``"evaluators"``) only when
    there are any, so runs without evaluators keep their stored results.
    """
    names = list(label_names or datasets["train"].label_names)
    train = {k: v for k, v in asdict(train_config).items() if k != "progress"}
    run_config = {"arm": arm, **(config or {}), "train": train}
    if evaluators:
        run_config["evaluators"] = sorted(evaluators)
    fingerprint = data_fingerprint(datasets)
    results = []
    for seed in seeds:
        spec = RunSpec(study, run_config, int(seed), profile, fingerprint)

        def fn(workdir: Path, seed: int = int(seed)) -> dict[str, Any]:
            seed_everything(seed, deterministic=train_config.deterministic)
            method = build_method()
            loaders = make_loaders(datasets, train_config.batch_size, seed, num_workers)
            trainer = Trainer(train_config, device=device)
            return train_and_evaluate(method, loaders, trainer, workdir, seed, names, evaluators)

        results.append(store.run(spec, fn))
    return results


#: Eq. 12's key prefix per ``cam_in_mask`` rule: the paper's peak cell, the public code's 3 x 3 neighbourhood.
CAM_RULE_KEYS: dict[CamRule, str] = {"peak": "interpretability", "neighbourhood": "interpretability_public"}


@torch.no_grad()
def cam_localisation_evaluator(method: Method, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Eq. 12 over a loader: the share of scored images whose CAM peak lies inside the organ.

    Runs ``method`` in eval mode on ``device`` (full precision, no autocast) and scores
    ``method.step(batch).outputs["omega"]`` against ``batch["masks"]`` with ``cam_in_mask``, once per rule of
    :data:`CAM_RULE_KEYS`. Returns per rule ``<prefix>`` (mean over all scored images, i.e. cardiomegaly and
    pneumonia) and ``<prefix>/cardiomegaly``, ``<prefix>/pneumonia`` (the paper reports per class): the paper's
    rule under ``interpretability``, the public code's under ``interpretability_public``; NaN where no image
    was scored.
    """
    method.to(device)
    method.eval()
    scores: dict[str, list[Tensor]] = {rule: [] for rule in CAM_RULE_KEYS}
    labels = []
    for batch in loader:
        batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        out = method.step(batch)
        if "omega" not in out.outputs or "masks" not in batch:
            raise KeyError(
                f"CAM localisation needs outputs['omega'] from {type(method).__name__}.step() and "
                "batch['masks'] from the dataset (EGDCXRSettings(masks=True))"
            )
        for rule, rule_scores in scores.items():
            rule_scores.append(cam_in_mask(out.outputs["omega"], batch["lab"], batch["masks"], rule=rule).cpu())
        labels.append(batch["lab"].cpu())
    label = torch.cat([torch.zeros(0, dtype=torch.long), *labels])
    result: dict[str, float] = {}
    for rule, prefix in CAM_RULE_KEYS.items():
        score = torch.cat([torch.zeros(0), *scores[rule]])
        result[prefix] = _mean(score[label != 0])
        for name, cls in (("cardiomegaly", 1), ("pneumonia", 2)):
            result[f"{prefix}/{name}"] = _mean(score[label == cls])
    return result


def _mean(values: Tensor) -> float:
    """Mean of a 1-D tensor; NaN when it is empty."""
    return values.mean().item() if len(values) else math.nan
