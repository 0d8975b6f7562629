"""When does human attention help? One benchmark: every method x every synthetic source x named regimes
(:class:`AttentionBenchmark`: its runs; :mod:`attnlib.papers.benchmark_report`: its statistics, controls and figures,
kept apart so that a change of the report never retrains a run; notebook 06).

Methods (arms), each a :class:`~attnlib.methods.base.Method` on the same small network (``backbone``, default
``slim_resnet10`` at 32 px) and the same optimiser, budget and data per seed:

* ``baseline``: cross-entropy;
* ``gg-cam (fixed)``, ``gg-cam (table 1)``, ``gg-cam (budget curriculum)``: GG-CAM's selective MSE of the true
  class's CAM to the human map, balanced by fixed weights, by Eq. 11 from Table 1's initial sigma, or by Eq. 11
  from the initial sigma whose balance crossing falls at ``gg_cam.crossing_fraction`` of the run's steps;
* ``abn``: ABN, then fine-tuned with the map loss on the human maps (:class:`~attnlib.methods.abn.ABNStaged`);
* ``gala``: GALA-ResNet with the ClickMe map loss;
* ``pixel attention``: global pixel attention, one learned map without any human input (attention without
  humans, the control of "any attention at all");
* ``rrr``: Right for the Right Reasons (input-gradient penalty outside the human map);
* ``harmonizer``: the neural harmonizer (pyramid MSE between standardised saliency and the human map).

Each (source, regime) is a scenario; each arm is paired with ``baseline`` by seed (same data, split and, where the
architecture is the same, initial weights), tested with a paired t-test over seeds, Holm-corrected across every
cell of the grid, with the mean paired difference and its 95 % bootstrap interval (:meth:`effects`).

Controls. **Positive**: in the ``decoy`` regime (a cue fully predictive in training, random in test, clean maps)
the baseline must fall far below its ``reference`` accuracy and RRR with the correct maps must recover most of the
loss (Ross et al.'s Decoy MNIST); while that fails for a source, nothing the benchmark says about that source is a
finding (:meth:`positive_control`). **Negative**: misplaced maps (another image's map, turned) must not help; where
they do, the gain is not from human attention (:meth:`negative_control`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, ClassVar

import numpy as np

from attnlib.core.settings import from_mapping
from attnlib.data.benchmark.dataset import BenchmarkSplits, benchmark_splits
from attnlib.data.benchmark.regimes import Regime
from attnlib.data.benchmark.sources import SourceArrays, load_source
from attnlib.engine.executor import TrainingRun, execute
from attnlib.engine.study import ArmRun, ClaimSpec, Comparison, Metric, Study
from attnlib.engine.trainer import OptimizerName, TrainConfig
from attnlib.evaluation.attention_use import attention_use_evaluator
from attnlib.evaluation.metrics import spearman_per_image
from attnlib.losses.gg_cam import curriculum_sigma_sm_init
from attnlib.methods.abn import ABNStaged
from attnlib.methods.base import Classifier, Method
from attnlib.methods.gala import ClickMeSupervised
from attnlib.methods.gg_cam import GGCAM, GGCAMConfig
from attnlib.methods.global_attention import GlobalAttention, GlobalAttentionConfig
from attnlib.methods.saliency_supervision import NeuralHarmonizer, RightForRightReasons
from attnlib.models.cam import cam_grid
from attnlib.models.registry import create_model

BASELINE = "baseline"
#: Every arm the benchmark knows, in report order, and whether it uses the human maps.
ARMS: dict[str, bool] = {
    BASELINE: False,
    "gg-cam (fixed)": True,
    "gg-cam (table 1)": True,
    "gg-cam (budget curriculum)": True,
    "abn": True,
    "gala": True,
    "pixel attention": False,
    "rrr": True,
    "harmonizer": True,
}
#: The metric each source is judged on (the paper's: GG-CAM reports the AUC) and the report's metrics.
PRIMARY = {"cxr": "auc"}
METRICS: dict[str, Metric] = {
    "accuracy": Metric("test accuracy"),
    "auc": Metric("test AUC (Hand & Till)"),
    "cue_following": Metric("share of cue-following predictions", higher_is_better=False),
    "evidence_mass": Metric("saliency mass in the evidence"),
    "alignment": Metric("Spearman rho with held-out human maps"),
    "alignment_fraction": Metric("alignment / inter-rater ceiling"),
}
EVALUATED = ("cue_following", "evidence_mass", "evidence_area", "alignment", "alignment_fraction")


@dataclass(frozen=True)
class GGCAMArms:
    """GG-CAM's three balance schedules: ``fixed_weight`` (L_ce + w L_sm), Table 1's ``sigma_sm_init``, and the
    budget curriculum whose crossing falls at ``crossing_fraction`` of the steps for an L_sm of ``l_sm_estimate``.
    ``scalar_lr``: Adam's rate of the Eq. 11 scalars in both Eq. 11 arms (Adam moves log sigma by about that much
    per step, so at the network's 1e-3 a few hundred steps could hardly change the balance at all)."""

    fixed_weight: float
    sigma_sm_init: float
    crossing_fraction: float
    l_sm_estimate: float
    scalar_lr: float


