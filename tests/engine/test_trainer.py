"""Trainer, methods and the run executor on tiny in-memory datasets (dataset contract, CPU)."""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from attnlib.engine.executor import TrainingRun, data_fingerprint, execute, make_loaders, train_identity
from attnlib.engine.runstore import RunSpec, RunStore
from attnlib.engine.trainer import CHECKPOINT, TrainConfig, Trainer
from attnlib.evaluation.localisation import cam_localisation_evaluator
from attnlib.methods.base import Classifier, Method, StepOutput

TIMING = ["data_seconds", "compute_seconds", "epoch_seconds"]


class Blobs(Dataset):
    """``n`` 1x6x6 images whose mean brightness encodes the class (separable), plus noise."""

    def __init__(self, n: int, seed: int, num_classes: int = 2, fail_after: int | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = np.arange(n) % num_classes
        self.label_names = [f"class{c}" for c in range(num_classes)]
        self.images = torch.randn(n, 1, 6, 6, generator=g) * 0.5 + torch.as_tensor(self.labels).view(
            -1, 1, 1, 1
        )
        self.metadata = pd.DataFrame({"id": [f"s{i:03d}" for i in range(n)], "label": self.labels})
        self.fail_after = fail_after
        self.reads = 0
        self.fingerprint = f"blobs-{n}-{seed}-{num_classes}"

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise RuntimeError("simulated crash")
        return {"idx": i, "id": self.metadata.id[i], "img": self.images[i], "lab": int(self.labels[i])}


def tiny_net(num_classes: int = 2, dropout: float = 0.0) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * 4 * 4, num_classes)
    )


def config(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 4, "lr": 0.01, "progress": False, **overrides})


def loaders(seed: int = 0, n: int = 24, **train_kwargs) -> dict[str, DataLoader]:
    datasets = {
        "train": Blobs(n, seed=1, **train_kwargs),
        "val": Blobs(10, seed=2),
        "test": Blobs(12, seed=3),
    }
    return make_loaders(datasets, batch_size=4, seed=seed)


def _train_val() -> tuple[DataLoader, DataLoader]:
    data = loaders()
    return data["train"], data["val"]


def classifier(seed: int = 0, dropout: float = 0.0) -> Classifier:
    torch.manual_seed(seed)
    return Classifier(tiny_net(dropout=dropout))


def test_fit_history_and_learning(tmp_path):
    fit = Trainer(config(epochs=6), device="cpu").fit(classifier(), *_train_val(), tmp_path, seed=0)
    h = fit.history
    assert list(h.columns) == ["epoch", "lr", "train_loss", "val_loss", "val_accuracy", *TIMING]
    assert h.epoch.tolist() == [1, 2, 3, 4, 5, 6]
    assert (h[TIMING] >= 0).all().all()
    assert np.allclose(h.epoch_seconds, h.data_seconds + h.compute_seconds)
    assert h.train_loss.iloc[-1] < h.train_loss.iloc[0]
    assert h.val_accuracy.iloc[-1] >= 0.9
    assert fit.last_epoch == 6 and not fit.stopped_early and fit.stop_reason == "epochs"
    assert fit.best_epoch == int(h.epoch[h.val_loss.idxmin()])


def _mean_ce_and_accuracy(model: nn.Module, dataset: Dataset) -> tuple[float, float]:
    batch = next(iter(DataLoader(dataset, batch_size=len(dataset))))
    with torch.no_grad():
        logits = model(batch["img"])
    return F.cross_entropy(logits, batch["lab"]).item(), (
        logits.argmax(1) == batch["lab"]
    ).float().mean().item()


def test_epoch_means_are_sample_weighted(tmp_path):
    """With lr = 0 nothing changes, so the logged means must equal the loss over the whole set.

    10 training samples in batches of 4 (last batch 2): a plain mean over batches would differ.
    """
    method = classifier()
    data = loaders(n=10)
    fit = Trainer(config(epochs=1, lr=0.0), device="cpu").fit(
        method, data["train"], data["val"], tmp_path, seed=0
    )
    row = fit.history.iloc[0]
    train_ce, _ = _mean_ce_and_accuracy(method.model, data["train"].dataset)
    val_ce, val_acc = _mean_ce_and_accuracy(method.model, data["val"].dataset)
    assert row.train_loss == pytest.approx(train_ce, rel=1e-5)
    assert row.val_loss == pytest.approx(val_ce, rel=1e-5)
    assert row.val_accuracy == pytest.approx(val_acc)


