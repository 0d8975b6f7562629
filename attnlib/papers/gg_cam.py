"""GG-CAM's study (paper 1, :class:`GGCAMStudy`): the networks compared, their data, training and evaluation.

Arms (the paper's four networks, the public code's variant and two balance schedules, issue 24):

- ``resnet`` / ``effnet``: the backbone with a CAM head trained by cross-entropy only (the CAM head
  gives the same logits as GAP + linear, so this is the standard network, and its maps can be scored);
- ``resnet+gg-cam`` / ``effnet+gg-cam``: the paper's method (Eq. 9-11);
- ``resnet+gg-cam (public code)``: the authors' public code's variant (class-0 map, raw map, channel-mean
  CAM, exp(log sigma) with its initialisations), run beside the paper's method so its effect is visible,
  with the public code's whole recipe from the profile's ``public_code`` section (:data:`PUBLIC_RECIPE`):
  its network and initialisation, learning rate, patience, reload of the best weights and Adam state at
  every lr drop, epoch and time budget, and its gaze maps (raw samples counted, B as OpenCV's kernel size,
  corner point-sampling);
- ``resnet+gg-cam (fixed weights)``: the paper's losses balanced by a fixed weight instead of Eq. 11,
  L_ce + w L_sm (the profile's ``fixed_weight``);
- ``resnet+gg-cam (budget curriculum)``: Eq. 11 from the sigma_sm init whose balance a scalar Adam
  simulation places at the profile's ``curriculum_fraction`` of the run's steps (:func:`budget_sigma_sm_init`),
  where Table 1's init would not balance within a short run at all.

The profile's ``gg_cam`` section names the backbone behind each family (ResNet-50 and EfficientNetV2-S
in ``paper``; smaller ones on the CPU), the schedule and the image scale.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from attnlib.core.device import default_device
from attnlib.data.real.egd_cxr import EGDCXR, EGDCXRSettings
from attnlib.data.synthetic.cxr import read_truth
from attnlib.data.synthetic.defaults import egd_cxr_paths, synthetic_egd_cxr
from attnlib.engine.executor import TrainingRun, execute
from attnlib.engine.study import ArmRun, ClaimSpec, Comparison, Metric, Study, StudyContext
from attnlib.engine.trainer import TrainConfig
from attnlib.evaluation.localisation import cam_localisation_evaluator
from attnlib.evaluation.stats import median_std
from attnlib.losses.gg_cam import curriculum_sigma_sm_init, history_balance, simulated_balance_step
from attnlib.methods.base import Method
from attnlib.methods.gg_cam import GGCAM, CAMClassifier, GGCAMConfig
from attnlib.models.cam import CAMNet, cam_grid
from attnlib.models.registry import create_model
from attnlib.reporting import plots

Schedule = Literal["table1", "public code", "fixed", "budget"]
#: Each network and how it balances its gaze term against cross-entropy: None (no gaze term), Eq. 11 from Table 1's
#: sigma init (``table1``) or the public code's, a fixed weight (``fixed``), or Eq. 11 from the init whose balance
#: falls at ``curriculum_fraction`` of the run (``budget``).
SCHEDULES: dict[str, Schedule | None] = {
    "resnet": None,
    "resnet+gg-cam": "table1",
    "effnet": None,
    "effnet+gg-cam": "table1",
    "resnet+gg-cam (public code)": "public code",
    "resnet+gg-cam (fixed weights)": "fixed",
    "resnet+gg-cam (budget curriculum)": "budget",
}
ARMS = tuple(SCHEDULES)
#: Synthetic scenarios: the default (no cue) and one whose tag position encodes the class in train/val.
SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "cue": {"cue": "marker_position", "cue_correlation_train": 0.9, "cue_correlation_val": 0.9},
}
#: The paper's Table 1: Adam, ReduceLROnPlateau (factor 0.1) on the validation loss with patience
#: ``patience``; GG-CAM rows add the initial sigmas of Eq. 11.
TABLE1: dict[str, dict[str, float]] = {
    "effnet+gg-cam": {"lr": 6e-3, "patience": 40, "sigma_sm_init": 1.4e-11, "sigma_ce_init": 1.0},
    "resnet+gg-cam": {"lr": 7e-3, "patience": 30, "sigma_sm_init": 2.0e-9, "sigma_ce_init": 1.0},
    "effnet": {"lr": 1e-3, "patience": 25},
    "resnet": {"lr": 1e-4, "patience": 50},
}
Pretrained = bool | Literal["auto"]


@dataclass(frozen=True)
class PublicRecipe:
    """The profile's ``gg_cam.public_code`` section: each one setting of the public-code arm (issue 22)."""

    backbone: str
    pretrained: Pretrained
    lr: float
    plateau_patience: int
    reload_best_on_lr_drop: bool
    epochs: int
    max_hours: float | None
    early_stop_patience: int | None
    amp: bool
    blur_units: Literal["std", "opencv_kernel"]
    resample: Literal["area", "public_corner"]
    gaze_source: Literal["fixations", "eye_gaze"]
    gaze_weight: Literal["duration", "count"]