@dataclass(frozen=True)
class BenchmarkSettings:
    """The profile's ``benchmark`` section.

    ``sources`` and ``regimes`` (name -> knobs of :class:`~attnlib.data.benchmark.regimes.Regime`) span the grid;
    ``arms`` the methods (:data:`ARMS`); ``image_size``, ``backbone``; one schedule for every arm: ``optimizer``,
    ``lr``, ``weight_decay``, ``batch_size``, ``epochs`` per budget (``short``, ``long``), ``max_train`` (the most training images a
    source gives, None: all), ``val_fraction`` (the validation share of the training images: the best checkpoint is
    the epoch of highest validation accuracy);
    per method: ``gg_cam``, ``abn_gamma`` and ``abn_fine_tune_fraction`` (the share of the epochs spent
    fine-tuning), ``gala_weight``, ``pixel_k`` / ``pixel_l1_weight`` / ``pixel_cutoff_fraction``, ``rrr_lambda`` /
    ``rrr_threshold``, ``harmonizer_weight``; the controls: ``reference``, ``decoy`` and ``misplaced`` regime names,
    ``min_drop`` (the baseline's least accuracy fall from reference to decoy) and ``min_recovery`` (the least share
    of that fall RRR must win back); ``progress``.
    """

    sources: tuple[str, ...]
    regimes: dict[str, dict[str, Any]]
    arms: tuple[str, ...]
    image_size: int
    backbone: str
    optimizer: OptimizerName
    lr: float
    weight_decay: float
    batch_size: int
    epochs: dict[str, int]
    val_fraction: float
    max_train: int | None
    gg_cam: GGCAMArms
    abn_gamma: float
    abn_fine_tune_fraction: float
    gala_weight: float
    pixel_k: int
    pixel_l1_weight: float
    pixel_cutoff_fraction: float
    rrr_lambda: float
    rrr_threshold: float
    harmonizer_weight: float
    reference: str
    decoy: str
    misplaced: str
    min_drop: float
    min_recovery: float
    progress: bool

    def __post_init__(self) -> None:
        unknown = sorted(set(self.arms) - set(ARMS))
        if unknown or BASELINE not in self.arms:
            raise ValueError(f"arms must include {BASELINE!r} and be among {list(ARMS)}; unknown: {unknown}")
        missing = {self.reference, self.decoy, self.misplaced} - set(self.regimes)
        if missing:
            raise ValueError(f"the control regimes {sorted(missing)} are not among regimes {sorted(self.regimes)}")
        if set(self.epochs) != {"short", "long"}:
            raise ValueError(f"epochs must give 'short' and 'long', got {sorted(self.epochs)}")

    def regime(self, name: str) -> Regime:
        """The named regime, its knobs checked (errors name the key)."""
        return from_mapping(Regime, {"name": name, **self.regimes[name]}, f"benchmark.regimes.{name}")


@cache
def _source(name: str, profile: str, size: int) -> SourceArrays:
    """Each source is loaded once per process (a few seconds; the CXR's DICOMs ~20 s)."""
    return load_source(name, profile, size)


@cache
def _cam_grid(backbone: str, image_size: int) -> tuple[int, int]:
    return cam_grid(create_model(backbone, 2, in_chans=1, pretrained=False, head="cam"), (image_size, image_size))


