"""The study engine: one template for the four papers (and a fifth), the way grad-cam's ``BaseCAM`` carries the
work and each CAM method overrides a small hook.

A :class:`Study` subclass declares its name, paper, typed settings (a dataclass read from the profile's section
by :func:`~attnlib.core.profiles.load_settings`), its metrics, its comparisons and the paper's claims, and
implements two hooks: :meth:`Study.arms` and :meth:`Study.run_arm` (one arm, one seed, one scenario: training
runs go through the one executor, :func:`~attnlib.engine.executor.execute`). The base then runs every arm for
every seed (:meth:`Study.run`), keeps one tidy frame of results (study, arm, scenario, seed, checkpoint, metric,
value), tests each comparison with the paper's test (:meth:`Study.tests`), and writes the verdict and the
claims of the results digest from those tests. Notebooks hold parameters, ``study.run(seeds)``,
``study.tables()``, ``study.figures()`` and prose.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy as np
import pandas as pd

from attnlib.core.profiles import load_settings, profile_name
from attnlib.core.progress import tqdm
from attnlib.engine.runstore import RunResult, RunStore
from attnlib.evaluation.stats import median_std, one_way_anova, paired_t_test, with_profile_caveat
from attnlib.reporting.digest import Claim

S = TypeVar("S")
StudyT = TypeVar("StudyT", bound="Study")
TestName = Literal["anova", "paired_t"]
#: The tidy results frame's columns, in order.
RESULT_COLUMNS = ("study", "arm", "scenario", "seed", "checkpoint", "metric", "value")
#: How each checkpoint was chosen, in words for tables and figures.
CHECKPOINT_WORDS = {"best": "lowest validation loss", "last": "last epoch"}
TEST_WORDS = {"anova": "one-way ANOVA over seeds (statsmodels)", "paired_t": "paired t-test over seeds (scipy)"}


@dataclass(frozen=True)
class StudyContext:
    """Where a study stores its runs, which profile it runs, on which device (None: CUDA when present)."""

    store: RunStore
    profile: str
    device: str | None = None

    @classmethod
    def create(
        cls, profile: str | None = None, results_folder: str | Path | None = None, device: str | None = None
    ) -> StudyContext:
        """The context of a notebook's parameters: the profile checked, the run store at ``results_folder``
        (None: ``runs/store``)."""
        return cls(RunStore(Path(results_folder) if results_folder is not None else None), profile_name(profile), device)


@dataclass(frozen=True)
class Metric:
    """A test metric as reports show it: its title and whether higher is better."""

    title: str
    higher_is_better: bool = True


@dataclass(frozen=True)
class Comparison:
    """The method arm and the reference arm a paper compares (e.g. GG-CAM vs its plain network)."""

    method: str
    reference: str

    def __str__(self) -> str:
        return f"{self.method} vs {self.reference}"


@dataclass(frozen=True)
class ClaimSpec:
    """A claim of the paper checked by a study: a comparison on a metric, with the paper's number."""

    claim: str
    comparison: Comparison
    metric: str
    paper_value: str = ""
    scenario: str = "default"
    checkpoint: str = "best"


@dataclass
class ArmRun:
    """What :meth:`Study.run_arm` returns: the stored runs it used and its test metrics per checkpoint."""

    arm: str
    scenario: str
    seed: int
    runs: list[RunResult]
    values: dict[str, dict[str, float]]  # checkpoint -> metric -> value
    epochs: dict[str, int] = field(default_factory=dict)  # checkpoint -> epoch it was taken at