@dataclass(frozen=True)
class GGCAMSettings:
    """The profile's ``gg_cam`` section.

    ``backbones``: the network behind each family (``resnet``, ``effnet``); ``networks``, ``scenarios``: what
    runs by default; ``scale``: of the DICOMs; ``table1``: Table 1's per-network rates and patiences (else
    ``lr`` and ``plateau_patience`` for every network); ``sigma_parameterisation`` and ``scalar_lr`` (None: the
    network's rate): how Eq. 11's sigmas train; ``pretrained``: ``auto`` loads cached weights when present.
    ``fixed_weight``: w of the fixed-weights arm (L_ce + w L_sm); ``curriculum_fraction``: where in the run
    (a fraction of its steps) the budget-curriculum arm's Eq. 11 balance is placed, computed with L_sm held at
    ``curriculum_l_sm``.
    """

    backbones: dict[str, str]
    networks: tuple[str, ...]
    scenarios: tuple[str, ...]
    scale: float
    epochs: int
    batch_size: int
    table1: bool
    lr: float | None
    plateau_patience: int | None
    early_stop_patience: int | None
    sigma_parameterisation: Literal["direct", "log"]
    scalar_lr: float | None
    pretrained: Pretrained
    public_code: PublicRecipe
    fixed_weight: float
    curriculum_fraction: float
    curriculum_l_sm: float

    def __post_init__(self) -> None:
        if set(self.backbones) != {"resnet", "effnet"}:
            raise ValueError(f"backbones must name exactly resnet and effnet, got {sorted(self.backbones)}")
        for name in (*self.networks, *self.scenarios):
            if name not in (*ARMS, *SCENARIOS):
                raise ValueError(f"unknown network or scenario {name!r}; networks {ARMS}, scenarios {tuple(SCENARIOS)}")
        if not self.table1 and (self.lr is None or self.plateau_patience is None):
            raise ValueError("without table1, lr and plateau_patience must be set")
        if not (self.fixed_weight >= 0 and 0 < self.curriculum_fraction <= 1 and self.curriculum_l_sm > 0):
            raise ValueError(
                "need fixed_weight >= 0, 0 < curriculum_fraction <= 1 and curriculum_l_sm > 0, got "
                f"{self.fixed_weight}, {self.curriculum_fraction} and {self.curriculum_l_sm}"
            )


#: The recipe's gaze-map settings (:class:`~attnlib.data.real.egd_cxr.EGDCXRSettings` fields) and the paper's values.
PUBLIC_GAZE = ("blur_units", "resample", "gaze_source", "gaze_weight")
GAZE_DEFAULTS = {k: getattr(EGDCXRSettings(), k) for k in PUBLIC_GAZE}


@dataclass(frozen=True)
class Arm:
    """One network of the comparison: its family, backbone, whether gaze supervises it, which variant, and how
    its two losses are balanced (:data:`SCHEDULES`)."""

    name: str
    family: str
    backbone: str
    gaze: bool
    public_code: bool
    schedule: Schedule | None

    @property
    def eq11(self) -> bool:
        """Whether Eq. 11 balances the arm's losses (every gaze-supervised arm but the fixed-weights one)."""
        return self.gaze and self.schedule != "fixed"

    @classmethod
    def parse(cls, name: str, settings: GGCAMSettings) -> Arm:
        """The arm ``name`` with its backbone: the family's from ``backbones``, the public-code arm's from
        ``public_code``."""
        if name not in ARMS:
            raise ValueError(f"unknown GG-CAM network {name!r}; choose from {ARMS}")
        family, schedule = name.split("+")[0], SCHEDULES[name]
        public = schedule == "public code"
        backbone = settings.public_code.backbone if public else settings.backbones[family]
        return cls(name, family, backbone, schedule is not None, public, schedule)


def train_config(arm: Arm, settings: GGCAMSettings) -> TrainConfig:
    """Adam with ReduceLROnPlateau: Table 1 in the paper profile, the profile's schedule otherwise; the
    public-code arm takes its recipe (rate, patience, reload on lr drop, epoch and time budget)."""
    if arm.public_code:
        recipe = settings.public_code
        return TrainConfig(
            epochs=recipe.epochs, batch_size=settings.batch_size, optimizer="adam", lr=recipe.lr,
            plateau_patience=recipe.plateau_patience, early_stop_patience=recipe.early_stop_patience,
            reload_best_on_lr_drop=recipe.reload_best_on_lr_drop, max_hours=recipe.max_hours,
            amp=recipe.amp, progress=False,
        )
    key = f"{arm.family}+gg-cam" if arm.gaze else arm.family
    lr = TABLE1[key]["lr"] if settings.table1 else settings.lr
    patience = TABLE1[key]["patience"] if settings.table1 else settings.plateau_patience
    return TrainConfig(
        epochs=settings.epochs, batch_size=settings.batch_size, optimizer="adam", lr=lr,
        plateau_patience=patience, early_stop_patience=settings.early_stop_patience, progress=False,
    )


