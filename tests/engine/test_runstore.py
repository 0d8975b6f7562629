"""RunStore: run once, atomic verified run folders, resumable work folders, results table."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from attnlib.core.io import exclusive_lock
from attnlib.core.provenance import package_fingerprint
from attnlib.engine import runstore
from attnlib.engine.runstore import RunSpec, RunStore, stale_code, study_code

SPEC_COLUMNS = ["study", "key", "seed", "profile", "data_fingerprint", "code"]
FILES = [
    "spec.json",
    "history.csv",
    "metrics.json",
    "predictions_best.csv",
    "weights_best.pt",
    "timing.json",
    "manifest.json",
]


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


def warnings_of(caplog) -> list[str]:
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    caplog.clear()
    return messages


def damage(path: Path, how: str) -> None:
    """Truncate ``path`` to half, flip its middle byte (same size) or delete it."""
    data = path.read_bytes()
    middle = len(data) // 2
    if how == "truncate":
        path.write_bytes(data[:middle])
    elif how == "flip":
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    else:
        path.unlink()


def test_key_is_canonical_and_covers_config_profile_data_and_code():
    base = spec()
    reordered = spec(config={"train": {"epochs": 3, "lr": 0.001}, "model": "resnet50"})
    assert base.key == reordered.key and len(base.key) == 12 and int(base.key, 16) >= 0
    assert spec(seed=4).key == base.key and spec(study="other").key == base.key  # seed/study are folders
    changed = [
        spec(config={"model": "resnet50", "train": {"lr": 1e-4, "epochs": 3}}),
        spec(profile="paper"),
        spec(data_fingerprint="abc124"),
        spec(code="0123456789abcdef"),
    ]
    assert len({base.key, *(s.key for s in changed)}) == 5
    config = {"sizes": (1, 2), "lr": np.float64(0.1)}
    frozen = spec(config=config)
    config["lr"] = 0.2  # the spec keeps its own JSON copy
    assert frozen.config == {"sizes": [1, 2], "lr": 0.1} and frozen.key == spec(config=frozen.config).key


def test_code_defaults_to_the_study_module_closure_or_the_whole_package():
    assert spec().code == study_code("ggcam") == package_fingerprint()  # no attnlib.papers.ggcam
    gg_cam = spec(study="gg_cam")
    assert gg_cam.code == study_code("gg_cam") != package_fingerprint()
    assert gg_cam.key != spec().key  # a study module's code enters its runs' keys
    assert RunSpec("gg_cam", {}, 0, "quick", "abc", "c0de").code == "c0de"


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
    assert len(calls) == 1 and not calls[0].exists()  # work folder (trainer checkpoint) removed after commit
    assert result.path == tmp_path / "ggcam" / spec().key / "seed0"
    assert sorted(p.name for p in result.path.parent.iterdir()) == ["seed0"]  # no lock, work or temp left
    names = sorted(p.name for p in result.path.iterdir())
    assert names == [
        "history.csv",
        "manifest.json",
        "metrics.json",
        "predictions_best.csv",
        "predictions_last.csv",
        "spec.json",
        "timing.json",
        "weights_best.pt",
    ]
    assert json.loads((result.path / "spec.json").read_text())["environment"]["threads"] == torch.get_num_threads()
    assert set(result.timing) == {"seconds", "finished"} and result.timing["seconds"] >= 0
    manifest = json.loads((result.path / "manifest.json").read_text())["files"]
    assert manifest == {
        name: {
            "size": (result.path / name).stat().st_size,
            "sha256": hashlib.sha256((result.path / name).read_bytes()).hexdigest(),
        }
        for name in names
        if name != "manifest.json"
    }
    assert again.files == manifest.keys()
    assert json.loads((result.path / "spec.json").read_text())["code"] == spec().code
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
    assert sorted(p.name for p in store.path(spec()).parent.iterdir()) == ["seed0.work"]  # lock removed

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
    assert {p.name for p in parent.iterdir()} == {"seed0.work"}  # no run, no temp folder, no lock


@pytest.mark.parametrize("step", FILES)
def test_interrupted_commit_leaves_no_readable_run(tmp_path, monkeypatch, step):
    store = RunStore(tmp_path)

    def interrupting(write):
        def wrapped(*args):
            if any(isinstance(a, Path) and a.name == step for a in args):
                raise KeyboardInterrupt  # stops the commit just before this file, as Ctrl-C would
            return write(*args)

        return wrapped

    for name in ("atomic_write_json", "atomic_write_text"):
        monkeypatch.setattr(runstore, name, interrupting(getattr(runstore, name)))
    monkeypatch.setattr(runstore.torch, "save", interrupting(torch.save))
    with pytest.raises(KeyboardInterrupt):
        store.run(spec(), lambda workdir: output())
    assert store.load(spec()) is None and store.results("ggcam").empty and store.damaged("ggcam") == []
    assert {p.name for p in store.path(spec()).parent.iterdir()} == {"seed0.work"}
    monkeypatch.undo()
    assert store.run(spec(), lambda workdir: output(0.7)).metrics["best"]["accuracy"] == 0.7


def test_killed_commit_is_never_read_and_cleaned_up(tmp_path, caplog):
    """A kill -9 before the manifest leaves a temporary folder; a copy of it in the run's place is not read."""
    store = RunStore(tmp_path)
    final = store.path(spec())
    killed = final.with_name(".seed0.k1ll3d.tmp")
    killed.mkdir(parents=True)
    store._write(killed, spec(), output())
    (killed / "manifest.json").unlink()  # the commit was killed before writing it
    shutil.copytree(killed, final)
    assert store.load(spec()) is None
    assert warnings_of(caplog) == [
        f"run ggcam/{spec().key}/seed0 is damaged: manifest.json: missing (a run folder of older code, or a "
        + "damaged one); treating it as unfinished"
    ]
    calls = []
    store.run(spec(), lambda workdir: calls.append(workdir) or output())
    [aside] = final.parent.glob("seed0.damaged-*")
    assert len(calls) == 1 and not killed.exists() and not (aside / "manifest.json").exists()
    assert sorted(p.name for p in final.parent.iterdir()) == sorted(["seed0", aside.name])