def test_best_state_is_the_lowest_validation_loss(tmp_path):
    data = loaders()
    fit = Trainer(config(epochs=5, lr=0.05), device="cpu").fit(
        classifier(), data["train"], data["val"], tmp_path, 0
    )
    method = classifier()
    method.load_state_dict(fit.best_state)
    best_val, _ = _mean_ce_and_accuracy(method.model, data["val"].dataset)
    assert best_val == pytest.approx(fit.history.val_loss.min(), rel=1e-5)
    method.load_state_dict(fit.last_state)
    last_val, _ = _mean_ce_and_accuracy(method.model, data["val"].dataset)
    assert last_val == pytest.approx(fit.history.val_loss.iloc[-1], rel=1e-5)


def test_monitor_accuracy_keeps_the_first_epoch_of_highest_validation_accuracy(tmp_path):
    data = loaders()
    fit = Trainer(config(epochs=6, lr=0.05, monitor="accuracy"), device="cpu").fit(
        classifier(), data["train"], data["val"], tmp_path, 0
    )
    accuracy = fit.history.val_accuracy
    assert fit.best_epoch == int(fit.history.epoch[accuracy.idxmax()])  # idxmax: the first of ties
    method = classifier()
    method.load_state_dict(fit.best_state)
    _, best_acc = _mean_ce_and_accuracy(method.model, data["val"].dataset)
    assert best_acc == pytest.approx(accuracy.max())
    with pytest.raises(ValueError, match="monitor"):
        config(monitor="val_loss")


class FlatValidation(Classifier):
    """Validation loss is a constant: the plateau scheduler and early stopping see no progress."""

    def step(self, batch) -> StepOutput:
        out = super().step(batch)
        if not self.training:
            out.losses["loss"] = torch.tensor(1.0)
        return out


def test_plateau_schedule_by_hand(tmp_path):
    # patience 1: epoch 1 is the best, epochs 2-3 are bad -> reduce after epoch 3, again after 5
    cfg = config(epochs=6, lr=0.1, plateau_patience=1, plateau_factor=0.5)
    data = loaders()
    fit = Trainer(cfg, device="cpu").fit(FlatValidation(tiny_net()), data["train"], data["val"], tmp_path, 0)
    assert fit.history.lr.tolist() == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025])


def test_early_stopping(tmp_path):
    data = loaders()
    cfg = config(epochs=10, early_stop_patience=2)
    fit = Trainer(cfg, device="cpu").fit(FlatValidation(tiny_net()), data["train"], data["val"], tmp_path, 0)
    assert fit.stopped_early and fit.stop_reason == "early_stop"
    assert fit.last_epoch == 3 and fit.best_epoch == 1
    assert len(fit.history) == 3


def test_lr_milestones(tmp_path):
    cfg = config(epochs=5, lr=1.0, optimizer="sgd", lr_milestones=(2, 4), milestone_factor=0.1)
    data = loaders()
    fit = Trainer(cfg, device="cpu").fit(classifier(), data["train"], data["val"], tmp_path, 0)
    assert fit.history.lr.tolist() == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])


@pytest.mark.parametrize("optimizer", ["adam", "adamax", "sgd", "sgd_momentum", "sgd_nesterov"])
def test_every_optimizer_trains(tmp_path, optimizer):
    method = classifier()
    before = {k: v.clone() for k, v in method.state_dict().items()}
    data = loaders()
    Trainer(config(epochs=1, optimizer=optimizer), device="cpu").fit(
        method, data["train"], data["val"], tmp_path, 0
    )
    assert any(not torch.equal(before[k], v) for k, v in method.state_dict().items())


