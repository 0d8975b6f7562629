"""The study engine with a tiny fifth study (how a new paper plugs in): typed settings, arms through the one
executor, the tidy results frame, the paper's test against scipy, verdict and claims."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import ttest_rel
from torch import nn
from torch.utils.data import Dataset

from attnlib.core.settings import from_mapping
from attnlib.engine.executor import TrainingRun, execute
from attnlib.engine.runstore import RunStore
from attnlib.engine.study import ArmRun, ClaimSpec, Comparison, Metric, Study, StudyContext, outcome
from attnlib.engine.trainer import TrainConfig, Trainer
from attnlib.methods.base import Classifier


class Stripes(Dataset):
    """``n`` 1 x 8 x 8 images whose class is a bright row (row 2 or row 5), under Gaussian noise."""

    label_names: ClassVar[list[str]] = ["top", "bottom"]

    def __init__(self, n: int, seed: int, noise: float) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = np.arange(n) % 2
        self.images = torch.randn(n, 1, 8, 8, generator=g) * noise
        self.images[np.arange(n), 0, np.where(self.labels == 0, 2, 5), :] += 1.0
        self.metadata = pd.DataFrame({"id": [f"s{i}" for i in range(n)]})
        self.fingerprint = f"stripes-{n}-{seed}-{noise}"

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"idx": i, "id": self.metadata.id[i], "img": self.images[i], "lab": int(self.labels[i])}


@dataclass(frozen=True)
class TinySettings:
    """The study's profile section."""

    epochs: int
    lr: float
    noise: float


class TinyStudy(Study[TinySettings]):
    """A fifth paper: does a hidden layer help a linear classifier on noisy stripes? (paired t-test by seed)"""

    name = "tiny"
    paper = "Tiny et al."
    settings_type = TinySettings
    metrics: ClassVar[dict[str, Metric]] = {
        "accuracy": Metric("test accuracy"), "loss": Metric("test loss", higher_is_better=False)}
    test = "paired_t"

    def arms(self) -> list[str]:
        return ["linear", "hidden"]

    def comparisons(self) -> list[Comparison]:
        return [Comparison("hidden", "linear")]

    def claim_specs(self) -> list[ClaimSpec]:
        return [ClaimSpec("a hidden layer raises accuracy", Comparison("hidden", "linear"), "accuracy", "0.9 vs 0.8")]

    def run_arm(self, arm: str, seed: int, scenario: str = "default") -> ArmRun:
        s = self.settings
        data = {"train": Stripes(32, 1, s.noise), "val": Stripes(16, 2, s.noise), "test": Stripes(16, 3, s.noise)}
        layers = [nn.Flatten(), nn.Linear(64, 2)] if arm == "linear" else [nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 2)]
        run = TrainingRun(self.name, {"arm": arm}, seed, self.profile, data,
                          TrainConfig(epochs=s.epochs, batch_size=8, lr=s.lr, progress=False),
                          lambda: Classifier(nn.Sequential(*layers)), Stripes.label_names)
        result = execute(self.context.store, run, self.context.device)
        values = {c: {"accuracy": result.metrics[c]["accuracy"], "loss": float(result.history["val_loss"].iloc[-1])}
                  for c in ("best", "last")}
        return ArmRun(arm, scenario, seed, [result], values, {"best": result.metrics["best_epoch"], "last": 2})


def _study(tmp_path) -> TinyStudy:
    settings = from_mapping(TinySettings, {"epochs": 2, "lr": 0.05, "noise": 0.8}, "test.yaml: tiny")
    return TinyStudy(StudyContext(RunStore(tmp_path / "store"), "smoke", "cpu"), settings)


def test_a_fifth_study_runs_through_the_engine_and_its_runs_are_stored_once(tmp_path, monkeypatch):
    study = _study(tmp_path)
    frame = study.run([0, 1, 2])
    assert list(frame.columns) == ["study", "arm", "scenario", "seed", "checkpoint", "metric", "value"]
    assert len(frame) == 2 * 3 * 2 * 2 and set(frame["study"]) == {"tiny"}
    assert sorted(p.parent.name for p in (tmp_path / "store" / "tiny").glob("*/seed*/manifest.json")) == [
        "seed0", "seed0", "seed1", "seed1", "seed2", "seed2"]
    again = _study(tmp_path)
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("a stored run was trained again"))
    pd.testing.assert_frame_equal(again.run([0, 1, 2]), frame)
    with pytest.raises(ValueError, match="recorded already"):
        again.record(again.runs[0])
    with pytest.raises(ValueError, match=r"unknown arm\(s\) \['deep'\]"):
        again.run([0], arms=["deep"])


def test_the_paired_test_verdict_and_claims_follow_scipy(tmp_path):
    study = _study(tmp_path)
    accuracy = {"linear": [0.60, 0.70, 0.65, 0.62], "hidden": [0.80, 0.85, 0.75, 0.90]}
    for arm, values in accuracy.items():
        for seed, value in enumerate(values):
            study.record(ArmRun(arm, "default", seed, [], {"best": {"accuracy": value, "loss": 1 - value}}))
    row = study.tests().set_index("metric").loc["accuracy"]
    expected = ttest_rel(accuracy["hidden"], accuracy["linear"])
    assert row["statistic"] == pytest.approx(expected.statistic) and row["p"] == pytest.approx(expected.pvalue)
    assert (row["median method"], row["median reference"], row["n"]) == (0.825, 0.635, 4)
    lines = study.verdict().split("\n")[1:]  # after the smoke caveat
    assert lines[0].startswith(f"hidden vs linear: test accuracy: median 0.635 -> 0.825; better (p = {expected.pvalue:.2g})")
    assert "test loss: median 0.365 -> 0.175; better" in lines[1]  # lower loss is better
    claim, = study.claims()
    assert (claim.paper, claim.paper_value, claim.n, claim.test) == ("Tiny et al.", "0.9 vs 0.8", 4, "paired t-test over seeds (scipy)")
    assert claim.checkpoint == "best checkpoint: lowest validation loss"
    summary = study.summary()
    assert summary.loc["hidden", "test accuracy"] == f"0.825 ± {np.std(accuracy['hidden'], ddof=1):.3f}"


def test_outcome_words():
    row = {"median method": 0.5, "median reference": 0.6, "n": 5, "p": 0.01}
    assert outcome(row, higher_is_better=True) == "median 0.600 -> 0.500; worse (p = 0.01)"
    assert outcome(row, higher_is_better=False) == "median 0.600 -> 0.500; better (p = 0.01)"
    assert outcome({**row, "p": 0.2}, True) == "median 0.600 -> 0.500; no significant difference (p = 0.2)"
    assert outcome({**row, "p": float("nan")}, True) == "median 0.600 -> 0.500; no test: no variation within the arms"
    assert outcome({**row, "n": 1}, True) == "median 0.600 -> 0.500; fewer than 2 seeds per arm, no test"