@pytest.mark.parametrize("how", ["truncate", "flip", "delete"])
@pytest.mark.parametrize("file", FILES)
def test_damaged_run_is_named_left_out_and_recomputed_once(tmp_path, caplog, file, how):
    store = RunStore(tmp_path)
    folder = store.run(spec(), lambda workdir: output()).path
    store.run(spec(seed=1), lambda workdir: output())
    damage(folder / file, how)
    damaged_bytes = (folder / file).read_bytes() if how != "delete" else None
    what = {"truncate": "the manifest says", "flip": "sha256 mismatch", "delete": "missing"}[how]
    if file == "manifest.json" and how != "delete":
        what = "unreadable"
    named = f"run ggcam/{spec().key}/seed0 is damaged: {file}: "

    assert store.load(spec()) is None
    [warning] = warnings_of(caplog)
    assert warning.startswith(named) and what in warning and warning.endswith("treating it as unfinished")

    table = store.results("ggcam")
    assert table.seed.tolist() == [1]
    [warning] = warnings_of(caplog)
    assert warning.startswith(named) and warning.endswith("left out of the results")
    [bad] = store.damaged("ggcam")
    assert (bad.study, bad.key, bad.seed, bad.path, bad.file) == ("ggcam", spec().key, 0, folder, file)
    assert what in bad.problem

    calls = []
    result = store.run(spec(), lambda workdir: calls.append(workdir) or output(0.7))
    assert len(calls) == 1 and result.metrics["best"]["accuracy"] == 0.7
    [aside] = folder.parent.glob("seed0.damaged-*")
    [warning] = warnings_of(caplog)
    assert warning.startswith(named) and f"moved it aside to {aside.name}" in warning
    assert not (aside / file).exists() if how == "delete" else (aside / file).read_bytes() == damaged_bytes
    assert sorted(p.name for p in folder.parent.iterdir()) == sorted(["seed0", "seed1", aside.name])
    store.run(spec(), lambda workdir: pytest.fail("a repaired run was recomputed"))
    assert store.damaged("ggcam") == [] and sorted(store.results("ggcam").seed) == [0, 1]
    assert warnings_of(caplog) == []


def test_failed_recompute_keeps_the_damaged_run_aside_and_stores_nothing(tmp_path):
    store = RunStore(tmp_path)
    folder = store.run(spec(), lambda workdir: output()).path
    damage(folder / "history.csv", "truncate")
    with pytest.raises(RuntimeError, match="unfinished"):
        store.run(spec(), _crash)
    [aside] = folder.parent.glob("seed0.damaged-*")
    assert not folder.exists() and store.load(spec()) is None and store.damaged("ggcam") == []
    assert sorted(p.name for p in folder.parent.iterdir()) == sorted([aside.name, "seed0.work"])
    assert (aside / "spec.json").is_file()
    store.run(spec(), lambda workdir: output())
    assert sorted(p.name for p in folder.parent.iterdir()) == sorted([aside.name, "seed0"])


def test_files_outside_the_manifest_are_never_read(tmp_path, caplog):
    store = RunStore(tmp_path)
    folder = store.run(spec(), lambda workdir: output()).path
    (folder / "predictions_extra.csv").write_text("not,a\nrun file")
    torch.save({"w": torch.zeros(1)}, folder / "weights_last.pt")
    result = store.load(spec())
    assert sorted(result.predictions) == ["best", "last"] and warnings_of(caplog) == []
    with pytest.raises(FileNotFoundError, match=r"weights_last\.pt"):
        result.state_dict("last")
    assert len(store.results("ggcam")) == 1