class ScaledClassifier(Classifier):
    """Loss ``s * CE`` with a trainable scalar ``s`` in its own, frozen (lr 0) parameter group."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.s = nn.Parameter(torch.tensor(1.0))
        self.epochs_started: list[int] = []

    def step(self, batch) -> StepOutput:
        out = super().step(batch)
        out.losses = {"loss": self.s * out.losses["loss"], "ce": out.losses["loss"]}
        return out

    def param_groups(self, lr: float) -> list[dict]:
        return [
            {"params": list(self.model.parameters()), "lr": lr},
            {"params": [self.s], "lr": 0.0, "name": "scalars"},
        ]

    def scalars(self) -> dict[str, float]:
        return {"s": self.s.item()}

    def on_epoch_start(self, epoch: int) -> None:
        self.epochs_started.append(epoch)


def test_param_groups_scalars_and_epoch_hook(tmp_path):
    torch.manual_seed(0)
    method = ScaledClassifier(tiny_net())
    data = loaders()
    fit = Trainer(config(epochs=2), device="cpu").fit(method, data["train"], data["val"], tmp_path, 0)
    h = fit.history
    assert {"train_ce", "val_ce", "s", "lr_scalars"} <= set(h.columns)
    assert h.lr_scalars.tolist() == [0.0, 0.0] and h.lr.tolist() == [0.01, 0.01]
    assert h.s.tolist() == [1.0, 1.0] and method.s.grad is not None  # s got gradients but its lr is 0
    assert h.train_loss.tolist() == pytest.approx(h.train_ce.tolist())
    assert method.epochs_started == [1, 2]


def _fit_uninterrupted(workdir, seed=0):
    data = loaders(seed=seed)
    return Trainer(config(epochs=5), device="cpu").fit(
        classifier(dropout=0.3), data["train"], data["val"], workdir, seed
    )


def test_resume_after_crash_equals_uninterrupted_run(tmp_path):
    reference = _fit_uninterrupted(tmp_path / "a")
    trainer = Trainer(config(epochs=5), device="cpu")
    # 24 reads per epoch: crash in the middle of epoch 3, after two checkpoints
    crashing = loaders(fail_after=24 * 2 + 10)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.fit(classifier(dropout=0.3), crashing["train"], crashing["val"], tmp_path / "b", 0)
    assert torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)["progress"]["epoch"] == 2
    random.random(), np.random.rand(), torch.rand(1)  # a new process would not share these states either
    fresh = loaders()
    resumed = trainer.fit(classifier(seed=99, dropout=0.3), fresh["train"], fresh["val"], tmp_path / "b", 0)
    pd.testing.assert_frame_equal(
        resumed.history.drop(columns=TIMING), reference.history.drop(columns=TIMING)
    )
    for name in ("last_state", "best_state"):
        got, want = getattr(resumed, name), getattr(reference, name)
        assert all(torch.equal(got[k], want[k]) for k in want)
    assert resumed.best_epoch == reference.best_epoch
    other_seed = _fit_uninterrupted(tmp_path / "c", seed=1)  # the comparison above is sensitive
    assert not all(
        torch.equal(other_seed.last_state[k], reference.last_state[k]) for k in reference.last_state
    )


def test_finished_checkpoint_returns_without_training(tmp_path):
    first = _fit_uninterrupted(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT]  # no temporary files left

    class Untrainable(Classifier):
        def step(self, batch):
            raise AssertionError("trained again")

    again = Trainer(config(epochs=5), device="cpu").fit(
        Untrainable(tiny_net(dropout=0.3)), *_train_val(), tmp_path, 0
    )
    pd.testing.assert_frame_equal(again.history, first.history)
    assert all(torch.equal(again.last_state[k], v) for k, v in first.last_state.items())


def test_checkpoint_of_another_run_is_refused(tmp_path):
    Trainer(config(epochs=1), device="cpu").fit(classifier(), *_train_val(), tmp_path, 0)
    with pytest.raises(ValueError, match=r"checkpoint.pt.*\['lr'\]"):
        Trainer(config(epochs=1, lr=0.5), device="cpu").fit(classifier(), *_train_val(), tmp_path, 0)
    with pytest.raises(ValueError, match=r"\['seed'\]"):
        Trainer(config(epochs=1), device="cpu").fit(classifier(), *_train_val(), tmp_path, 1)


def test_step_contract_is_checked(tmp_path):
    class NoLogits(Classifier):
        def step(self, batch):
            return StepOutput(losses=super().step(batch).losses, outputs={})

    with pytest.raises(KeyError, match="logits"):
        Trainer(config(epochs=1), device="cpu").fit(NoLogits(tiny_net()), *_train_val(), tmp_path, 0)


def test_method_is_abstract():
    with pytest.raises(TypeError):
        Method()


def test_predict_frame():
    method = classifier()
    test_loader = loaders()["test"]
    frame = Trainer(config(), device="cpu").predict(method, test_loader)
    assert list(frame.columns) == ["id", "label", "prob_0", "prob_1", "pred"]
    dataset = test_loader.dataset
    assert frame.id.tolist() == dataset.metadata.id.tolist()
    assert frame.label.tolist() == dataset.labels.tolist()
    with torch.no_grad():
        expected = torch.softmax(method.model(dataset.images), dim=1).numpy()
    np.testing.assert_allclose(frame[["prob_0", "prob_1"]].to_numpy(), expected, rtol=1e-5)
    assert frame.pred.tolist() == expected.argmax(1).tolist()


def test_progress_bar(tmp_path, capsys):
    Trainer(config(epochs=2, progress=True), device="cpu").fit(classifier(), *_train_val(), tmp_path, 0)
    err = capsys.readouterr().err
    assert "2/2" in err and "val_acc" in err


def test_config_validation():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(epochs=1, batch_size=1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="positive"):
        TrainConfig(epochs=0, batch_size=1)
    for schedule in ({"plateau_patience": None}, {"lr_milestones": (2,)}):
        with pytest.raises(ValueError, match="reload_best_on_lr_drop needs the plateau schedule"):
            TrainConfig(epochs=1, batch_size=1, reload_best_on_lr_drop=True, **schedule)
    with pytest.raises(ValueError, match="max_hours"):
        TrainConfig(epochs=1, batch_size=1, max_hours=0)


#: validation loss by epoch: epoch 2 is the best, then it rises
RISING = (2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)


class ScriptedValidation(Classifier):
    """The validation loss of epoch e is ``losses[e - 1]``."""

    def __init__(self, model: nn.Module, losses: tuple[float, ...] = RISING) -> None:
        super().__init__(model)
        self.losses = losses
        self.epoch = 0

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def step(self, batch) -> StepOutput:
        out = super().step(batch)
        if not self.training:
            out.losses["loss"] = torch.tensor(self.losses[self.epoch - 1])
        return out


def _reloading_fit(workdir, epochs: int, losses: tuple[float, ...] = RISING, **train_kwargs):
    """Adam at lr 0.01 halved after two epochs without a lower validation loss, reloading the best epoch.

    With ``RISING`` the LR drops after epochs 4 and 6, each time back to epoch 2's state.
    """
    cfg = config(epochs=epochs, plateau_patience=1, plateau_factor=0.5, reload_best_on_lr_drop=True)
    data = loaders(**train_kwargs)
    torch.manual_seed(0)
    method = ScriptedValidation(tiny_net(dropout=0.3), losses)
    return Trainer(cfg, device="cpu").fit(method, data["train"], data["val"], workdir, 0)


def test_lr_drop_reloads_the_best_weights_and_optimizer_state(tmp_path):
    best = _reloading_fit(tmp_path / "best", epochs=2)  # ends with the best epoch's state
    dropped = _reloading_fit(tmp_path / "dropped", epochs=6)  # the second reload must find it unchanged
    assert dropped.history.reloaded_from.tolist() == [0, 0, 0, 2, 0, 2] and dropped.best_epoch == 2
    assert all(torch.equal(dropped.last_state[k], v) for k, v in best.last_state.items())
    want, got = (torch.load(tmp_path / run / CHECKPOINT, weights_only=True) for run in ("best", "dropped"))
    assert got["optimizer"]["state"].keys() == want["optimizer"]["state"].keys() != set()
    for index, state in want["optimizer"]["state"].items():
        assert set(state) == {"step", "exp_avg", "exp_avg_sq"}
        assert state["step"].item() == 2 * 6  # 6 batches per epoch
        assert all(torch.equal(got["optimizer"]["state"][index][k], v) for k, v in state.items())
    assert [g["lr"] for g in want["optimizer"]["param_groups"]] == [0.01]
    assert [g["lr"] for g in got["optimizer"]["param_groups"]] == [0.0025]  # the lowered LR, not epoch 2's
    assert got["scheduler"]["num_bad_epochs"] == 0 and got["scheduler"]["best"] == 1.0
    plain = Trainer(config(epochs=6, plateau_patience=1, plateau_factor=0.5), device="cpu")
    torch.manual_seed(0)
    method, data = ScriptedValidation(tiny_net(dropout=0.3)), loaders()
    without = plain.fit(method, data["train"], data["val"], tmp_path / "plain", 0)
    assert "reloaded_from" not in without.history.columns
    assert not all(torch.equal(without.last_state[k], v) for k, v in best.last_state.items())


def test_lr_drop_also_restores_the_plateau_count_of_the_best_epoch(tmp_path):
    # epoch 3 is the best, but by less than the plateau's 1e-4 relative threshold: the scheduler counts it
    # as bad, and every reload brings that count back, so the LR drops again one epoch later
    fit = _reloading_fit(tmp_path, epochs=6, losses=(2.0, 1.0, 1.0 - 1e-6, 3.0, 4.0, 5.0))
    assert fit.best_epoch == 3 and fit.history.reloaded_from.tolist() == [0, 0, 0, 3, 3, 3]
    assert fit.history.lr.tolist() == pytest.approx([0.01] * 4 + [0.005, 0.0025])


def test_resume_after_an_lr_drop_reload_equals_uninterrupted_run(tmp_path):
    full = _reloading_fit(tmp_path / "full", epochs=7)
    assert full.history.reloaded_from.tolist() == [0, 0, 0, 2, 0, 2, 0]
    assert full.history.lr.tolist() == pytest.approx([0.01] * 4 + [0.005] * 2 + [0.0025])
    # 24 reads per epoch: crash in epoch 6, after the first reload, before the second
    with pytest.raises(RuntimeError, match="simulated crash"):
        _reloading_fit(tmp_path / "resumed", epochs=7, fail_after=24 * 5 + 10)
    assert torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)["progress"]["epoch"] == 5
    random.random(), np.random.rand(), torch.rand(1)  # a new process would not share these states either
    resumed = _reloading_fit(tmp_path / "resumed", epochs=7)
    pd.testing.assert_frame_equal(resumed.history.drop(columns=TIMING), full.history.drop(columns=TIMING))
    for name in ("last_state", "best_state"):
        got, want = getattr(resumed, name), getattr(full, name)
        assert all(torch.equal(got[k], want[k]) for k in want)


class FakeClock:
    """Seconds that pass only when ``HourlyClassifier`` starts an epoch."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class HourlyClassifier(Classifier):
    """Every epoch takes 0.4 hours on ``clock``."""

    def __init__(self, model: nn.Module, clock: FakeClock) -> None:
        super().__init__(model)
        self.clock = clock

    def on_epoch_start(self, epoch: int) -> None:
        self.clock.now += 0.4 * 3600


