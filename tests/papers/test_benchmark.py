"""The benchmark: every arm trains through the executor; the report's effects, Holm correction, controls and
findings checked by hand against scipy and statsmodels on hand-made results."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import ttest_rel
from statsmodels.stats.multitest import multipletests

import attnlib.models  # noqa: F401  (registers the backbones and heads)
from attnlib import UsageError
from attnlib.core.profiles import available_profiles, load_settings
from attnlib.core.settings import SettingsError
from attnlib.engine.study import ArmRun, StudyContext
from attnlib.engine.runstore import RunStore
from attnlib.papers.benchmark import ARMS, BASELINE, AttentionBenchmark, BenchmarkSettings
from attnlib.papers.benchmark_report import BenchmarkStudy, regimes_table


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLIB_HOME", str(tmp_path))
    return tmp_path


def _study(home, cls=AttentionBenchmark, **changes) -> AttentionBenchmark:
    settings = load_settings(BenchmarkSettings, "smoke", "benchmark")
    return cls(StudyContext(RunStore(home / "store"), "smoke"), replace(settings, **changes))


@pytest.mark.parametrize("profile", available_profiles())
def test_every_profile_loads_with_every_regime_checked(profile):
    settings = load_settings(BenchmarkSettings, profile, "benchmark")
    assert BASELINE in settings.arms and {settings.reference, settings.decoy, settings.misplaced} <= set(settings.regimes)
    assert all(settings.regime(name).name == name for name in settings.regimes)


def test_settings_errors_name_the_problem(home):
    settings = load_settings(BenchmarkSettings, "smoke", "benchmark")
    with pytest.raises(ValueError, match="arms must include"):
        replace(settings, arms=("baseline", "saliency magic"))
    with pytest.raises(ValueError, match="control regimes"):
        replace(settings, regimes={"reference": {}})
    with pytest.raises(SettingsError, match=r"benchmark.regimes.odd: unknown key 'cues'"):
        replace(settings, regimes={**settings.regimes, "odd": {"cues": 1.0}}).regime("odd")


def test_every_arm_trains_and_map_free_arms_see_the_same_data_whatever_the_maps(home):
    study = _study(home, arms=tuple(ARMS))
    values = {}
    for arm in ARMS:
        run = study.run_arm(arm, 0, "finegrained/decoy")
        assert set(run.values) == {"best", "last"}
        assert {"accuracy", "auc", "cue_following", "evidence_mass", "alignment"} <= set(run.values["best"])
        values[arm] = run
    for arm, uses_maps in ARMS.items():
        other = study.run_arm(arm, 0, "finegrained/decoy_misplaced")
        assert other.runs[0].spec.key != values[arm].runs[0].spec.key  # the regime's name is in the data identity
        if not uses_maps:  # the same images, split and seed: the same (deterministic) numbers
            assert other.values == values[arm].values, arm
    report = BenchmarkStudy(study.context, study.settings)
    for run in values.values():
        report.record(run)
    times = report.epoch_times().set_index("arm")
    assert set(times.index) == set(ARMS) and times.loc[BASELINE, "x baseline"] == 1.0
    assert (times["seconds per epoch"] > 0).all()
    gg_cam = values["gg-cam (budget curriculum)"].runs[0]
    assert gg_cam.spec.config["options"]["steps"] == 2 * 2  # 2 epochs of ceil(12 / 8) steps


def _record(study: BenchmarkStudy, arm: str, scenario: str, scores: list[float]) -> None:
    for seed, score in enumerate(scores):
        values = {"accuracy": score, "auc": score, "alignment": 0.1 * seed}
        study.record(ArmRun(arm, scenario, seed, [], {"best": values, "last": values}))


def test_effects_controls_and_findings_by_hand(home):
    study = _study(home, BenchmarkStudy, arms=(BASELINE, "rrr", "gala"))
    base_ref = [0.90, 0.92, 0.88, 0.91, 0.89]
    base_decoy = [0.50, 0.55, 0.45, 0.52, 0.48]
    rrr_decoy = [0.80, 0.86, 0.74, 0.83, 0.77]
    gala_misplaced = [0.70, 0.74, 0.66, 0.71, 0.69]
    _record(study, BASELINE, "finegrained/reference", base_ref)
    _record(study, "rrr", "finegrained/reference", base_ref[::-1])
    _record(study, BASELINE, "finegrained/decoy", base_decoy)
    _record(study, "rrr", "finegrained/decoy", rrr_decoy)
    _record(study, BASELINE, "finegrained/decoy_misplaced", base_decoy)
    _record(study, "gala", "finegrained/decoy_misplaced", gala_misplaced)
    effects = study.effects("best").set_index(["regime", "arm"])
    pairs = {("reference", "rrr"): (base_ref[::-1], base_ref), ("decoy", "rrr"): (rrr_decoy, base_decoy),
             ("decoy_misplaced", "gala"): (gala_misplaced, base_decoy)}
    p = {cell: ttest_rel(a, b).pvalue for cell, (a, b) in pairs.items()}
    holm = dict(zip(p, multipletests(list(p.values()), method="holm")[1], strict=True))
    for cell, (a, b) in pairs.items():
        row = effects.loc[cell]
        assert row["effect"] == pytest.approx(np.mean(np.subtract(a, b)))
        assert row["p"] == pytest.approx(p[cell]) and row["p_holm"] == pytest.approx(holm[cell])
        assert row["ci_low"] <= row["effect"] <= row["ci_high"]
    control = study.positive_control("best").iloc[0]
    fall = np.mean(base_ref) - np.mean(base_decoy)
    assert control["fall"] == pytest.approx(fall)
    assert control["recovered share"] == pytest.approx((np.mean(rrr_decoy) - np.mean(base_decoy)) / fall)
    assert control["passes"] == bool(holm[("decoy", "rrr")] < 0.05)
    negative = study.negative_control("best")
    assert negative["arm"].tolist() == ["gala"]
    assert bool(negative["gain without human attention"].iloc[0]) == bool(holm[("decoy_misplaced", "gala")] < 0.05)
    text = study.findings("best")
    assert "positive control passes" in text and "gala in decoy_misplaced" in text
    assert "not from human attention" in text
    assert set(study.figures("best")) == {"effects: finegrained", "accuracy vs alignment"}
    assert {"effects vs baseline", "positive control", "negative control"} <= {t.split(",")[0].split(" (")[0]
                                                                               for t in study.tables()}
    assert study.claims()[0].claim.startswith("finegrained: RRR recovers the decoy")


def test_a_failing_positive_control_says_nothing_is_a_finding(home):
    study = _study(home, BenchmarkStudy, arms=(BASELINE, "rrr"))
    _record(study, BASELINE, "finegrained/reference", [0.6, 0.62, 0.58])
    _record(study, BASELINE, "finegrained/decoy", [0.58, 0.6, 0.57])  # no fall: the decoy does not bite
    _record(study, "rrr", "finegrained/decoy", [0.59, 0.61, 0.59])
    assert not study.positive_control("best")["passes"].iloc[0]
    assert "positive control FAILS: nothing below is a finding" in study.findings("best")


def test_regimes_table_lists_every_knob(home):
    table = regimes_table(_study(home))
    assert list(table.index) == ["reference", "decoy", "decoy_misplaced"]
    assert table.loc["decoy_misplaced", "maps"] == "misplaced" and table.loc["decoy", "cue"] == 1.0


def test_real_data_is_refused_with_the_reason(home):
    with pytest.raises(UsageError, match="synthetic sources only"):
        BenchmarkStudy.create("smoke", home / "store", data_root="/data/cub")


def test_findings_mark_provisional_gains_and_arms_the_maps_never_changed(home):
    study = _study(home, BenchmarkStudy, arms=(BASELINE, "rrr", "gala", "abn"))
    base_decoy = [0.50, 0.55, 0.45, 0.52, 0.48]
    _record(study, BASELINE, "finegrained/reference", [0.52, 0.56, 0.47, 0.53, 0.50])  # no fall: control fails
    for regime in ("decoy", "decoy_misplaced"):
        _record(study, BASELINE, f"finegrained/{regime}", base_decoy)
        _record(study, "rrr", f"finegrained/{regime}", [v + (0.01 if regime == "decoy" else 0.02) for v in base_decoy])
        _record(study, "abn", f"finegrained/{regime}", [0.6, 0.7, 0.65, 0.62, 0.61])  # the same with either map
    _record(study, "gala", "finegrained/decoy", [v + 0.30 + 0.001 * i for i, v in enumerate(base_decoy)])
    _record(study, "gala", "finegrained/decoy_misplaced", [v - 0.01 * (i % 2) for i, v in enumerate(base_decoy)])
    assert study.effects("best").set_index(["regime", "arm"]).loc[("decoy", "gala"), "p_holm"] < 0.05
    text = study.findings("best")
    assert "positive control FAILS" in text
    assert "Under the decoy, gala gained significantly" in text and "provisional" in text
    assert "abn: every score of every seed is the same with clean and misplaced maps" in text