class AttentionBenchmark(Study[BenchmarkSettings]):
    """The benchmark (module docstring); scenarios are ``"<source>/<regime>"``."""

    name = "benchmark"
    paper = "Benchmark: when does human attention help"
    settings_type = BenchmarkSettings
    metrics = METRICS
    test = "paired_t"
    verdict_metrics = ("accuracy", "auc")
    checkpoint_words: ClassVar[Mapping[str, str]] = {"best": "highest validation accuracy", "last": "last epoch"}

    # -- grid ---------------------------------------------------------------------------------------------

    def arms(self) -> list[str]:
        return list(self.settings.arms)

    def scenarios(self) -> list[str]:
        return [f"{source}/{regime}" for source in self.settings.sources for regime in self.settings.regimes]

    def comparisons(self) -> list[Comparison]:
        return [Comparison(arm, BASELINE) for arm in self.arms() if arm != BASELINE]

    def source(self, name: str) -> SourceArrays:
        return _source(name, self.profile, self.settings.image_size)

    def primary(self, source: str) -> str:
        """The metric a source's cells are judged on: the AUC for the CXR (GG-CAM's), else accuracy."""
        return PRIMARY.get(source, "accuracy")

    def ceiling(self, source: str) -> float | None:
        """The source's inter-rater ceiling: mean Spearman rho between two disjoint halves of the raters over the
        test images (None where the data has one rater)."""
        data = self.source(source)
        if data.rater_maps is None:
            return None
        test = data.split == "test"
        rho = spearman_per_image(data.rater_maps[test, 0], data.rater_maps[test, 1])
        return float(np.nanmean(rho))

    def splits(self, source: str, regime: Regime, seed: int) -> BenchmarkSplits:
        return benchmark_splits(self.source(source), regime, seed, self.settings.val_fraction,
                                self.settings.max_train, self.cam_grid())

    def cam_grid(self) -> tuple[int, int]:
        """The CAM grid of ``backbone`` at ``image_size``: where GG-CAM compares its maps with the human maps."""
        s = self.settings
        return _cam_grid(s.backbone, s.image_size)

    # -- one run ------------------------------------------------------------------------------------------

    def run_arm(self, arm: str, seed: int, scenario: str = "default") -> ArmRun:
        source, regime_name = scenario.split("/", 1)
        regime = self.settings.regime(regime_name)
        if not ARMS[arm]:  # map-free arms get clean maps whatever the regime's: the same data, the same numbers
            regime = replace(regime, maps="clean")
        result = execute(self.context.store, self.training_run(arm, source, regime, seed), self.context.device)
        values = {c: {k: float(v) for k, v in result.metrics[c].items()
                      if k in ("accuracy", "auc", *EVALUATED) and v is not None} for c in ("best", "last")}
        epochs = {"best": int(result.metrics["best_epoch"]), "last": int(result.metrics["last_epoch"])}
        return ArmRun(arm, scenario, seed, [result], values, epochs)

    def training_run(self, arm: str, source: str, regime: Regime, seed: int) -> TrainingRun:
        """The run of ``arm`` on ``source`` under ``regime`` for ``seed``; its identity holds the regime's knobs and
        the arm's options (the regime's name is part of the datasets' fingerprints, so two regimes with the same
        knobs still make two runs)."""
        s = self.settings
        splits = self.splits(source, regime, seed)
        train = TrainConfig(
            epochs=s.epochs[regime.budget], batch_size=s.batch_size, optimizer=s.optimizer, lr=s.lr,
            weight_decay=s.weight_decay, plateau_patience=None, monitor="accuracy", progress=s.progress,
        )
        knobs = {k: v for k, v in regime.to_dict().items() if k != "name"}
        steps = train.epochs * math.ceil(len(splits.train) / train.batch_size)
        options = self.arm_options(arm, train.epochs, steps)
        data = self.source(source)
        return TrainingRun(
            study=self.name, config={"arm": arm, "source": source, "regime": knobs, "backbone": s.backbone,
                                     "image_size": s.image_size, "options": options},
            seed=seed, profile=self.profile, datasets=splits.as_dict(), train=train,
            build=lambda: self.build_method(arm, options, data, splits),
            label_names=data.label_names, checkpoint_every=None,
            evaluators={"attention": attention_use_evaluator(self.ceiling(source))},
            keep=(), scored=("best", "last"),
        )

    def arm_options(self, arm: str, epochs: int, steps: int) -> dict[str, Any]:
        """The options of ``arm`` for a run of ``epochs`` epochs and ``steps`` optimiser steps (in its identity)."""
        s = self.settings
        g = s.gg_cam
        options: dict[str, dict[str, Any]] = {
            BASELINE: {},
            "gg-cam (fixed)": {"schedule": "fixed", "fixed_weight": g.fixed_weight},
            "gg-cam (table 1)": {"schedule": "eq11", "sigma_sm_init": g.sigma_sm_init, "scalar_lr": g.scalar_lr},
            "gg-cam (budget curriculum)": {"schedule": "eq11", "crossing_fraction": g.crossing_fraction,
                                           "l_sm_estimate": g.l_sm_estimate, "steps": steps,
                                           "scalar_lr": g.scalar_lr},
            "abn": {"gamma": s.abn_gamma,
                    "fine_tune_from": max(1, epochs - round(s.abn_fine_tune_fraction * epochs)) + 1},
            "gala": {"weight": s.gala_weight},
            "pixel attention": {"k": s.pixel_k, "l1_weight": s.pixel_l1_weight,
                                "cutoff_epoch": round(s.pixel_cutoff_fraction * epochs)},
            "rrr": {"lambda_1": s.rrr_lambda, "threshold": s.rrr_threshold},
            "harmonizer": {"weight": s.harmonizer_weight},
        }
        return options[arm]

    def build_method(self, arm: str, options: Mapping[str, Any], data: SourceArrays,
                     splits: BenchmarkSplits) -> Method:
        """The method of ``arm`` with ``options`` (:meth:`arm_options`) on a fresh network."""
        s = self.settings
        channels = data.images.shape[1]

        def network(head: str | None = None) -> Any:
            return create_model(s.backbone, data.n_classes, in_chans=channels, pretrained=False, head=head)

        builders: dict[str, Callable[[], Method]] = {
            BASELINE: lambda: Classifier(network()),
            "abn": lambda: ABNStaged(network("abn"), options.get("gamma", 0.0), options.get("fine_tune_from", 1)),
            "gala": lambda: ClickMeSupervised(network("gala"), weight=options.get("weight")),
            "pixel attention": lambda: GlobalAttention(network(), splits.train.images, GlobalAttentionConfig(
                k=options.get("k", 32), l1_weight=options.get("l1_weight", 0.0),
                cutoff_epoch=options.get("cutoff_epoch", 0))),
            "rrr": lambda: RightForRightReasons(network(), options.get("lambda_1", 0.0),
                                                options.get("threshold", 0.1)),
            "harmonizer": lambda: NeuralHarmonizer(network(), options.get("weight", 0.0)),
        }
        if arm.startswith("gg-cam"):
            return GGCAM(network("cam"), self.gg_cam_config(options, data.n_classes))
        return builders[arm]()

    def gg_cam_config(self, options: Mapping[str, Any], n_classes: int) -> GGCAMConfig:
        """GG-CAM's config of one schedule (``options`` of :meth:`arm_options`)."""
        if options["schedule"] == "fixed":
            return GGCAMConfig(schedule="fixed", fixed_weight=options["fixed_weight"])
        if "sigma_sm_init" in options:
            return GGCAMConfig(sigma_sm_init=options["sigma_sm_init"], scalar_lr=options["scalar_lr"])
        init = curriculum_sigma_sm_init(options["steps"], options["crossing_fraction"],
                                        l_sm=options["l_sm_estimate"], lr=options["scalar_lr"],
                                        l_ce=math.log(n_classes), train_s_ce=True)
        return GGCAMConfig(sigma_sm_init=init, scalar_lr=options["scalar_lr"])

    def claim_specs(self) -> list[ClaimSpec]:
        s = self.settings
        return [ClaimSpec(f"{source}: RRR recovers the decoy (positive control)", Comparison("rrr", BASELINE),
                          self.primary(source), "Ross et al.: near-clean accuracy", f"{source}/{s.decoy}")
                for source in s.sources if "rrr" in s.arms]

    def describe(self) -> str:
        s = self.settings
        regimes = "; ".join(f"{name}: {self.settings.regime(name).knobs}" for name in s.regimes)
        return (f"{self.paper} ({self.profile!r} profile): arms {list(s.arms)} on {s.backbone} at {s.image_size} px, "
                f"{s.optimizer} lr {s.lr}, batch {s.batch_size}, epochs {s.epochs}; sources {list(s.sources)}; "
                f"regimes: {regimes}. Each arm is paired with {BASELINE!r} by seed; paired t-tests, Holm over every "
                "cell, 95 % bootstrap intervals of the mean paired difference.")