def pretrained(arm: Arm, settings: GGCAMSettings) -> Pretrained:
    """How the arm's network starts: the recipe's for the public-code arm, the profile's otherwise."""
    return settings.public_code.pretrained if arm.public_code else settings.pretrained


def gaze_recipe(arm: Arm, settings: GGCAMSettings) -> dict[str, Any]:
    """The gaze-map settings the arm trains with: the public recipe's (:data:`PUBLIC_GAZE`), or none (the
    paper's defaults)."""
    return {k: getattr(settings.public_code, k) for k in PUBLIC_GAZE} if arm.public_code else {}


def method_config(arm: Arm, settings: GGCAMSettings, total_steps: int | None = None) -> GGCAMConfig | None:
    """The GG-CAM configuration of a gaze-supervised arm, else None: Table 1's sigma initialisation, the public
    code's, a fixed weight, or the budget-curriculum init (:func:`budget_sigma_sm_init`, which needs the run's
    ``total_steps``)."""
    if not arm.gaze:
        return None
    if arm.public_code:
        return GGCAMConfig.public_code(arm.family)
    config = GGCAMConfig(
        sigma_parameterisation=settings.sigma_parameterisation,
        sigma_sm_init=TABLE1[f"{arm.family}+gg-cam"]["sigma_sm_init"],
        sigma_ce_init=TABLE1[f"{arm.family}+gg-cam"]["sigma_ce_init"],
        scalar_lr=settings.scalar_lr,
    )
    if arm.schedule == "fixed":
        return replace(config, schedule="fixed", fixed_weight=settings.fixed_weight)
    if arm.schedule == "budget":
        if total_steps is None:
            raise ValueError(f"{arm.name!r} needs the run's total_steps to place its Eq. 11 balance")
        return replace(config, sigma_sm_init=budget_sigma_sm_init(arm, settings, total_steps))
    return config


def scalar_rate(arm: Arm, settings: GGCAMSettings) -> float:
    """The Adam rate of a gaze arm's sigmas and alpha: the profile's ``scalar_lr`` (not for the public-code arm,
    whose code trains them with the network), else the network's (:func:`train_config`)."""
    if settings.scalar_lr is not None and not arm.public_code:
        return settings.scalar_lr
    return train_config(arm, settings).lr


def total_steps(arm: Arm, settings: GGCAMSettings, n_train: int) -> int:
    """The arm's optimisation budget: epochs x ceil(n_train / batch size) (the training loader keeps the last,
    smaller batch)."""
    train = train_config(arm, settings)
    return train.epochs * math.ceil(n_train / train.batch_size)


def budget_sigma_sm_init(arm: Arm, settings: GGCAMSettings, total_steps: int) -> float:
    """The budget-curriculum arm's sigma_sm init: :func:`~attnlib.losses.gg_cam.curriculum_sigma_sm_init` at the
    profile's ``curriculum_fraction`` of ``total_steps``, with L_sm = ``curriculum_l_sm``, L_ce = ln 3 (a 3-class
    guess), both sigmas trained from Table 1's sigma_ce init at :func:`scalar_rate`, as GGCAM trains them."""
    return _curriculum_init(
        total_steps, settings.curriculum_fraction, settings.curriculum_l_sm, scalar_rate(arm, settings),
        settings.sigma_parameterisation, TABLE1[f"{arm.family}+gg-cam"]["sigma_ce_init"],
    )


@functools.lru_cache(maxsize=64)
def _curriculum_init(
    steps: int, fraction: float, l_sm: float, lr: float, parameterisation: Literal["direct", "log"], s_ce_init: float
) -> float:
    return curriculum_sigma_sm_init(
        steps, fraction, l_sm=l_sm, lr=lr, parameterisation=parameterisation, l_ce=math.log(len(LABELS)),
        s_ce_init=s_ce_init, train_s_ce=True,
    )


def predicted_balance(arm: Arm, settings: GGCAMSettings, total_steps: int) -> int | None:
    """The step where an Eq. 11 arm's weighted gaze term falls to the CE term in the scalar Adam simulation
    (:func:`~attnlib.losses.gg_cam.simulated_balance_step`: its sigma inits and rate, L_sm = ``curriculum_l_sm``
    and L_ce = ln 3 held constant, both sigmas trained), or None when not within ``total_steps``. The simulation
    keeps the rate constant: a plateau drop before the balance delays it."""
    config = method_config(arm, settings, total_steps)
    if config is None or config.schedule != "eq11":
        raise ValueError(f"{arm.name!r} has no Eq. 11 balance to predict")
    return _balance(
        settings.curriculum_l_sm, config.sigma_sm_init, scalar_rate(arm, settings), total_steps,
        config.sigma_parameterisation, config.sigma_ce_init,
    )