def test_max_hours_stops_after_the_epoch_that_spends_them_summed_over_sessions(tmp_path):
    clock = FakeClock()
    trainer = Trainer(config(epochs=10, max_hours=1.0), device="cpu", clock=clock)
    data = loaders()
    fit = trainer.fit(HourlyClassifier(tiny_net(), clock), data["train"], data["val"], tmp_path / "a", 0)
    assert fit.stop_reason == "max_hours" and not fit.stopped_early
    assert fit.last_epoch == 3 and len(fit.history) == 3  # 0.8 hours after epoch 2, 1.2 after epoch 3
    data = loaders(fail_after=24 * 2 + 5)  # crashes in epoch 3: 0.8 hours in the checkpoint
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.fit(HourlyClassifier(tiny_net(), clock), data["train"], data["val"], tmp_path / "b", 0)
    data = loaders()
    resumed = trainer.fit(HourlyClassifier(tiny_net(), clock), data["train"], data["val"], tmp_path / "b", 0)
    assert resumed.stop_reason == "max_hours" and resumed.last_epoch == 3


def test_make_loaders_shuffles_train_only_and_reproducibly():
    datasets = {"train": Blobs(20, 1), "val": Blobs(8, 2), "test": Blobs(8, 3)}

    def order(loaders: dict[str, DataLoader], split: str) -> list[int]:
        return [i for epoch in range(2) for batch in loaders[split] for i in batch["idx"].tolist()]

    a, b, c = (make_loaders(datasets, 4, seed) for seed in (0, 0, 1))
    assert order(a, "train") == order(b, "train") != order(c, "train")
    assert order(a, "train")[:20] != order(a, "train")[20:]  # a new permutation every epoch
    assert order(a, "val") == list(range(8)) * 2 and order(a, "test") == list(range(8)) * 2