class Study(ABC, Generic[S]):
    """Base of the paper studies (module docstring). Subclasses set the class attributes and two hooks."""

    #: run-store folder and profile section
    name: ClassVar[str]
    #: the paper's short name, as the results digest shows it
    paper: ClassVar[str]
    #: typed settings of the profile section ``name``
    settings_type: ClassVar[type]
    #: the report's metrics, in order
    metrics: ClassVar[Mapping[str, Metric]]
    #: the paper's statistical test between a method and its reference
    test: ClassVar[TestName] = "anova"
    #: the metrics the verdict speaks about (None: all of :attr:`metrics`)
    verdict_metrics: ClassVar[Sequence[str] | None] = None
    #: how each checkpoint of the results was chosen, in words for tables, figures and claims
    checkpoint_words: ClassVar[Mapping[str, str]] = CHECKPOINT_WORDS
    #: the verdict when no comparison was run
    no_comparison: ClassVar[str] = "No method was run beside its reference arm."

    def __init__(self, context: StudyContext, settings: S | None = None) -> None:
        self.context = context
        self.settings: S = settings if settings is not None else load_settings(
            self.settings_type, context.profile, self.name
        )
        self._runs: list[ArmRun] = []

    @classmethod
    def create(  # noqa: PYI019 (typing.Self needs Python 3.11; the package supports 3.10)
        cls: type[StudyT],
        profile: str | None = None,
        results_folder: str | Path | None = None,
        device: str | None = None,
        **options: Any,
    ) -> StudyT:
        """The study from a notebook's parameters (:meth:`StudyContext.create`); ``options`` go to ``__init__``."""
        return cls(StudyContext.create(profile, results_folder, device), **options)

    @property
    def profile(self) -> str:
        return self.context.profile

    def describe(self) -> str:
        """What this study runs, in one paragraph: profile, arms, scenarios, test."""
        scenarios = f", scenarios {self.scenarios()}" if self.scenarios() != ["default"] else ""
        return (f"{self.paper} in the {self.profile!r} profile: arms {self.arms()}{scenarios}; "
                f"{TEST_WORDS[self.test]} of {', '.join(map(str, self.comparisons())) or 'no comparison'}")

    # -- hooks ------------------------------------------------------------------------------------------

    @abstractmethod
    def arms(self) -> list[str]:
        """The arms this study runs, in report order."""

    def scenarios(self) -> list[str]:
        """The scenarios (data variants) each arm runs on; default one, ``"default"``."""
        return ["default"]

    @abstractmethod
    def run_arm(self, arm: str, seed: int, scenario: str = "default") -> ArmRun:
        """Train (or load) one arm for one seed in one scenario; its test metrics per checkpoint."""

    def comparisons(self) -> list[Comparison]:
        """The (method, reference) pairs the paper tests, among :meth:`arms`."""
        return []

    def claim_specs(self) -> list[ClaimSpec]:
        """The paper's claims this study checks (the results digest's rows)."""
        return []

    # -- the template -----------------------------------------------------------------------------------

    def run(
        self, seeds: Sequence[int], arms: Sequence[str] | None = None, scenarios: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Every arm (default :meth:`arms`) in every scenario (default :meth:`scenarios`) for every seed;
        finished runs are loaded from the store. Returns :meth:`results`."""
        chosen = list(arms) if arms is not None else self.arms()
        unknown = sorted(set(chosen) - set(self.arms()))
        if unknown:
            raise ValueError(f"{self.paper}: unknown arm(s) {unknown}; this profile's arms: {self.arms()}")
        where = list(scenarios) if scenarios is not None else self.scenarios()
        unknown = sorted(set(where) - set(self.scenarios()))
        if unknown:
            raise ValueError(f"{self.paper}: unknown scenario(s) {unknown}; this profile's: {self.scenarios()}")
        jobs = [(scenario, arm, int(seed)) for scenario in where for seed in seeds for arm in chosen]
        done = {(r.scenario, r.arm, r.seed) for r in self._runs}
        for scenario, arm, seed in tqdm(jobs, desc=f"{self.name}: runs", leave=False):
            if (scenario, arm, seed) not in done:
                self.record(self.run_arm(arm, seed, scenario))
        return self.results()

    def record(self, run: ArmRun) -> None:
        """Add one arm's run to the results (what :meth:`run` does with each; also for results computed
        elsewhere); a second run of the same scenario, arm and seed is an error."""
        if any((r.scenario, r.arm, r.seed) == (run.scenario, run.arm, run.seed) for r in self._runs):
            raise ValueError(f"{self.paper}: {run.arm!r} seed {run.seed} ({run.scenario}) is recorded already")
        self._runs.append(run)

    @property
    def runs(self) -> list[ArmRun]:
        """Every :class:`ArmRun` of :meth:`run` so far, in run order."""
        return list(self._runs)

    def results(self) -> pd.DataFrame:
        """One tidy frame: study, arm, scenario, seed, checkpoint, metric, value (one row per value)."""
        rows = [
            (self.name, r.arm, r.scenario, r.seed, checkpoint, metric, float(value))
            for r in self._runs for checkpoint, values in r.values.items() for metric, value in values.items()
        ]
        return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))

    def wide(self, checkpoint: str) -> pd.DataFrame:
        """One row per (scenario, arm, seed), one column per metric, of ``checkpoint``'s values."""
        frame = self.results()
        part = frame[frame["checkpoint"] == checkpoint]
        if part.empty:
            return pd.DataFrame(columns=["scenario", "arm", "seed"])
        table = part.pivot_table(index=["scenario", "arm", "seed"], columns="metric", values="value", aggfunc="first")
        return table.reset_index().rename_axis(columns=None)

    def checkpoints(self) -> list[str]:
        """The checkpoints the results hold, ``best`` before ``last``."""
        have = set(self.results()["checkpoint"])
        return [c for c in ("best", "last") if c in have] + sorted(have - {"best", "last"})

    def summary(self, checkpoint: str | None = None) -> pd.DataFrame:
        """Median ± std over seeds of every metric per scenario and arm (titles as columns)."""
        checkpoint = checkpoint or self.checkpoints()[0]
        wide = self.wide(checkpoint)
        metrics = [m for m in self.metrics if m in wide.columns]
        group = wide["scenario"] + " | " + wide["arm"] if len(self.scenarios()) > 1 else wide["arm"]
        table = median_std(wide.assign(group=group), metrics, "group").display
        table.columns = [self.metrics[m].title for m in metrics]
        order = [f"{s} | {a}" if len(self.scenarios()) > 1 else a for s in self.scenarios() for a in self.arms()]
        return table.reindex([g for g in order if g in table.index] + [g for g in table.index if g not in order])

    def tests(self, metrics: Sequence[str] | None = None) -> pd.DataFrame:
        """The paper's test (:attr:`test`) of every comparison, metric and checkpoint present, per scenario.

        Columns: scenario, comparison, metric, title, checkpoint, median method, median reference, n (seeds
        with both), test, statistic, p; a row only where both arms have the metric. The statistic and p are NaN
        with fewer than 2 seeds or when every value of both arms is equal.
        """
        rows = []
        for scenario in self.scenarios():
            for comparison in self.comparisons():
                for checkpoint in self.checkpoints():
                    wide = self.wide(checkpoint)
                    wide = wide[(wide["scenario"] == scenario) & wide["arm"].isin([comparison.method, comparison.reference])]
                    for metric in metrics if metrics is not None else self.metrics:
                        if metric not in wide.columns or wide.empty:
                            continue
                        have = set(wide.dropna(subset=[metric])["arm"])
                        if {comparison.method, comparison.reference} <= have:  # both arms measured it
                            rows.append(self._test_row(wide, scenario, comparison, metric, checkpoint))
        columns = ["scenario", "comparison", "metric", "title", "checkpoint", "median method", "median reference",
                   "n", "test", "statistic", "p"]
        return pd.DataFrame(rows, columns=columns)

    def _test_row(
        self, wide: pd.DataFrame, scenario: str, comparison: Comparison, metric: str, checkpoint: str
    ) -> dict[str, Any]:
        part = wide[["arm", "seed", metric]].dropna()
        by_arm = {arm: part[part["arm"] == arm].set_index("seed")[metric] for arm in (comparison.method, comparison.reference)}
        n = len(set(by_arm[comparison.method].index) & set(by_arm[comparison.reference].index))
        statistic = p = math.nan
        if n >= 2:
            if self.test == "paired_t":
                result = paired_t_test(part, metric, "arm", comparison.method, comparison.reference, "seed")
                statistic, p = result["t"], result["p"]
            else:
                result = one_way_anova(part, metric, "arm")
                statistic, p = result["F"], result["p"]
        return {
            "scenario": scenario, "comparison": str(comparison), "metric": metric,
            "title": self.metrics[metric].title if metric in self.metrics else metric, "checkpoint": checkpoint,
            "median method": float(by_arm[comparison.method].median()) if len(by_arm[comparison.method]) else math.nan,
            "median reference": float(by_arm[comparison.reference].median()) if len(by_arm[comparison.reference]) else math.nan,
            "n": n, "test": TEST_WORDS[self.test], "statistic": statistic, "p": p,
        }

    def verdict(
        self,
        checkpoint: str | None = None,
        metrics: Sequence[str] | None = None,
        scenario: str | None = None,
        alpha: float = 0.05,
    ) -> str:
        """One sentence per comparison and metric (default :attr:`verdict_metrics`), computed from :meth:`tests`:
        whether the method beat its reference at p < ``alpha`` (each metric's direction from :attr:`metrics`);
        after the smoke caveat in the smoke profile."""
        checkpoint = checkpoint or (self.checkpoints() or list(self.checkpoint_words))[0]
        scenario = scenario or self.scenarios()[0]
        tests = self.tests(metrics if metrics is not None else self.verdict_metrics)
        tests = tests[(tests["checkpoint"] == checkpoint) & (tests["scenario"] == scenario)]
        sentences = [self._sentence(row, checkpoint, alpha) for row in tests.to_dict("records")]
        text = "\n".join(sentences) if sentences else self.no_comparison
        return with_profile_caveat(text, self.profile)

    def _sentence(self, row: Mapping[str, Any], checkpoint: str, alpha: float) -> str:
        """One :meth:`tests` row in words (a study with a second test overrides this)."""
        return (f"{row['comparison']}: {row['title']}: {outcome(row, self._higher(row['metric']), alpha)} "
                f"({row['test']}, {self._checkpoint(checkpoint)}).")

    def _checkpoint(self, checkpoint: str) -> str:
        """``checkpoint`` with how it was chosen, e.g. "best checkpoint: lowest validation loss"."""
        words = self.checkpoint_words.get(checkpoint)
        return f"{checkpoint} checkpoint: {words}" if words else checkpoint

    def _higher(self, metric: str) -> bool:
        return self.metrics[metric].higher_is_better if metric in self.metrics else True

    def claims(self, alpha: float = 0.05) -> list[Claim]:
        """The results digest's rows: each of :meth:`claim_specs` with this run's numbers and test."""
        claims = []
        for spec in self.claim_specs():
            tests = self.tests([spec.metric])
            match = tests[(tests["scenario"] == spec.scenario) & (tests["checkpoint"] == spec.checkpoint)
                          & (tests["comparison"] == str(spec.comparison))]
            if match.empty:
                continue
            row = match.iloc[0].to_dict()
            wide = self.wide(spec.checkpoint)
            values = wide[(wide["scenario"] == spec.scenario) & (wide["arm"] == spec.comparison.method)][spec.metric]
            spread = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
            claims.append(Claim(
                paper=self.paper, claim=spec.claim, metric=row["title"], paper_value=spec.paper_value,
                value=row["median method"], reference=row["median reference"],
                spread=f"± {spread:.3f} (std over {len(values)} seeds)" if np.isfinite(spread) else f"{len(values)} seed(s)",
                n=int(row["n"]), test=row["test"], p=float(row["p"]),
                checkpoint=self._checkpoint(spec.checkpoint),
                outcome=outcome(row, self._higher(spec.metric), alpha),
            ))
        return claims

    def tables(self) -> dict[str, pd.DataFrame]:
        """The report's tables by title; subclasses add the paper's own."""
        return {f"test metrics, median ± std over seeds ({self._checkpoint(c)})": self.summary(c)
                for c in self.checkpoints()} | {"tests": self.tests()}


def outcome(row: Mapping[str, Any], higher_is_better: bool, alpha: float = 0.05) -> str:
    """A test row (:meth:`Study.tests`) in words: better / worse at p < alpha, no significant difference, no test."""
    method, reference, p = row["median method"], row["median reference"], row["p"]
    change = f"median {reference:.3f} -> {method:.3f}"
    if row["n"] < 2:
        return f"{change}; fewer than 2 seeds per arm, no test"
    if not np.isfinite(p):
        return f"{change}; no test: no variation within the arms"
    better = (method > reference) == higher_is_better and method != reference
    if p < alpha:
        return f"{change}; {'better' if better else 'worse'} (p = {p:.2g})"
    return f"{change}; no significant difference (p = {p:.2g})"