@functools.lru_cache(maxsize=64)
def _balance(
    l_sm: float, s_sm_init: float, lr: float, steps: int, parameterisation: Literal["direct", "log"], s_ce_init: float
) -> int | None:
    return simulated_balance_step(
        l_sm, s_sm_init, lr=lr, max_steps=steps, parameterisation=parameterisation, l_ce=math.log(len(LABELS)),
        s_ce_init=s_ce_init, train_s_ce=True,
    )


def build_model(
    arm: Arm, settings: GGCAMSettings, num_classes: int, start: Pretrained | None = None
) -> torch.nn.Module:
    """A fresh CAM network of this arm (``start`` None: the arm's :func:`pretrained`; weights only when present
    locally, else random)."""
    return create_model(
        arm.backbone, num_classes, in_chans=1, pretrained=pretrained(arm, settings) if start is None else start,
        channel_mean=arm.public_code, head="cam",
    )


def build_method(
    arm: Arm, settings: GGCAMSettings, num_classes: int, start: Pretrained | None = None,
    total_steps: int | None = None,
) -> Method:
    """A fresh network of this arm (:func:`build_model`) in its method (:func:`method_config`)."""
    model = build_model(arm, settings, num_classes, start)
    config = method_config(arm, settings, total_steps)
    return CAMClassifier(model) if config is None else GGCAM(model, config)


def load_splits(
    profile: str,
    scenario: str,
    data_root: str | Path | None,
    model: CAMNet,
    settings: GGCAMSettings,
    gaze: Mapping[str, Any] | None = None,
) -> dict[str, EGDCXR]:
    """Train/val/test views of EGD-CXR with heat maps on ``model``'s CAM grid; organ masks in test only.

    ``gaze``: the training maps' settings (:func:`gaze_recipe`); with ``resample="public_corner"`` the
    corner stride is one CNN cell in DICOM pixels. The test split keeps the paper's maps and area masks,
    so Eq. 12 scores every arm on the same masks.
    """
    if data_root is not None and scenario != "default":
        raise ValueError(f"scenario {scenario!r} exists only for the synthetic data (data_root is None)")
    paths = egd_cxr_paths(data_root, profile=profile, **SCENARIOS[scenario])
    data = EGDCXR(paths, settings=EGDCXRSettings(scale=settings.scale, masks=True))
    grid = cam_grid(model, data.image(0).shape)
    data = data.with_settings(hmap_size=grid)
    gaze = dict(gaze or {})
    if gaze.get("resample") == "public_corner":
        gaze.update(corner_pad=None, corner_stride=round(data.image(0).shape[-2] / grid[0] / settings.scale))
    training = data.with_settings(masks=False, **gaze)
    return {"train": training.select("train"), "val": training.select("val"), "test": data.select("test")}


#: The report's test metrics, in order, with their titles (both AUCs macro; Eq. 12 per class as the paper reports
#: it, pooled beside it; the public code's 3 x 3-neighbourhood rule as information).
METRICS: dict[str, Metric] = {
    "auc": Metric("AUC (one-vs-one, macro; the paper's)"),
    "auc_ovr": Metric("AUC (one-vs-rest, macro; the public code's log)"),
    "interpretability/cardiomegaly": Metric("interpretability, cardiomegaly -> heart (Eq. 12, peak cell; the paper's rule)"),
    "interpretability/pneumonia": Metric("interpretability, pneumonia -> lungs (Eq. 12, peak cell; the paper's rule)"),
    "interpretability": Metric("interpretability, both classes pooled (Eq. 12, peak cell)"),
    "interpretability_public/cardiomegaly": Metric(
        "interpretability, cardiomegaly -> heart (3 x 3 neighbourhood of the peak; the public code's rule)"
    ),
    "interpretability_public/pneumonia": Metric(
        "interpretability, pneumonia -> lungs (3 x 3 neighbourhood of the peak; the public code's rule)"
    ),
    "interpretability_public": Metric("interpretability, both classes pooled (3 x 3 neighbourhood of the peak)"),
    "accuracy": Metric("accuracy"),
}
#: Metrics the verdict speaks about: the paper's AUC and Eq. 12 per class under both rules.
VERDICT_METRICS = (
    "auc", "interpretability/cardiomegaly", "interpretability/pneumonia",
    "interpretability_public/cardiomegaly", "interpretability_public/pneumonia",
)
LABELS = ("normal", "cardiomegaly", "pneumonia")