def _run(datasets, build, *, epochs=8, lr=0.02, study="tiny", **options) -> TrainingRun:
    schedule = {} if "val" in datasets else {"plateau_patience": None}
    return TrainingRun(study=study, config={"arm": "tiny"}, seed=0, profile="test", datasets=datasets,
                       train=config(epochs=epochs, lr=lr, **schedule), build=build,
                       label_names=[f"class{c}" for c in range(3)], **options)


def test_execute_end_to_end_with_run_store(tmp_path):
    datasets = {
        "train": Blobs(45, 1, num_classes=3),
        "val": Blobs(15, 2, num_classes=3),
        "test": Blobs(30, 3, num_classes=3),
    }
    store = RunStore(tmp_path / "store")
    run = _run(datasets, lambda: Classifier(tiny_net(num_classes=3)))
    result = execute(store, run, device="cpu")
    m = result.metrics
    assert m["best"]["accuracy"] > 0.8 and m["best"]["auc"] > 0.9  # chance: 1/3 and 0.5
    assert set(m["last"]) == set(m["best"]) and m["last"]["n"] == 30
    assert m["last_epoch"] == 8 and 1 <= m["best_epoch"] <= 8 and m["stopped_early"] is False
    assert set(result.predictions) == {"best", "last"}
    assert result.predictions["best"].id.tolist() == datasets["test"].metadata.id.tolist()
    assert result.spec.config["train"] == json.loads(json.dumps(train_identity(run.train)))  # tuples as lists
    assert set(result.spec.config) == {"arm", "train"} and "progress" not in result.spec.config["train"]
    timing = result.timing  # where the run's time went: its phases, within the whole call
    assert set(timing) == {"prepare", "fit", "score", "seconds", "finished"}
    assert 0 < timing["fit"] and timing["prepare"] + timing["fit"] + timing["score"] <= timing["seconds"] + 1e-3
    assert timing["fit"] >= result.history["epoch_seconds"].sum() - 1e-3
    again = execute(store, _run(datasets, lambda: pytest.fail("a stored run was recomputed")), device="cpu")
    assert again.metrics == m
    best = Classifier(tiny_net(num_classes=3))
    best.load_state_dict(again.state_dict("best"))
    frame = Trainer(config(), device="cpu").predict(best, make_loaders(datasets, 4, 0)["test"])
    np.testing.assert_allclose(
        frame.filter(like="prob_").to_numpy(),
        again.predictions["best"].filter(like="prob_").to_numpy(),
        rtol=1e-5,
    )