def test_run_folder_of_older_code_counts_as_damaged(tmp_path, caplog):
    """Folders stored before manifests existed (also: a spec.json deleted by hand) are named, not skipped."""
    store = RunStore(tmp_path)
    folder = store.run(spec(), lambda workdir: output()).path
    (folder / "manifest.json").unlink()
    (folder.with_name("seed3")).mkdir()
    (folder.with_name("seed3") / "history.csv").write_text("epoch\n1\n")
    assert store.results("ggcam").empty
    assert sorted(w.split(" is damaged")[0] for w in warnings_of(caplog)) == [
        f"run ggcam/{spec().key}/seed0",
        f"run ggcam/{spec().key}/seed3",
    ]
    assert [(d.seed, d.file) for d in store.damaged("ggcam")] == [(0, "manifest.json"), (3, "manifest.json")]


def test_moved_run_folder_is_damaged(tmp_path):
    store = RunStore(tmp_path)
    folder = store.run(spec(), lambda workdir: output()).path
    folder.rename(folder.with_name("seed4"))
    [bad] = store.damaged("ggcam")
    assert (bad.seed, bad.file) == (4, "spec.json") and "describes run" in bad.problem


def test_concurrent_finisher_wins(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    final = store.path(spec())
    real_write = RunStore._write

    def write_then_lose_race(self, folder, spec_, out):
        real_write(self, folder, spec_, out)
        winner = folder.with_name("winner")
        winner.mkdir()
        real_write(self, winner, spec_, output(0.9))
        winner.rename(final)  # another process renamed its folder into place first

    monkeypatch.setattr(RunStore, "_write", write_then_lose_race)
    result = store.run(spec(), lambda workdir: output())
    assert result.metrics["best"]["accuracy"] == 0.9
    assert sorted(p.name for p in final.parent.iterdir()) == ["seed0"]


def test_lock_is_exclusive_and_removed_after_use(tmp_path):
    lock = tmp_path / "seed0.lock"
    lock.touch()  # left by older code
    inside, overlaps = [], []

    def worker():
        for _ in range(40):
            with exclusive_lock(lock):
                inside.append(1)
                overlaps.extend(inside[1:])
                time.sleep(0.0005)
                inside.pop()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not overlaps and not lock.exists()


def test_stored_runs_hold_no_optimizer_state(tmp_path):
    model = torch.nn.Linear(2, 1)
    sgd_state = {
        "state": {0: {"momentum_buffer": torch.zeros(1, 2)}},
        "param_groups": [{"lr": 0.1, "params": [0, 1]}],
    }
    store = RunStore(tmp_path)
    out = {**output(), "states": {"last": model.state_dict(), "optimizer": sgd_state}}
    with pytest.raises(
        TypeError, match=r"states\['optimizer'\] with non-tensor entries \['param_groups', 'state'\]"
    ):
        store.run(spec(), lambda workdir: out)
    assert store.load(spec()) is None
    result = store.run(spec(), lambda workdir: {**out, "states": {"last": model.state_dict()}})
    assert result.state_dict("last").keys() == model.state_dict().keys()


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
    assert list(table.columns[:6]) == SPEC_COLUMNS and set(table.code) == {study_code("ggcam")}
    assert {"config.model", "config.train.lr", "metrics.best.accuracy", "metrics.best_epoch"} <= set(
        table.columns
    )
    quick = store.results("ggcam", profile="quick").sort_values(["config.train.lr", "seed"])
    assert quick["metrics.best.accuracy"].tolist() == pytest.approx([0.1, 1.1, 1.0, 2.0])
    assert store.results("ggcam", profile="paper")["metrics.best.accuracy"].tolist() == [0.9]
    assert store.results("ggcam", keys=[spec(profile="paper").key]).profile.tolist() == ["paper"]
    empty = store.results("nothing")
    assert empty.empty and list(empty.columns) == SPEC_COLUMNS


def test_stale_code_names_runs_of_other_code(tmp_path):
    store = RunStore(tmp_path)
    store.run(spec(), lambda workdir: output())
    assert stale_code(store.results("ggcam"), "ggcam") == []
    for seed in (0, 1):
        store.run(spec(seed=seed, code="0ld"), lambda workdir: output())
    assert stale_code(store.results("ggcam"), "ggcam") == [
        f"2 run(s) of ggcam were made by other code (0ld) than the current one ({study_code('ggcam')})"
    ]
    assert stale_code(store.results("nothing"), "ggcam") == []


def test_default_root_is_under_runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLIB_HOME", str(tmp_path))
    assert RunStore().root == tmp_path / "runs" / "store"