class GGCAMStudy(Study[GGCAMSettings]):
    """GG-CAM (paper 1): each standard network vs its gaze-supervised version, one-way ANOVA over seeds.

    ``data_root`` None: the synthetic EGD-CXR of the profile (generated on first use), in each of
    ``scenarios``; else the real data's folder (holding ``egd-cxr/`` and ``mimic-cxr/``), default scenario only.
    """

    name = "gg_cam"
    paper = "GG-CAM"
    settings_type = GGCAMSettings
    metrics = METRICS
    test = "anova"
    verdict_metrics = VERDICT_METRICS

    def __init__(
        self,
        context: StudyContext,
        settings: GGCAMSettings | None = None,
        *,
        dataset: str = "egd-cxr",
        data_root: str | Path | None = None,
        networks: Sequence[str] | None = None,
        scenarios: Sequence[str] | None = None,
    ) -> None:
        if dataset != "egd-cxr":
            raise ValueError(f"GG-CAM is evaluated on EGD-CXR only, got dataset={dataset!r}")
        super().__init__(context, settings)
        self.data_root = data_root
        self._networks = list(networks or self.settings.networks)
        self._scenarios = ["default"] if data_root is not None else list(scenarios or self.settings.scenarios)
        for name in self._networks:
            Arm.parse(name, self.settings)
        unknown = sorted(set(self._scenarios) - set(SCENARIOS))
        if unknown:
            raise ValueError(f"unknown scenario(s) {unknown}; choose from {tuple(SCENARIOS)}")
        self._splits: dict[tuple[str, str], dict[str, EGDCXR]] = {}

    def arms(self) -> list[str]:
        return list(self._networks)

    def scenarios(self) -> list[str]:
        return list(self._scenarios)

    def arm(self, name: str) -> Arm:
        return Arm.parse(name, self.settings)

    def splits(self, scenario: str, arm: Arm) -> dict[str, EGDCXR]:
        """The arm's train/val/test views (:func:`load_splits`), loaded once per scenario and gaze recipe."""
        gaze = gaze_recipe(arm, self.settings)
        key = (scenario, repr(sorted(gaze.items())), arm.backbone)
        if key not in self._splits:
            model = build_model(arm, self.settings, len(LABELS), start=False)
            self._splits[key] = load_splits(self.profile, scenario, self.data_root, model, self.settings, gaze)
        return self._splits[key]

    def total_steps(self, arm: Arm, scenario: str) -> int:
        """The arm's optimisation budget in ``scenario``: :func:`total_steps` of its training split."""
        return total_steps(arm, self.settings, len(self.splits(scenario, arm)["train"]))

    def method_config(self, arm: Arm, scenario: str) -> GGCAMConfig | None:
        """:func:`method_config` of the arm in ``scenario`` (the budget-curriculum arm's init needs its steps)."""
        steps = self.total_steps(arm, scenario) if arm.schedule == "budget" else None
        return method_config(arm, self.settings, steps)

    def training_run(self, arm_name: str, seed: int, scenario: str) -> TrainingRun:
        """The arm's run for ``seed`` in ``scenario``: best weights kept, Eq. 12 scored on the test split."""
        arm, settings = self.arm(arm_name), self.settings
        splits = self.splits(scenario, arm)
        config = self.method_config(arm, scenario)
        steps = self.total_steps(arm, scenario)
        label_names = list(splits["train"].label_names)
        return TrainingRun(
            study=self.name, seed=seed, profile=self.profile, datasets=splits, train=train_config(arm, settings),
            config={"arm": arm.name, "scenario": scenario, "backbone": arm.backbone, "pretrained": pretrained(arm, settings),
                    "gg_cam": asdict(config) if config else None, "gaze": gaze_recipe(arm, settings)},
            build=lambda: build_method(arm, settings, len(label_names), total_steps=steps), label_names=label_names,
            evaluators={"localisation": cam_localisation_evaluator},
        )

    def run_arm(self, arm: str, seed: int, scenario: str = "default") -> ArmRun:
        result = execute(self.context.store, self.training_run(arm, seed, scenario), self.context.device)
        values = {c: {k: float(v) for k, v in result.metrics[c].items() if isinstance(v, (int, float))} for c in ("best", "last")}
        epochs = {"best": result.metrics["best_epoch"], "last": result.metrics["last_epoch"]}
        return ArmRun(arm, scenario, seed, [result], values, epochs)

    def comparisons(self) -> list[Comparison]:
        """Each gaze-supervised network vs its family's standard network."""
        gaze = [self.arm(name) for name in ARMS if SCHEDULES[name] is not None]
        return [Comparison(a.name, a.family) for a in gaze if a.name in self._networks and a.family in self._networks]

    def claim_specs(self) -> list[ClaimSpec]:
        reported = {"resnet+gg-cam": "0.721 -> 0.776 (p = 3.2e-4)", "effnet+gg-cam": "0.723 -> 0.801 (p = 5.5e-4)"}
        how = {"fixed": " with a fixed weight instead of Eq. 11",
               "budget": " with Eq. 11's curriculum fitted to the run"}
        specs = [ClaimSpec(f"gaze supervision{how.get(self.arm(c.method).schedule, '')} raises the test AUC of "
                           f"{c.reference}", c, "auc", reported.get(c.method, ""))
                 for c in self.comparisons()]
        specs += [ClaimSpec(f"gaze supervision{how.get(self.arm(c.method).schedule, '')} puts {c.reference}'s CAM "
                            f"peak in the {organ} more often", c, f"interpretability/{label}",
                            "higher (Fig. 3)" if c.method in reported else "")
                  for c in self.comparisons() if c.method != "resnet+gg-cam (public code)"
                  for label, organ in (("cardiomegaly", "heart"), ("pneumonia", "lungs"))]
        return specs

    # -- what the report shows ---------------------------------------------------------------------------

    def results_by_run(self) -> pd.DataFrame:
        """One row per run: scenario, arm, seed, the epochs of both checkpoints, AUC and Eq. 12 of both."""
        rows = []
        for r in self.runs:
            row = {"scenario": r.scenario, "arm": r.arm, "seed": r.seed, "best epoch": r.epochs["best"],
                   "last epoch": r.epochs["last"], "stopped by": r.runs[0].metrics.get("stop_reason")}
            for checkpoint in ("best", "last"):
                for metric in ("auc", "interpretability/cardiomegaly", "interpretability/pneumonia"):
                    row[f"{checkpoint}: {metric}"] = r.values[checkpoint].get(metric, np.nan)
            rows.append(row)
        return pd.DataFrame(rows)

    def hyperparameters(self) -> pd.DataFrame:
        """Table 1 as used: backbone and its start, optimiser, learning rates, patience, reload on lr drop,
        epoch and time budget, how the losses are balanced, sigma/alpha set-up, gaze-map recipe and the Eq. 12
        rule shown, per network (the budget-curriculum arm's init from the first scenario's steps)."""
        rows = []
        for name in self._networks:
            arm = self.arm(name)
            train, gg = train_config(arm, self.settings), self.method_config(arm, self._scenarios[0])
            eq11 = gg is not None and gg.schedule == "eq11"
            gaze = {**GAZE_DEFAULTS, **gaze_recipe(arm, self.settings)}
            rows.append({
                "network": name, "backbone": arm.backbone, "pretrained": pretrained(arm, self.settings),
                "optimizer": train.optimizer, "lr": train.lr, "plateau patience": train.plateau_patience,
                "reload best on lr drop": train.reload_best_on_lr_drop, "epochs": train.epochs,
                "max hours": train.max_hours, "early stop": train.early_stop_patience, "batch": train.batch_size,
                "precision (CUDA)": "bf16 autocast" if train.amp else "fp32",
                "variant": gg.variant if gg else "cross-entropy only",
                "balance": self.balance(arm),
                "sigma": gg.sigma_parameterisation if gg and eq11 else "",
                "sigma_sm init": gg.sigma_sm_init if gg and eq11 else np.nan,
                "sigma_ce init": gg.sigma_ce_init if gg and eq11 else np.nan,
                "scalar lr": scalar_rate(arm, self.settings) if gg else np.nan,
                **{f"gaze {k.removeprefix('gaze_')}": v for k, v in gaze.items()},
                "Eq. 12 rule": "peak; 3x3 neighbourhood shown too" if arm.public_code else "peak",
            })
        return pd.DataFrame(rows).set_index("network")

    def balance(self, arm: Arm) -> str:
        """How the arm balances its gaze term against cross-entropy, in words (empty without a gaze term)."""
        settings = self.settings
        if arm.schedule == "fixed":
            return f"fixed: L_ce + {settings.fixed_weight:g} L_sm"
        if arm.schedule == "budget":
            steps = self.total_steps(arm, self._scenarios[0])
            return (f"Eq. 11, sigma_sm init balancing at {settings.curriculum_fraction:g} of {steps} steps "
                    f"(L_sm = {settings.curriculum_l_sm:g})")
        if arm.schedule == "table1":
            return "Eq. 11 from Table 1's sigma inits"
        return "Eq. 11 from the public code's sigma inits" if arm.public_code else ""

    def curricula(self) -> pd.DataFrame:
        """Per Eq. 11 run: the step where the simulation predicts the weighted gaze term to fall to the CE term
        (:func:`predicted_balance`, None: not within the run) beside where it fell in training (:func:`curriculum`),
        and the mean L_sm measured until then (the simulation assumes ``curriculum_l_sm``)."""
        rows = []
        for r in self.runs:
            arm = self.arm(r.arm)
            if not arm.eq11:
                continue
            steps = self.total_steps(arm, r.scenario)
            per_epoch = steps // train_config(arm, self.settings).epochs
            rows.append({"scenario": r.scenario, "arm": r.arm, "seed": r.seed, "total_steps": steps,
                         "predicted_step": predicted_balance(arm, self.settings, steps),
                         **curriculum(r.runs[0].history, per_epoch)})
        columns = ["scenario", "arm", "seed", "total_steps", "predicted_step", "cross_step", "cross_epoch",
                   "gaze_dominated_epochs", "epochs", "l_sm"]
        return pd.DataFrame(rows, columns=columns).astype({"predicted_step": "Int64", "cross_step": "Int64",
                                                            "cross_epoch": "Int64"})

    def precision_recall(self, checkpoint: str = "best") -> pd.DataFrame:
        """Table 2: per-class precision and recall per network and scenario, ``median ± std`` over seeds."""
        metrics = {f"{kind}/{name}": Metric(f"{kind}/{name}") for name in LABELS for kind in ("precision", "recall")}
        wide = self.wide(checkpoint)
        group = wide["scenario"] + " | " + wide["arm"]
        return median_std(wide.assign(group=group), [m for m in metrics if m in wide.columns], "group").display

    def cue_following(self, checkpoint: str = "best") -> pd.DataFrame:
        """Per run of the cue scenario: how often test predictions equal the class the cue encodes vs the label.

        In the test split the cue is independent of the label, so a network that learned the cue follows it
        more often than the 1/3 expected by chance.
        """
        if "cue" not in self._scenarios:
            return pd.DataFrame(columns=["arm", "seed", "follows cue", "follows label"])
        truth = read_truth(scenario_root(self.profile, "cue"))
        cue = truth.set_index("dicom_id")["cue_position"]
        rows = []
        for r in self.runs:
            if r.scenario != "cue":
                continue
            pred = r.runs[0].predictions[checkpoint]
            cue_class = cue.reindex(pred["id"].astype(str)).to_numpy()
            rows.append({
                "arm": r.arm, "seed": r.seed,
                "follows cue": float(np.mean(pred["pred"].to_numpy() == cue_class)),
                "follows label": float(np.mean(pred["pred"].to_numpy() == pred["label"].to_numpy())),
            })
        return pd.DataFrame(rows)

    def tables(self) -> dict[str, pd.DataFrame]:
        tables = {"Table 1 as used": self.hyperparameters(), "runs": self.results_by_run(), **super().tables(),
                  "Table 2: precision and recall (best checkpoint)": self.precision_recall()}
        if "cue" in self._scenarios:
            tables["cue scenario: share of test predictions following the cue vs the label (median over seeds)"] = (
                self.cue_table())
        return tables

    def trained_model(self, run: ArmRun, checkpoint: str = "best") -> CAMNet:
        """The CAM network of a stored run with its ``best`` (validation) weights (the only ones stored)."""
        arm = self.arm(run.arm)
        method = build_method(arm, self.settings, len(LABELS), start=False,
                              total_steps=self.total_steps(arm, run.scenario))
        method.load_state_dict(run.runs[0].state_dict(checkpoint))
        return method.model

    def figure_views(self, seed: int, scenario: str | None = None, checkpoint: str = "best") -> dict[str, Any]:
        """What Fig. 2 and Table 3 show for one seed: Omega values per network and Psi / Omega_Y overlays."""
        scenario = scenario or self._scenarios[0]
        chosen = [r for r in self.runs if r.seed == seed and r.scenario == scenario]
        if not chosen:
            raise ValueError(f"no run of seed {seed} in scenario {scenario!r}; run it first")
        models = {r.arm: self.trained_model(r, checkpoint) for r in chosen}
        test = self.splits(scenario, self.arm(chosen[0].arm))["test"]
        indices = list(range(len(test)))
        examples = [int(np.flatnonzero(test.labels == c)[0]) for c in range(len(test.label_names)) if (test.labels == c).any()]
        omegas = {arm: cam_maps(model, test, indices, self.context.device) for arm, model in models.items()}
        images = [test.image(i) for i in examples]
        maps = [[test.heatmap(i, images[k].shape)] + [omegas[arm][i, test.labels[i]] for arm in models]
                for k, i in enumerate(examples)]
        epochs = ", ".join(f"{r.arm}: epoch {r.epochs[checkpoint]}" for r in chosen)
        return {
            "omega_values": omegas,
            "images": images,
            "maps": maps,
            "row_titles": [f"{test.label_names[test.labels[i]]} ({test.metadata.at[i, 'dicom_id'][:8]})" for i in examples],
            "col_titles": ["Psi (gaze)", *(f"Omega_Y {arm}" for arm in models)],
            "selection": f"seed {seed}, {checkpoint} checkpoint ({'lowest validation loss' if checkpoint == 'best' else 'last epoch'}): {epochs}",
        }

    def describe(self) -> str:
        backbones = ", ".join(f"{family}: {name}" for family, name in self.settings.backbones.items())
        paper = "" if self.profile == "paper" else " (the paper: ResNet-50 and EfficientNetV2-S)"
        return f"{super().describe()}.\nbackbones {backbones}{paper}; data: {self.data_root or 'synthetic EGD-CXR'}"

    def curriculum_figures(self, seed: int | None = None) -> list[Figure]:
        """Sigmas, alpha and the two weighted terms over training, per Eq. 11 run of ``seed`` (default the first
        run's) in the first scenario."""
        seed = self.runs[0].seed if seed is None else seed
        scenario = self._scenarios[0]
        return [plots.curriculum_curves(r.runs[0].history, title=f"{r.arm}, seed {r.seed}, {scenario}")
                for r in self.runs if r.seed == seed and r.scenario == scenario and self.arm(r.arm).eq11]

    def metric_figures(self, checkpoint: str = "best") -> list[Figure]:
        """Per scenario, the paper's measures and the public code's per network, one box per network."""
        panels = {"the paper's measures": ["auc", "interpretability/cardiomegaly", "interpretability/pneumonia"],
                  "the public code's measures": ["auc_ovr", "interpretability_public/cardiomegaly",
                                                 "interpretability_public/pneumonia"]}
        wide, figures = self.wide(checkpoint), []
        for scenario in self._scenarios:
            part = wide[wide["scenario"] == scenario]
            for what, names in panels.items():
                figures.append(plots.metrics_by_arm(
                    part, {m: METRICS[m].title for m in names}, arms=self._networks,
                    title=f"{what}, {self._checkpoint(checkpoint)}, {scenario}"))
        return figures

    def map_figures(self, seed: int | None = None, checkpoint: str = "best") -> list[Figure]:
        """Fig. 2 and Table 3 for ``seed`` (default the first run's): Omega's distribution on the test set and
        Psi beside Omega_Y on one test image per class; the titles say which weights."""
        seed = self.runs[0].seed if seed is None else seed
        views = self.figure_views(seed, checkpoint=checkpoint)
        return [
            plots.value_distribution(views["omega_values"], title=f"Omega values on the test set, {views['selection']}"),
            plots.map_grid(views["images"], views["maps"], row_titles=views["row_titles"],
                           col_titles=views["col_titles"], suptitle=views["selection"]),
        ]

    def figures(self) -> list[Figure]:
        """Every figure of the report: curricula, measures per network, maps."""
        return [*self.curriculum_figures(), *self.metric_figures(), *self.map_figures()]

    def cue_table(self) -> pd.DataFrame:
        """Median share of cue-scenario test predictions that follow the cue and the label, per network."""
        return self.cue_following().groupby("arm")[["follows cue", "follows label"]].median().reindex(self._networks)

    def curriculum_summary(self) -> str:
        """One sentence per Eq. 11 network, computed from :meth:`curricula`."""
        return curriculum_summary(self.curricula())