def test_execute_without_validation_scores_the_last_weights_and_runs_the_hooks(tmp_path):
    datasets = {"train": Blobs(24, 1, num_classes=3), "test": Blobs(12, 3, num_classes=3)}
    seen = {}

    def prepare(method: Method) -> float:
        return sum(p.double().sum().item() for p in method.parameters())  # the initial weights' sum

    def after(trained) -> dict:
        seen.update(prepared=trained.prepared, epochs=len(trained.fit.history))
        return {"metrics": {"initial_sum": trained.prepared}, "predictions": {"train": trained.trainer.predict(
            trained.method, make_loaders({"eval": datasets["train"]}, 4, 0)["eval"])}}

    result = execute(RunStore(tmp_path / "store"), _run(
        datasets, lambda: Classifier(tiny_net(num_classes=3)), epochs=2, keep=("last",), test_every_epoch=True,
        prepare=prepare, after=after), device="cpu")
    assert set(result.metrics) == {"last", "last_epoch", "initial_sum"} and result.metrics["last_epoch"] == 2
    assert result.metrics["initial_sum"] == seen["prepared"] and seen["epochs"] == 2
    assert set(result.predictions) == {"last", "train"} and len(result.predictions["train"]) == 24
    assert result.history["test_accuracy"].notna().all()
    assert result.history["test_accuracy"].iloc[-1] == pytest.approx(result.metrics["last"]["accuracy"])
    assert set(result.state_dict("last")) and "weights_best.pt" not in result.files
    with pytest.raises(ValueError, match="splits are train"):
        _run({"test": datasets["test"]}, lambda: None)
    with pytest.raises(ValueError, match="keep names weights"):
        _run(datasets, lambda: None, keep=("final",))


def test_empty_validation_set_is_a_clear_error(tmp_path):
    method = Classifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)))
    train = DataLoader([{"idx": 0, "id": "a", "img": torch.zeros(1, 2, 2), "lab": 0}], batch_size=1)
    trainer = Trainer(TrainConfig(epochs=1, batch_size=1, progress=False))
    with pytest.raises(ValueError, match="the validation set is empty"):
        trainer.fit(method, train, DataLoader([], batch_size=1), tmp_path, seed=0)


class MaskedBlobs(Blobs):
    """Blobs with organ masks (4 x 6 x 6): heart top-left, lungs bottom-right, one CAM cell each."""

    def __init__(self, n: int, seed: int, num_classes: int = 2, fail_after: int | None = None) -> None:
        super().__init__(n, seed, num_classes, fail_after)
        self.fingerprint = f"masked-{self.fingerprint}"

    def __getitem__(self, i: int) -> dict:
        masks = torch.zeros(4, 6, 6)
        masks[2, :3, :3] = 1  # mediastinum
        masks[0, 3:, 3:5] = 1  # left lung
        masks[1, 3:, 5:] = 1  # right lung
        return {**super().__getitem__(i), "masks": masks}


#: samples whose CAM peaks in the top-left (heart) cell; all others peak in the bottom-right (lungs)
PEAK_IN_HEART = (1, 2, 4)


