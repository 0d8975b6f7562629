"""The foundation end to end: synthetic EGD-CXR -> loader -> trainer -> run store -> sweep -> report.

A plain torchvision ResNet-18 stands in for the paper methods, which build on the same pieces.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attnlib.data.cache import ArrayCache
from attnlib.data.real.egd_cxr import EGDCXR, EGDCXRPaths, EGDCXRSettings
from attnlib.data.synthetic.defaults import synthetic_egd_cxr
from attnlib.engine import trainer as trainer_module
from attnlib.engine.executor import TrainingRun, execute
from attnlib.engine.runstore import RunStore
from attnlib.engine.sweep import sweep
from attnlib.engine.trainer import TrainConfig
from attnlib.evaluation.stats import median_std
from attnlib.methods.base import Classifier
from attnlib.models.registry import create_model

PROBE = Path(__file__).parent / "notebooks" / "train_probe.ipynb"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return synthetic_egd_cxr("smoke", root=tmp_path_factory.mktemp("synthetic"), n_images=30, rows=96, cols=80)


def _splits(root: Path, cache: ArrayCache) -> dict[str, EGDCXR]:
    data = EGDCXR(EGDCXRPaths.from_root(root), settings=EGDCXRSettings(masks=False), cache=cache)
    return {name: data.select(name) for name in ("train", "val", "test")}


def test_execute_trains_once_and_stores_both_checkpoints(data_root, tmp_path, monkeypatch):
    cache = ArrayCache(tmp_path / "cache")
    splits = _splits(data_root, cache)
    store = RunStore(tmp_path / "store")
    config = TrainConfig(epochs=2, batch_size=8, progress=False)

    def build() -> Classifier:
        return Classifier(create_model("resnet18", 3, in_chans=1, pretrained=False))

    run = TrainingRun("probe", {"arm": "resnet18"}, 0, "smoke", splits, config, build, splits["train"].label_names)
    runs = [execute(store, run)]
    history = runs[0].history
    assert history["epoch"].tolist() == [1, 2]
    assert {"data_seconds", "compute_seconds", "val_loss"} <= set(history.columns)
    # every image decoded once (epoch 1 of train + first val/test pass), read from the cache afterwards
    assert cache.misses == len(splits["train"]) + len(splits["val"]) + len(splits["test"])
    assert cache.hits > 0
    metrics = runs[0].metrics
    assert {"best", "last", "best_epoch", "last_epoch"} <= metrics.keys() and metrics["stop_reason"] == "epochs"
    assert set(runs[0].predictions) == {"best", "last"}
    assert len(runs[0].predictions["best"]) == len(splits["test"])
    # only the weights a report reads are kept (the figures use the best-validation ones)
    assert sorted(p.name for p in runs[0].path.glob("weights_*.pt")) == ["weights_best.pt"]
    runs[0].state_dict("best")

    # a finished run is loaded, never retrained
    monkeypatch.setattr(trainer_module.Trainer, "fit", lambda *a, **k: pytest.fail("retrained a finished run"))
    again = execute(store, run)
    assert again.path == runs[0].path
    table = store.results("probe", "smoke")
    assert table[["config.arm", "seed"]].values.tolist() == [["resnet18", 0]]
    assert table.loc[0, "metrics.best.accuracy"] == metrics["best"]["accuracy"]


def test_sweep_trains_each_seed_then_reports_from_the_store(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLIB_CACHE_DIR", str(tmp_path / "cache"))
    params = {"profile": "smoke", "data_root": str(data_root), "store_root": str(tmp_path / "store"), "epochs": 1}
    result = sweep(PROBE, [0, 1], jobs=2, parameters=params, out_dir=tmp_path / "nb", progress=False)
    assert result.ok, result.failures
    assert sorted(result.executed) == [0, 1] and result.report is not None
    store = RunStore(tmp_path / "store")
    results = store.results("train_probe", "smoke")
    assert sorted(results["seed"]) == [0, 1]
    summary = median_std(results, ["metrics.best.accuracy"], "config.arm").numeric
    assert summary.loc["resnet18", ("metrics.best.accuracy", "n")] == 2
    report = json.loads(result.report.read_text())
    shown = "".join("".join(o.get("data", {}).get("text/plain", "")) for c in report["cells"] for o in c.get("outputs", []))
    assert "resnet18" in shown and "accuracy (best)" in shown

    rerun = sweep(PROBE, [0, 1], jobs=2, parameters=params, out_dir=tmp_path / "nb", progress=False)
    assert rerun.ok and sorted(rerun.skipped) == [0, 1] and not rerun.executed