def curriculum(history: pd.DataFrame, steps_per_epoch: int) -> dict[str, Any]:
    """From one run's history: the epoch where the weighted gaze term first fell to the CE term and its last step
    (:func:`~attnlib.losses.gg_cam.history_balance`), the epochs it dominated, and the mean L_sm until then.

    ``gaze_dominated_epochs`` counts the epochs whose mean training ``term_sm`` exceeds ``term_ce``; ``l_sm`` is
    the mean training L_sm over the epochs up to the crossing (all epochs when none).
    """
    sm, ce = history["train_term_sm"].to_numpy(), history["train_term_ce"].to_numpy()
    crossed = history_balance(history, steps_per_epoch)
    until = history if crossed is None else history[history["epoch"] <= crossed[0]]
    return {
        "cross_epoch": None if crossed is None else crossed[0],
        "cross_step": None if crossed is None else crossed[1],
        "gaze_dominated_epochs": int((sm > ce).sum()),
        "epochs": len(history),
        "l_sm": float(until["train_sm"].mean()),
    }


def curriculum_summary(table: pd.DataFrame) -> str:
    """One sentence per Eq. 11 network, computed from :meth:`GGCAMStudy.curricula` rows of its runs: the epochs
    the gaze term dominated, where the terms crossed, and where the simulation predicted it."""
    sentences = []
    for (scenario, arm), part in table.groupby(["scenario", "arm"], sort=False):
        crossed = part.dropna(subset=["cross_epoch"])
        dominated = part["gaze_dominated_epochs"]
        span = f"{dominated.min()}-{dominated.max()}" if dominated.min() != dominated.max() else f"{dominated.min()}"
        epochs, steps_at = (sorted(int(v) for v in crossed[c]) for c in ("cross_epoch", "cross_step"))
        when = (f"the terms crossed in {len(crossed)} of {len(part)} runs (epochs {epochs}, by steps {steps_at})"
                if len(crossed) else "the terms never crossed")
        predicted, steps = part["predicted_step"].iloc[0], int(part["total_steps"].iloc[0])
        forecast = (f"predicted at step {int(predicted)} of {steps}" if pd.notna(predicted)
                    else f"predicted not within the run's {steps} steps")
        sentences.append(f"{arm} ({scenario}): the gaze term dominated {span} of {part['epochs'].max()} epochs; "
                         f"{when}; {forecast}.")
    return "\n".join(sentences)


@torch.no_grad()
def cam_maps(
    model: CAMNet, data: EGDCXR, indices: Sequence[int], device: str | None = None, batch_size: int = 16
) -> np.ndarray:
    """Omega (N x C x h x w) of ``model`` on items ``indices`` of ``data``, in eval mode, batch by batch."""
    dev = default_device(device)
    model = model.to(dev).eval()
    maps = []
    for start in range(0, len(indices), batch_size):
        imgs = torch.stack([data[i]["img"] for i in indices[start:start + batch_size]]).to(dev)
        maps.append(model(imgs)[1].float().cpu().numpy())
    return np.concatenate(maps)


def scenario_root(profile: str | None, scenario: str) -> Path:
    """Folder of the synthetic data of ``scenario`` (generated on first use)."""
    return synthetic_egd_cxr(profile, **SCENARIOS[scenario])