class CAMStandIn(Classifier):
    """A classifier whose maps (B x 3 x 2 x 2) are fixed by the sample index, for every class."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.modes: list[tuple[bool, bool]] = []

    def step(self, batch) -> StepOutput:
        out = super().step(batch)
        self.modes.append((self.training, torch.is_grad_enabled()))
        omega = torch.zeros(len(batch["idx"]), 3, 2, 2, device=batch["img"].device)
        for row, idx in enumerate(batch["idx"].tolist()):
            cell = (0, 0) if idx in PEAK_IN_HEART else (1, 1)
            omega[row, :, cell[0], cell[1]] = 1.0
        out.outputs["omega"] = omega
        return out


class FlatCAMStandIn(CAMStandIn, FlatValidation):
    """Constant validation loss: the best checkpoint is epoch 1, the last another one."""


def _weight_sum(method: Method, loader: DataLoader, device: torch.device) -> dict[str, float]:
    return {"weight_sum": sum(p.double().sum().item() for p in method.parameters())}


def test_cam_localisation_evaluator_by_hand():
    # test set: idx 0..11, label idx % 3; cardiomegaly 1, 4, 7, 10 (in the heart: 1, 4 -> 2 / 4),
    # pneumonia 2, 5, 8, 11 (in the lungs: 5, 8, 11 -> 3 / 4), normal not scored: 5 / 8 overall
    torch.manual_seed(0)
    method = CAMStandIn(tiny_net(num_classes=3))
    method.train()
    loader = DataLoader(MaskedBlobs(12, 3, num_classes=3), batch_size=5)
    result = cam_localisation_evaluator(method, loader, torch.device("cpu"))
    # the public code's rule: every 3 x 3 neighbourhood of a 2 x 2 grid is the whole grid, which holds both organs
    assert result == {
        "interpretability": 5 / 8,
        "interpretability/cardiomegaly": 2 / 4,
        "interpretability/pneumonia": 3 / 4,
        "interpretability_public": 1.0,
        "interpretability_public/cardiomegaly": 1.0,
        "interpretability_public/pneumonia": 1.0,
    }
    assert method.modes == [(False, False)] * 3  # eval mode, no gradients, every batch
    normal_only = DataLoader(Subset(MaskedBlobs(12, 3, num_classes=3), [0, 3]), batch_size=2)
    nothing_scored = cam_localisation_evaluator(method, normal_only, torch.device("cpu"))
    assert all(math.isnan(v) for v in nothing_scored.values())
    with pytest.raises(KeyError, match="masks"):
        cam_localisation_evaluator(method, loaders()["test"], torch.device("cpu"))


def test_evaluators_score_both_checkpoints(tmp_path):
    datasets = {
        "train": MaskedBlobs(24, 1, num_classes=3),
        "val": MaskedBlobs(9, 2, num_classes=3),
        "test": MaskedBlobs(12, 3, num_classes=3),
    }
    evaluators = {"cam": cam_localisation_evaluator, "weights": _weight_sum}
    run = _run(datasets, lambda: FlatCAMStandIn(tiny_net(num_classes=3)), epochs=3, evaluators=evaluators,
               keep=("best", "last"))
    result = execute(RunStore(tmp_path / "store"), run, device="cpu")
    for name in ("best", "last"):
        metrics = result.metrics[name]
        assert metrics["interpretability"] == 5 / 8 and metrics["interpretability/pneumonia"] == 3 / 4
        state_sum = sum(v.double().sum().item() for v in result.state_dict(name).values())
        assert metrics["weight_sum"] == pytest.approx(state_sum, rel=1e-12)
        assert metrics["n"] == 12 and "auc" in metrics
    assert (result.metrics["best_epoch"], result.metrics["last_epoch"]) == (1, 3)
    assert result.metrics["best"]["weight_sum"] != result.metrics["last"]["weight_sum"]
    clash = _run(datasets, lambda: CAMStandIn(tiny_net(num_classes=3)), epochs=1, study="clash",
                 evaluators={"clash": lambda method, loader, device: {"accuracy": 1.0}})
    with pytest.raises(ValueError, match=r"evaluator 'clash' returns \['accuracy'\]"):
        execute(RunStore(tmp_path / "clash"), clash, device="cpu")


def test_run_identity_changes_only_with_evaluators(tmp_path):
    datasets = {"train": MaskedBlobs(12, 1, 3), "val": MaskedBlobs(6, 2, 3), "test": MaskedBlobs(6, 3, 3)}
    store = RunStore(tmp_path / "store")

    def run(**options):
        return execute(store, _run(datasets, lambda: CAMStandIn(tiny_net(num_classes=3)), epochs=1, study="hook",
                                   **options), device="cpu")

    plain, scored = run(), run(evaluators={"cam": cam_localisation_evaluator})
    train = {k: v for k, v in asdict(config(epochs=1, lr=0.02)).items() if k != "progress"}
    before_hook = RunSpec("hook", {"arm": "tiny", "train": train}, 0, "test", data_fingerprint(datasets))
    assert plain.spec.key == before_hook.key and run(evaluators={}).path == plain.path
    assert scored.path != plain.path and scored.spec.config["evaluators"] == ["cam"]
    assert "interpretability" in scored.metrics["best"] and "interpretability" not in plain.metrics["best"]


def test_eval_loaders_are_scored_every_epoch_and_match_predict(tmp_path):
    data = loaders()
    trainer = Trainer(config(epochs=3), device="cpu")
    method = classifier()
    fit = trainer.fit(method, data["train"], data["val"], tmp_path, 0, eval_loaders={"test": data["test"]})
    assert {"test_loss", "test_accuracy", "val_accuracy"} <= set(fit.history.columns)
    assert fit.history["test_accuracy"].notna().all() and len(fit.history) == 3
    # the method ends with the last weights: the last row's test accuracy is theirs
    frame = trainer.predict(method, data["test"])
    assert fit.history["test_accuracy"].iloc[-1] == pytest.approx(float((frame["pred"] == frame["label"]).mean()))
    probs = torch.tensor(frame[["prob_0", "prob_1"]].to_numpy())
    test_loss = F.nll_loss(torch.log(probs), torch.tensor(frame["label"].to_numpy()))
    assert fit.history["test_loss"].iloc[-1] == pytest.approx(test_loss.item(), rel=1e-4)


def test_eval_loaders_do_not_change_training(tmp_path):
    data = loaders()
    plain = Trainer(config(epochs=2), device="cpu").fit(classifier(), data["train"], data["val"], tmp_path / "a", 0)
    data = loaders()
    scored = Trainer(config(epochs=2), device="cpu").fit(
        classifier(), data["train"], data["val"], tmp_path / "b", 0, eval_loaders={"test": data["test"]}
    )
    for key, value in plain.last_state.items():
        assert torch.equal(value, scored.last_state[key]), key
    assert plain.best_epoch == scored.best_epoch


def test_without_validation_the_last_weights_are_best_and_lr_constant(tmp_path, caplog):
    data = loaders()
    cfg = config(epochs=3, plateau_patience=None)
    with caplog.at_level("WARNING"):
        fit = Trainer(cfg, device="cpu").fit(classifier(), data["train"], None, tmp_path, 0, {"test": data["test"]})
    assert "validation" not in caplog.text
    assert fit.best_epoch == fit.last_epoch == 3
    assert all(torch.equal(fit.best_state[k], v) for k, v in fit.last_state.items())
    assert "val_loss" not in fit.history.columns and fit.history["test_accuracy"].notna().all()
    assert fit.history["lr"].tolist() == [cfg.lr] * 3


def test_without_validation_plateau_and_early_stopping_are_refused(tmp_path):
    data = loaders()
    with pytest.raises(ValueError, match="plateau schedule"):
        Trainer(config(), device="cpu").fit(classifier(), data["train"], None, tmp_path, 0)
    with pytest.raises(ValueError, match="early stopping"):
        Trainer(config(plateau_patience=None, early_stop_patience=2), device="cpu").fit(
            classifier(), data["train"], None, tmp_path, 0
        )
    with pytest.raises(ValueError, match="taken"):
        Trainer(config(), device="cpu").fit(classifier(), data["train"], data["val"], tmp_path, 0, {"val": data["test"]})


def test_constant_lr_run_resumes_to_the_uninterrupted_weights(tmp_path):
    cfg = config(epochs=4, plateau_patience=None)
    data = loaders()
    full = Trainer(cfg, device="cpu").fit(classifier(), data["train"], None, tmp_path / "a", 0)
    data = loaders(fail_after=24 * 2 + 5)  # crashes in epoch 3, after two checkpoints
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(cfg, device="cpu").fit(classifier(), data["train"], None, tmp_path / "c", 0)
    data = loaders()
    resumed = Trainer(cfg, device="cpu").fit(classifier(seed=7), data["train"], None, tmp_path / "c", 0)
    for key, value in full.last_state.items():
        assert torch.equal(value, resumed.last_state[key]), key


@pytest.mark.parametrize("every, written", [(None, False), (2, True), (10, True)])
def test_checkpoint_every(tmp_path, every, written, monkeypatch):
    saved = []
    monkeypatch.setattr(Trainer, "_save", lambda self, path, seed, m, o, s, l, progress: saved.append(progress.epoch))
    data = loaders()
    Trainer(config(epochs=5), device="cpu", checkpoint_every=every).fit(classifier(), data["train"], data["val"], tmp_path, 0)
    assert saved == ({2: [2, 4, 5], 10: [5]}[every] if written else [])
    with pytest.raises(ValueError, match="checkpoint_every"):
        Trainer(config(), checkpoint_every=0)
