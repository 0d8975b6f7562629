"""RunStore: run once, atomic run folders, resumable work folders, results table."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from attnlib.training import runstore
from attnlib.training.runstore import RunSpec, RunStore


def spec(**overrides) -> RunSpec:
    fields = {
        "study": "ggcam",
        "config": {"model": "resnet50", "train": {"lr": 1e-3, "epochs": 3}},
        "seed": 0,
        "profile": "quick",
        "data_fingerprint": "abc123",
    }
    return RunSpec(**{**fields, **overrides})


def output(accuracy: float = 0.5) -> dict:
    predictions = pd.DataFrame(
        {"id": ["007", "010"], "label": [0, 1], "prob_0": [0.8, 0.3], "prob_1": [0.2, 0.7]}
    )
    return {
        "history": pd.DataFrame({"epoch": [1, 2], "val_loss": [0.9, 0.7]}),
        "metrics": {"best": {"accuracy": accuracy, "auc": float("nan")}, "best_epoch": 2},
        "predictions": {"best": predictions, "last": predictions},
        "states": {"best": {"w": torch.arange(3.0)}},
    }


def test_key_is_canonical_and_covers_config_profile_and_data():
    base = spec()
    reordered = spec(config={"train": {"epochs": 3, "lr": 0.001}, "model": "resnet50"})
    assert base.key == reordered.key and len(base.key) == 12 and int(base.key, 16) >= 0
    assert spec(seed=4).key == base.key and spec(study="other").key == base.key  # seed/study are folders
    changed = [
        spec(config={"model": "resnet50", "train": {"lr": 1e-4, "epochs": 3}}),
        spec(profile="paper"),
        spec(data_fingerprint="abc124"),
    ]
    assert len({base.key, *(s.key for s in changed)}) == 4
    config = {"sizes": (1, 2), "lr": np.float64(0.1)}
    frozen = spec(config=config)
    config["lr"] = 0.2  # the spec keeps its own JSON copy
    assert frozen.config == {"sizes": [1, 2], "lr": 0.1} and frozen.key == spec(config=frozen.config).key


def test_bad_specs():
    with pytest.raises(ValueError, match="not JSON-able"):
        spec(config={"f": object()})
    with pytest.raises(ValueError, match="not JSON-able"):
        spec(config={"lr": float("nan")})
    with pytest.raises(ValueError, match="plain folder name"):
        spec(study="a/b")


def test_run_computes_once_and_round_trips(tmp_path):
    store = RunStore(tmp_path)
    calls = []

    def fn(workdir):
        calls.append(workdir)
        assert workdir.is_dir() and workdir.name == "seed0.work"
        return output()

    result = store.run(spec(), fn)
    again = store.run(spec(), lambda workdir: pytest.fail("a stored run was recomputed"))
    assert len(calls) == 1 and not calls[0].exists()  # work folder removed after commit
    assert result.path == tmp_path / "ggcam" / spec().key / "seed0"
    assert sorted(p.name for p in result.path.iterdir()) == [
        "history.csv",
        "metrics.json",
        "predictions_best.csv",
        "predictions_last.csv",
        "spec.json",
        "weights_best.pt",
    ]
    assert again.predictions["best"].id.tolist() == ["007", "010"]  # ids stay strings
    pd.testing.assert_frame_equal(again.history, output()["history"])
    assert again.metrics["best_epoch"] == 2 and again.metrics["best"]["accuracy"] == 0.5
    assert torch.equal(again.state_dict("best")["w"], torch.arange(3.0))
    assert store.load(spec(seed=1)) is None


def test_failed_run_leaves_no_run_folder_but_keeps_its_work(tmp_path):
    store = RunStore(tmp_path)

    def crash(workdir):
        (workdir / "checkpoint.pt").write_text("epoch 2")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        store.run(spec(), crash)
    assert not store.path(spec()).exists() and store.load(spec()) is None

    def resume(workdir):
        assert (workdir / "checkpoint.pt").read_text() == "epoch 2"
        return output()

    assert store.run(spec(), resume).metrics["best_epoch"] == 2


def test_run_folder_never_appears_half_written(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    written = []

    def failing_write(path, text):
        written.append(path.name)
        raise OSError("disk full")

    monkeypatch.setattr(runstore, "atomic_write_text", failing_write)
    with pytest.raises(OSError, match="disk full"):
        store.run(spec(), lambda workdir: output())
    assert written == ["history.csv"]  # spec.json was already written when this failed
    parent = store.path(spec()).parent
    assert {p.name for p in parent.iterdir()} - {"seed0.lock"} == {"seed0.work"}  # no run, no temp folder


def test_concurrent_finisher_wins(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    final = store.path(spec())
    real_write = RunStore._write

    def write_then_lose_race(self, folder, spec_, out):
        real_write(self, folder, spec_, out)
        shutil.copytree(folder, final)  # another process renamed its folder into place first
        (final / "metrics.json").write_text('{"winner": true}')

    monkeypatch.setattr(RunStore, "_write", write_then_lose_race)
    result = store.run(spec(), lambda workdir: output())
    assert result.metrics == {"winner": True}
    assert not [p for p in final.parent.iterdir() if p.name.endswith(".tmp")]


def test_keep_weights_false(tmp_path):
    result = RunStore(tmp_path, keep_weights=False).run(spec(), lambda workdir: output())
    assert not list(result.path.glob("*.pt"))
    with pytest.raises(FileNotFoundError, match=r"weights_best\.pt"):
        result.state_dict("best")


def _crash(workdir):
    raise RuntimeError("unfinished")


def test_results_table(tmp_path):
    store = RunStore(tmp_path)
    for seed in (0, 1):
        for lr in (1e-3, 1e-4):
            config = {"model": "resnet50", "train": {"lr": lr, "epochs": 3}}
            store.run(spec(seed=seed, config=config), lambda workdir, a=lr * 1000 + seed: output(a))
    store.run(spec(profile="paper"), lambda workdir: output(0.9))
    with pytest.raises(RuntimeError):
        store.run(spec(seed=7), _crash)

    table = store.results("ggcam")
    assert len(table) == 5 and 7 not in table.seed.tolist()
    assert list(table.columns[:5]) == ["study", "key", "seed", "profile", "data_fingerprint"]
    assert {"config.model", "config.train.lr", "metrics.best.accuracy", "metrics.best_epoch"} <= set(
        table.columns
    )
    quick = store.results("ggcam", profile="quick").sort_values(["config.train.lr", "seed"])
    assert quick["metrics.best.accuracy"].tolist() == pytest.approx([0.1, 1.1, 1.0, 2.0])
    assert store.results("ggcam", profile="paper")["metrics.best.accuracy"].tolist() == [0.9]
    empty = store.results("nothing")
    assert empty.empty and list(empty.columns) == ["study", "key", "seed", "profile", "data_fingerprint"]


def test_default_root_is_under_runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLIB_HOME", str(tmp_path))
    assert RunStore().root == tmp_path / "runs" / "store"
