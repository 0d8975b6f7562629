"""Global spatial attention's study (paper 2, :class:`GlobalAttentionStudy`): the networks, their data and
the paper's epoch selection.

Arms (names as in the tables):

- ``<backbone>`` (vanilla CNN), ``<backbone>+attention`` (the pixel CNN's map M in front of the CNN,
  :class:`~attnlib.methods.global_attention.GlobalAttention`), ``<backbone>+l1`` (a free per-pixel
  weight with an L1 penalty, :class:`~attnlib.methods.global_attention.PixelWeightL1`);
- ``vgg_att3``, ``resattnet56``, ``resattnet92``: local-attention networks trained as plain classifiers;
- ``lr``, ``svm``: logistic regression and SVM on raw pixels (scikit-learn, grid-searched by CV).

Protocol (methods.md section 2): the paper's 80/20 train/test split; for every grid point, a k-fold
cross-validation on the training set records validation accuracy per epoch; the grid point with the
highest mean of its ``top_epochs`` best mean-CV accuracies wins, and those epochs are selected. A final
fit on the whole training set scores the test set after every epoch; the reported figure is the mean
(std) of the test accuracy at the selected epochs. ``selection="holdout"`` (the CPU sensitivity
study) replaces the k folds and the final fit by one fit on folds 2..k, validated on fold 1, whose
own test curve is read at its selected epochs.

Every fit is a run of the shared run store (study ``global_attention``), so a sweep's report pass and
a rerun load finished fits instead of training them again.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from torch import Tensor

from attnlib.core.profiles import load_settings
from attnlib.data.arrays import ArrayDataset
from attnlib.data.layouts import resolve_dataset
from attnlib.data.real.idrid import IDRiD, IDRiDSettings
from attnlib.data.real.jaffe import JAFFE, JAFFESettings
from attnlib.data.splits import balanced_split, stratified_folds
from attnlib.data.synthetic.defaults import synthetic_structured
from attnlib.data.synthetic.structured import StructuredDataset, map_region_auc
from attnlib.engine.executor import Trained, TrainingRun, data_fingerprint, execute
from attnlib.engine.runstore import RunResult, RunSpec
from attnlib.engine.study import ArmRun, ClaimSpec, Comparison, Metric, Study, StudyContext
from attnlib.engine.trainer import TrainConfig
from attnlib.evaluation.stats import median_std, t_test
from attnlib.methods.base import Classifier, Method
from attnlib.methods.global_attention import GlobalAttention, GlobalAttentionConfig, PixelWeightL1
from attnlib.models.pixel_attention import pixel_cnn_parameter_count
from attnlib.models.registry import create_model, list_models
from attnlib.reporting import plots

DATASETS = ("synthetic", "idrid-dr", "idrid-me", "jaffe")
#: The dataset a ``data_root`` of each layout gives when ``dataset`` is not set (macular edema: ``idrid-me``).
LAYOUT_DATASETS = {"synthetic": "synthetic", "idrid": "idrid-dr", "jaffe": "jaffe"}
VARIANTS = ("vanilla", "attention", "l1")
LOCAL_ATTENTION = ("vgg_att3", "resattnet56", "resattnet92")
SKLEARN = ("lr", "svm")
SUFFIX = {"vanilla": "", "attention": "+attention", "l1": "+l1"}
#: Grid keys each kind of arm searches (``weight_decay`` is the optimiser's; ``pixel_l1_weight`` the L1 baseline's).
GRID_KEYS = {
    "vanilla": ("weight_decay",),
    "local": ("weight_decay",),
    "attention": ("weight_decay", "k", "l1_weight"),
    "l1": ("weight_decay", "pixel_l1_weight"),
}
Selection = Literal["cv", "holdout"]
#: Where each selection picks the epochs, in words for figure titles.
SELECTIONS = {"cv": "the CV folds", "holdout": "one validation fold (holdout)"}
Variant = Literal["vanilla", "attention", "l1"]
Baseline = Literal["lr", "svm", "vgg_att3", "resattnet56", "resattnet92"]
#: The checkpoint of every result: the epochs the validation folds selected (module docstring); for the
#: scikit-learn arms, the grid point their CV selected.
SELECTED = "selected epochs"
#: The paper's Table 2 (test accuracy in %, mean over the 30 selected epochs): vanilla -> with attention.
PAPER_TABLE2 = {
    "idrid-dr": {"googlenet": (52.46, 57.21), "vgg16": (56.96, 66.41), "resnet152": (56.78, 66.17),
                 "densenet161": (59.84, 62.88)},
    "idrid-me": {"googlenet": (80.49, 81.36), "vgg16": (80.23, 83.59), "resnet152": (79.06, 82.13),
                 "densenet161": (80.12, 82.07)},
    "jaffe": {"googlenet": (78.94, 82.64), "vgg16": (81.78, 84.26), "resnet152": (77.83, 80.39),
              "densenet161": (79.39, 84.88)},
}
#: The paper's L1 baseline (VGG-16 + L1, %), the only one it reports.
PAPER_L1 = {"idrid-dr": 57.99, "idrid-me": 78.93, "jaffe": 84.88}


@dataclass(frozen=True)
class Grid:
    """The CNN arms' search grid: ``weight_decay`` (every CNN arm), K and lambda (``k``, ``l1_weight``:
    ``+attention``), the L1 baseline's coefficient (``pixel_l1_weight``: ``+l1``)."""

    weight_decay: tuple[float, ...]
    k: tuple[int, ...]
    l1_weight: tuple[float, ...]
    pixel_l1_weight: tuple[float, ...]


@dataclass(frozen=True)
class SklearnGrid:
    """The scikit-learn baselines' search grid: C of logistic regression, C and kernel of the SVM."""

    lr_C: tuple[float, ...]
    svm_C: tuple[float, ...]
    svm_kernel: tuple[Literal["linear", "poly", "rbf", "sigmoid"], ...]


@dataclass(frozen=True)
class SensitivitySettings:
    """Fig. 7: ``backbone+attention`` with one of K, lambda, E at a time set to each listed value, for
    ``seeds``, under ``selection``."""

    seeds: tuple[int, ...]
    backbone: str
    selection: Selection
    k: tuple[int, ...]
    l1_weight: tuple[float, ...]
    cutoff_epoch: tuple[int, ...]


@dataclass(frozen=True)
class GlobalAttentionSettings:
    """The profile's ``global_attention`` section.

    The arms are every backbone with every variant, then the baselines; ``image_size``: the square size
    the real data is read at; Adam at ``lr`` for ``epochs`` (the pixel CNN trains up to ``cutoff_epoch``);
    ``cv_folds``-fold CV selects the ``top_epochs`` best epochs; ``checkpoint_every``: epochs between
    resume checkpoints (None: none); ``pretrained``: ``auto`` loads cached weights when present.
    """

    image_size: int
    backbones: tuple[str, ...]
    variants: tuple[Variant, ...]
    baselines: tuple[Baseline, ...]
    epochs: int
    cutoff_epoch: int
    batch_size: int
    lr: float
    grid: Grid
    cv_folds: int
    checkpoint_every: int | None
    top_epochs: int
    sklearn_grid: SklearnGrid
    sensitivity: SensitivitySettings
    pretrained: bool | Literal["auto"]

    def __post_init__(self) -> None:
        if self.top_epochs > self.epochs:
            raise ValueError(f"top_epochs ({self.top_epochs}) exceeds epochs ({self.epochs})")

    def arm_names(self) -> list[str]:
        """The profile's arms: every backbone with every variant, then the baselines."""
        return [f"{b}{SUFFIX[v]}" for b in self.backbones for v in self.variants] + list(self.baselines)


@dataclass(frozen=True)
class Arm:
    """One row of Table 2: its name, the kind of model, the image CNN (None for scikit-learn)."""

    name: str
    variant: str
    backbone: str | None

    @classmethod
    def parse(cls, name: str) -> Arm:
        """``lr``/``svm``, a local-attention network, ``<backbone>`` or ``<backbone>+attention|l1``."""
        if name in SKLEARN:
            return cls(name, name, None)
        if name in LOCAL_ATTENTION:
            return cls(name, "local", name)
        backbone, _, variant = name.partition("+")
        variant = variant or "vanilla"
        if variant not in VARIANTS or backbone not in list_models() or backbone in LOCAL_ATTENTION:
            raise ValueError(
                f"unknown global-attention arm {name!r}: use {SKLEARN}, {LOCAL_ATTENTION}, or a backbone "
                f"of {list_models()} optionally followed by '+attention' or '+l1'"
            )
        return cls(name, variant, backbone)


@dataclass
class StudyData:
    """The 80/20 split of one dataset as in-memory sets, and what is known about it."""

    name: str
    train: ArrayDataset
    test: ArrayDataset
    description: str
    region_mask: np.ndarray | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the networks see."""
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]


def data_options(dataset: str | None, data_root: str | Path | None, synthetic: Mapping[str, Any]) -> str:
    """The dataset that ``dataset`` / ``data_root`` / ``synthetic`` knobs name (:func:`load_data`); ValueError
    for an unknown dataset, knobs outside the generated synthetic default, or real data without a folder."""
    dataset = resolve_dataset(dataset, data_root, LAYOUT_DATASETS, "global-attention")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    if synthetic and (dataset != "synthetic" or data_root is not None):
        raise ValueError(f"synthetic knobs {sorted(synthetic)} apply only to the generated synthetic default")
    if dataset != "synthetic" and data_root is None:
        raise ValueError(f"dataset {dataset!r} needs data_root (the real data's folder)")
    return dataset


def load_data(
    dataset: str | None = None,
    data_root: str | Path | None = None,
    profile: str | None = None,
    *,
    image_size: int | None = None,
    **synthetic: Any,
) -> StudyData:
    """The 80/20 split of ``dataset`` at ``image_size`` (None: the profile's), decoded into memory.

    ``dataset`` None: ``synthetic`` without ``data_root``, else told from the folder's layout
    (:func:`~attnlib.data.layouts.resolve_dataset`; IDRiD gives ``idrid-dr``, the paper's first task).

    ``synthetic``: the structured synthetic default (``data_root`` None: the profile's, generated on
    first use, with ``synthetic`` knobs as overrides; else a folder written by ``generate_structured``);
    its own label-balanced 80/20 split. ``idrid-dr`` / ``idrid-me``: IDRiD Disease Grading, retinopathy
    grade or macular-edema risk, the official train/test sets (413 / 103, i.e. 80/20), the paper's
    preprocessing at ``image_size``. ``jaffe``: label-balanced 80/20 split (split seed 0) of the rated images.
    """
    dataset = data_options(dataset, data_root, synthetic)
    size = image_size if image_size is not None else load_settings(
        GlobalAttentionSettings, profile, GlobalAttentionStudy.name).image_size
    if dataset == "synthetic":
        root = Path(data_root) if data_root is not None else synthetic_structured(profile, **synthetic)
        train = StructuredDataset(root, "train")
        test = StructuredDataset(root, "test")
        cfg = train.config
        return StudyData(
            dataset,
            ArrayDataset.from_dataset(train, "synthetic train"),
            ArrayDataset.from_dataset(test, "synthetic test"),
            f"synthetic structured set {root.name}: {cfg.n_images} images {cfg.size}x{cfg.size}x{cfg.channels}, "
            f"{cfg.n_classes} classes, evidence strength {cfg.evidence_strength} in a {cfg.region_size}-px region"
            + (f", cue (train correlation {cfg.cue_correlation_train})" if cfg.cue else ", no cue"),
            train.region_mask,
        )
    assert data_root is not None  # data_options checked it
    if dataset.startswith("idrid"):
        task = "retinopathy" if dataset == "idrid-dr" else "macular_edema"
        settings = IDRiDSettings(size=(size, size))
        sets = {split: ArrayDataset.from_dataset(IDRiD(Path(data_root), split, task, settings), f"IDRiD {split}")
                for split in ("train", "test")}
        return StudyData(dataset, sets["train"], sets["test"],
                         f"IDRiD Disease Grading ({task}), official split, {size}x{size}, paper preprocessing")
    jaffe = ArrayDataset.from_dataset(JAFFE(Path(data_root), JAFFESettings(image_size=(size, size))), "JAFFE")
    split = balanced_split(jaffe.ids, jaffe.labels.tolist(), seed=0, fractions=(0.8, 0.0, 0.2))["split"].to_numpy()
    return StudyData(
        dataset, jaffe.subset(np.flatnonzero(split == "train")), jaffe.subset(np.flatnonzero(split == "test")),
        f"JAFFE, label-balanced 80/20 split (seed 0), {size}x{size} grey",
    )


def build_method(arm: Arm, point: Mapping[str, Any], train: ArrayDataset, pretrained: Any = "auto") -> Method:
    """A fresh network of ``arm`` for the training set ``train`` (the pixel CNN sees all of it)."""
    channels = train.images.shape[1]
    model = create_model(arm.backbone, len(train.label_names), in_chans=channels, pretrained=pretrained)
    if arm.variant == "attention":
        config = GlobalAttentionConfig(k=point["k"], l1_weight=point["l1_weight"], cutoff_epoch=point["cutoff_epoch"])
        return GlobalAttention(model, train.images, config)
    if arm.variant == "l1":
        return PixelWeightL1(model, tuple(train.images.shape[-2:]), l1_weight=point["pixel_l1_weight"])
    return Classifier(model)


def weight_map(method: Method) -> Tensor | None:
    """The input weight map of an attention or L1 arm (H x W, CPU, no gradient); None for the others."""
    if isinstance(method, GlobalAttention):
        return method.weight_map().float().cpu()
    if isinstance(method, PixelWeightL1):
        return method.pixel_weight.weight.detach().float().cpu().clone()
    return None


def top_epochs(curve: pd.Series, n: int) -> list[int]:
    """The ``n`` epochs with the highest values of ``curve`` (index = epoch), earliest first on ties, sorted."""
    order = sorted(curve.index, key=lambda epoch: (-curve[epoch], epoch))
    return sorted(int(e) for e in order[:n])


def selected_values(test_accuracy: np.ndarray, final: RunResult) -> dict[str, dict[str, float]]:
    """An arm's metric values under :data:`SELECTED`: the paper's figure (``accuracy``, the mean test
    accuracy at the selected epochs) and, where the final fit has them, the map's region AUCs."""
    auc = final.metrics.get("map_region_auc", {})
    return {SELECTED: {"accuracy": float(np.mean(test_accuracy)),
                       **{f"map_region_auc/{when}": float(value) for when, value in auc.items()}}}


@dataclass(kw_only=True)
class ProtocolRun(ArmRun):
    """The outcome of the protocol for one arm and seed (an :class:`~attnlib.engine.study.ArmRun` whose
    ``values`` hold the checkpoint :data:`SELECTED`; ``runs``: every fit it used).

    ``selected_epochs``: the epochs chosen on the validation folds (empty for scikit-learn arms);
    ``test_accuracy``: the final fit's test accuracy at those epochs (one value for scikit-learn);
    ``cv_curve``: mean validation accuracy per epoch of the chosen grid point; ``final``: the run
    whose test curve is read (its ``maps`` are stored); ``grid_scores``: each grid point's CV score.
    """

    dataset: str
    selection: Selection
    point: dict[str, Any]
    selected_epochs: list[int]
    test_accuracy: np.ndarray
    cv_curve: pd.Series
    final: RunResult
    grid_scores: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def accuracy(self) -> float:
        """The paper's figure: mean test accuracy at the selected epochs."""
        return float(np.mean(self.test_accuracy))

    @property
    def accuracy_std(self) -> float:
        """Its spread over the selected epochs (NaN for one value)."""
        return float(np.std(self.test_accuracy, ddof=1)) if len(self.test_accuracy) > 1 else float("nan")


METRICS: dict[str, Metric] = {
    "accuracy": Metric("test accuracy, mean over the selected epochs (the paper's figure)"),
    "map_region_auc/initial": Metric("region AUC of the weight map before training"),
    "map_region_auc/final": Metric("region AUC of the weight map after the final fit's last epoch"),
}
#: The metric the tests compare by default: the paper's figure.
TESTED = ("accuracy",)
PAPER_TEST = "Student's t-test over the selected epochs, pooled over seeds (scipy)"
SENSITIVITY_COLUMNS = ["knob", "value", "default", "seed", "accuracy", "map AUC", "selection"]


class GlobalAttentionStudy(Study[GlobalAttentionSettings]):
    """Global spatial attention (paper 2): each attention arm vs its vanilla CNN and its L1 baseline.

    The paper's test, Student's t-test over the test accuracies at the selected epochs pooled over seeds,
    stands beside the repository's one-way ANOVA over the per-seed figures (:meth:`tests`). Data options
    (:func:`load_data`): ``dataset``, ``data_root``, ``synthetic`` knobs; ``arms``: None for the profile's.
    """

    name = "global_attention"
    paper = "Global spatial attention"
    settings_type = GlobalAttentionSettings
    metrics = METRICS
    test = "anova"
    no_comparison = "No attention arm was run beside its vanilla CNN or L1 baseline."
    checkpoint_words = {SELECTED: "the test accuracy at the epochs chosen on the validation folds (the paper's rule)"}

    def __init__(
        self,
        context: StudyContext,
        settings: GlobalAttentionSettings | None = None,
        *,
        dataset: str | None = None,
        data_root: str | Path | None = None,
        synthetic: Mapping[str, Any] | None = None,
        arms: Sequence[str] | None = None,
    ) -> None:
        super().__init__(context, settings)
        self.synthetic = dict(synthetic or {})
        self.dataset = data_options(dataset, data_root, self.synthetic)
        self.data_root = data_root
        self._arms = list(arms or self.settings.arm_names())
        for name in self._arms:
            Arm.parse(name)
        self._sensitivity = pd.DataFrame(columns=SENSITIVITY_COLUMNS)

    @cached_property
    def data(self) -> StudyData:
        """The study's 80/20 split (:func:`load_data`), loaded on first use."""
        return load_data(self.dataset, self.data_root, self.profile, image_size=self.settings.image_size,
                         **self.synthetic)

    def arms(self) -> list[str]:
        return list(self._arms)

    def describe(self) -> str:
        """The data, the arms and the schedule, in a few lines."""
        data, s = self.data, self.settings
        lines = [
            f"profile {self.profile!r}\ndata: {data.description}",
            (f"train {len(data.train)} / test {len(data.test)} images of shape {data.image_shape}, "
             f"classes {data.train.label_names}"),
            f"arms: {self.arms()}",
            (f"schedule: {s.epochs} epochs, cut-off E = {s.cutoff_epoch}, Adam lr {s.lr}, batch {s.batch_size}; "
             f"{s.cv_folds}-fold CV selects the {s.top_epochs} best epochs"),
        ]
        if self.profile != "paper":
            lines.append(f"CPU substitutes: {list(s.backbones)} for GoogLeNet / VGG-16 / ResNet-152 / DenseNet-161; "
                         f"baselines run: {list(s.baselines)} (VGG-att3 and ResAttNet-92 in the paper profile)")
        return "\n".join(lines)

    # -- the protocol ------------------------------------------------------------------------------------

    def grid(self, arm: Arm, overrides: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Grid points of ``arm``: the product of the profile's values of the keys it searches.

        ``overrides`` fixes keys to one value (e.g. ``{"k": 4}`` for the sensitivity study); ``cutoff_epoch``
        may be overridden for ``+attention`` arms (default: the profile's).
        """
        keys = GRID_KEYS[arm.variant]
        overrides = dict(overrides or {})
        allowed = set(keys) | ({"cutoff_epoch"} if arm.variant == "attention" else set())
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise ValueError(f"arm {arm.name!r} has no setting {unknown}; it takes {sorted(allowed)}")
        values = [[overrides[k]] if k in overrides else list(getattr(self.settings.grid, k)) for k in keys]
        points = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]
        if arm.variant == "attention":
            for point in points:
                point["cutoff_epoch"] = overrides.get("cutoff_epoch", self.settings.cutoff_epoch)
        return points

    def train_config(self, point: Mapping[str, Any]) -> TrainConfig:
        """Adam at the profile's constant learning rate, the point's weight decay, no early stopping."""
        s = self.settings
        return TrainConfig(epochs=s.epochs, batch_size=s.batch_size, optimizer="adam", lr=s.lr,
                           weight_decay=point["weight_decay"], plateau_patience=None, progress=False)

    def run_arm(self, arm: str, seed: int, scenario: str = "default") -> ProtocolRun:
        """The paper's protocol (CV selection, then the final fit) for ``arm`` and ``seed``; ``values`` hold
        the checkpoint :data:`SELECTED` (:func:`selected_values`)."""
        if scenario != "default":
            raise ValueError(f"the global-attention study has one scenario, 'default', not {scenario!r}")
        return self.fit_arm(arm, seed)

    def fit_arm(
        self, arm_name: str, seed: int, *, overrides: Mapping[str, Any] | None = None, selection: Selection = "cv"
    ) -> ProtocolRun:
        """Run (or load) the protocol of one arm for one seed (module docstring); ``overrides`` fix grid keys
        (:meth:`grid`)."""
        arm = Arm.parse(arm_name)
        if arm.variant in SKLEARN:
            if overrides:
                raise ValueError(f"{arm.name} takes no overrides")
            return self._run_sklearn(arm, seed)
        if selection not in ("cv", "holdout"):
            raise ValueError(f"selection must be 'cv' or 'holdout', got {selection!r}")
        n_folds, n_top = self.settings.cv_folds, self.settings.top_epochs
        folds = stratified_folds(self.data.train.labels, n_folds, seed)
        scores, curves, runs, holdout_runs = [], [], [], []
        for point in self.grid(arm, overrides):
            if selection == "cv":
                fits = [self._fit(arm, point, seed, (i, folds[i])) for i in range(n_folds)]
            else:
                fits = [self._fit(arm, point, seed, (0, folds[0]), test=True)]
                holdout_runs.append(fits[0])
            runs += fits
            curve = pd.concat([r.history.set_index("epoch")["val_accuracy"] for r in fits], axis=1).mean(axis=1)
            curves.append(curve)
            scores.append({**point, "cv_score": float(np.mean(curve[top_epochs(curve, n_top)]))})
        grid_scores = pd.DataFrame(scores)
        best = int(grid_scores["cv_score"].to_numpy().argmax())
        point = {k: v for k, v in scores[best].items() if k != "cv_score"}
        selected = top_epochs(curves[best], n_top)
        if selection == "cv":
            final = self._fit(arm, point, seed, None, test=True)
            runs.append(final)
        else:
            final = holdout_runs[best]
        test_accuracy = final.history.set_index("epoch")["test_accuracy"][selected].to_numpy(float)
        return ProtocolRun(
            arm.name, "default", seed, runs, selected_values(test_accuracy, final), dataset=self.dataset,
            selection=selection, point=point, selected_epochs=selected, test_accuracy=test_accuracy,
            cv_curve=curves[best], final=final, grid_scores=grid_scores,
        )

    def training_run(
        self,
        arm: Arm,
        point: Mapping[str, Any],
        seed: int,
        fold: tuple[int, tuple[np.ndarray, np.ndarray]] | None,
        test: bool = False,
    ) -> TrainingRun:
        """One fit: on fold ``fold``'s training part validated on its held-out part, or (None) on the whole
        training set without validation; the test set is scored every epoch (and the last weights after
        the last) when ``test``. The final fits store the weight maps before and after training (the report
        reads the maps, never the weights) and, on the synthetic data, their region AUCs."""
        data, settings = self.data, self.settings
        if fold is None:
            splits: dict[str, ArrayDataset] = {"train": data.train}
        else:
            fit_idx, val_idx = fold[1]
            splits = {"train": data.train.subset(fit_idx), "val": data.train.subset(val_idx)}
        if test:
            splits["test"] = data.test

        def maps(trained: Trained) -> dict[str, dict[str, Any]]:
            initial, final = trained.prepared, weight_map(trained.method)
            if final is None:
                return {}
            metrics = {} if data.region_mask is None else {"map_region_auc": {
                "initial": map_region_auc(initial.numpy(), data.region_mask),
                "final": map_region_auc(final.numpy(), data.region_mask),
            }}
            return {"states": {"maps": {"initial": initial, "final": final}}, "metrics": metrics}

        return TrainingRun(
            study=self.name, seed=seed, profile=self.profile, datasets=splits, train=self.train_config(point),
            config={"arm": arm.name, "dataset": data.name, "point": dict(point),
                    "fold": None if fold is None else fold[0], "n_folds": settings.cv_folds, "scores_test": test,
                    "pretrained": settings.pretrained},
            build=lambda: build_method(arm, point, splits["train"], settings.pretrained),
            label_names=data.train.label_names, checkpoint_every=settings.checkpoint_every,
            test_every_epoch=test, keep=(), scored=("last",), prepare=weight_map,
            after=maps if fold is None or test else None,
        )

    def _fit(
        self, arm: Arm, point: Mapping[str, Any], seed: int,
        fold: tuple[int, tuple[np.ndarray, np.ndarray]] | None, test: bool = False,
    ) -> RunResult:
        return execute(self.context.store, self.training_run(arm, point, seed, fold, test), self.context.device)

    def _run_sklearn(self, arm: Arm, seed: int) -> ProtocolRun:
        """Logistic regression or SVM on standardised raw pixels, hyper-parameters by stratified k-fold CV."""
        data, grid, n_folds = self.data, self.settings.sklearn_grid, self.settings.cv_folds
        if arm.name == "lr":
            estimator = LogisticRegression(max_iter=5000)
            params = {"logisticregression__C": list(grid.lr_C)}
        else:
            estimator = SVC()
            params = {"svc__C": list(grid.svm_C), "svc__kernel": list(grid.svm_kernel)}
        config = {"arm": arm.name, "dataset": data.name, "grid": params, "n_folds": n_folds}
        spec = RunSpec(self.name, config, seed, self.profile, data_fingerprint({"train": data.train, "test": data.test}))

        def fn(_workdir: Path) -> dict[str, Any]:
            x_train = data.train.images.flatten(1).numpy()
            x_test = data.test.images.flatten(1).numpy()
            folds = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
            search = GridSearchCV(make_pipeline(StandardScaler(), estimator), params, cv=folds, n_jobs=1)
            search.fit(x_train, data.train.labels)
            pred = search.predict(x_test)
            accuracy = float(np.mean(pred == data.test.labels))
            history = pd.DataFrame(search.cv_results_)[["params", "mean_test_score", "std_test_score", "rank_test_score"]]
            history["params"] = history["params"].astype(str)
            return {
                "history": history,
                "metrics": {"test_accuracy": accuracy, "cv_accuracy": float(search.best_score_),
                            "best_params": {k.split("__")[1]: v for k, v in search.best_params_.items()}},
                "predictions": {"last": pd.DataFrame({"id": data.test.ids, "label": data.test.labels, "pred": pred})},
            }

        run = self.context.store.run(spec, fn)
        test_accuracy = np.array([run.metrics["test_accuracy"]])
        return ProtocolRun(
            arm.name, "default", seed, [run], selected_values(test_accuracy, run), dataset=data.name,
            selection="cv", point=run.metrics["best_params"], selected_epochs=[], test_accuracy=test_accuracy,
            cv_curve=run.history.set_index("params")["mean_test_score"], final=run,
        )

    # -- comparisons and tests ---------------------------------------------------------------------------

    def comparisons(self) -> list[Comparison]:
        """Each attention arm vs its vanilla CNN and vs its L1 baseline, where those arms run."""
        pairs = []
        for name in self._arms:
            arm = Arm.parse(name)
            if arm.variant == "attention":
                pairs += [Comparison(name, ref) for ref in (arm.backbone, f"{arm.backbone}+l1") if ref in self._arms]
        return pairs

    def epoch_values(self) -> pd.DataFrame:
        """Long frame of every test accuracy at a selected epoch: the samples of the paper's t-test."""
        rows = [{"dataset": r.dataset, "arm": r.arm, "seed": r.seed, "epoch": e, "accuracy": float(a)}
                for r in self.runs for e, a in zip(r.selected_epochs or [None], r.test_accuracy, strict=True)]
        return pd.DataFrame(rows, columns=["dataset", "arm", "seed", "epoch", "accuracy"])

    def tests(self, metrics: Sequence[str] | None = None) -> pd.DataFrame:
        """The repository's one-way ANOVA over the per-seed figures (the base's columns) and, for the
        accuracy, the paper's test beside it: Student's t-test (scipy) between the test accuracies at the
        selected epochs, pooled over seeds (epochs of one fit are not independent samples; the paper
        treats them so). Added columns: mean method / reference (epochs), t (epochs), p (t-test, epochs),
        paper's test. ``metrics`` None: :data:`TESTED`. NaN where a side has fewer than 2 values."""
        frame = super().tests(metrics if metrics is not None else TESTED)
        by_name = {str(c): c for c in self.comparisons()}
        epochs = self.epoch_values()
        rows = []
        for row in frame.to_dict("records"):
            c = by_name[row["comparison"]]
            accuracy = row["metric"] == "accuracy"
            values = {arm: epochs.loc[epochs["arm"] == arm, "accuracy"] for arm in (c.method, c.reference)}
            paper = (t_test(epochs[epochs["arm"].isin(values)], "accuracy", "arm", c.method, c.reference, equal_var=True)
                     if accuracy and min(map(len, values.values())) >= 2 else {"t": np.nan, "p": np.nan})
            rows.append({
                "mean method (epochs)": values[c.method].mean() if accuracy else np.nan,
                "mean reference (epochs)": values[c.reference].mean() if accuracy else np.nan,
                "t (epochs)": paper["t"], "p (t-test, epochs)": paper["p"], "paper's test": PAPER_TEST,
            })
        columns = ["mean method (epochs)", "mean reference (epochs)", "t (epochs)", "p (t-test, epochs)", "paper's test"]
        return pd.concat([frame, pd.DataFrame(rows, index=frame.index, columns=columns)], axis=1)

    def _sentence(self, row: Mapping[str, Any], checkpoint: str, alpha: float) -> str:
        """One comparison: did global attention win at p < alpha, by the paper's t-test over the selected epochs
        and by the one-way ANOVA over seeds?"""
        diff = row["mean method (epochs)"] - row["mean reference (epochs)"]
        if not self.metrics[row["metric"]].higher_is_better:
            diff = -diff
        parts = []
        for label, p in (("paper's t-test over the selected epochs", row["p (t-test, epochs)"]),
                         ("one-way ANOVA over seeds", row["p"])):
            if not np.isfinite(p):
                parts.append(f"{label}: no test (too few values or no variation)")
                continue
            outcome = "better" if diff > 0 and p < alpha else ("worse" if diff < 0 and p < alpha else "no significant difference")
            parts.append(f"{label}: {outcome} (p = {p:.2g})")
        return (f"{self.dataset}: {row['comparison']}: mean {row['metric']} {row['mean method (epochs)']:.3f} vs "
                f"{row['mean reference (epochs)']:.3f} ({row['n']} seeds); " + "; ".join(parts) + ".")

    def claim_specs(self) -> list[ClaimSpec]:
        """Attention beats the vanilla CNN (Table 2's numbers for the paper's networks and datasets) and the
        L1 baseline (the paper reports it for VGG-16 only)."""
        specs = []
        for c in self.comparisons():
            backbone = Arm.parse(c.method).backbone
            if c.reference == backbone:
                reported = PAPER_TABLE2.get(self.dataset, {}).get(backbone)
                value = (f"{reported[0]:.2f} % -> {reported[1]:.2f} % (t-test p < 0.01)" if reported
                         else "1-10 points higher on IDRiD and JAFFE (Table 2, t-test p < 0.01)")
                specs.append(ClaimSpec(f"global attention raises {backbone}'s test accuracy (mean over the selected "
                                       "epochs)", c, "accuracy", value, checkpoint=SELECTED))
            else:
                reported = PAPER_TABLE2.get(self.dataset, {}).get("vgg16") if backbone == "vgg16" else None
                value = (f"L1 {PAPER_L1[self.dataset]:.2f} %, attention {reported[1]:.2f} % (Table 2)" if reported
                         else "the L1 baseline lies between the vanilla CNN and attention (Table 2, VGG-16)")
                specs.append(ClaimSpec(f"global attention beats {backbone} with an L1-penalised per-pixel weight",
                                       c, "accuracy", value, checkpoint=SELECTED))
        return specs

    # -- what the report shows ---------------------------------------------------------------------------

    def results_by_run(self) -> pd.DataFrame:
        """One row per arm and seed: the paper's figure (mean and std over the selected epochs) and the choices."""
        rows = []
        for r in self.runs:
            arm = Arm.parse(r.arm)
            auc = r.final.metrics.get("map_region_auc", {})
            rows.append({
                "dataset": r.dataset, "arm": r.arm, "variant": arm.variant, "backbone": arm.backbone, "seed": r.seed,
                "accuracy": r.accuracy, "epoch std": r.accuracy_std, "selection": r.selection,
                "selected epochs": ", ".join(map(str, r.selected_epochs)) or "-",
                "chosen": ", ".join(f"{k}={v}" for k, v in r.point.items()),
                "map AUC initial": auc.get("initial", np.nan), "map AUC final": auc.get("final", np.nan),
            })
        return pd.DataFrame(rows)

    def table2(self, digits: int = 3) -> pd.DataFrame:
        """Table 2: per arm, the paper's ``mean (std)`` over all selected epochs of all seeds, the median ± std
        of the per-seed figures, and marks from :meth:`tests` (``*`` p < 0.05, ``**`` p < 0.01, paper's t-test
        vs the vanilla CNN; ``†`` the same vs the L1 baseline)."""
        frame, epochs, tests = self.results_by_run(), self.epoch_values(), self.tests()
        pooled = epochs.groupby(["dataset", "arm"], sort=False)["accuracy"].agg(["mean", "std", "count"])
        seeds = median_std(frame.assign(key=frame["dataset"] + " | " + frame["arm"]), ["accuracy"], "key", digits)
        references = {str(c): c.reference for c in self.comparisons()}
        rows = []
        for (dataset, arm), values in pooled.iterrows():
            marks = ""
            for row in tests[tests["comparison"].str.startswith(f"{arm} vs ")].to_dict("records"):
                p = row["p (t-test, epochs)"]
                if np.isfinite(p) and p < 0.05:
                    marks += "†" if references[row["comparison"]].endswith("+l1") else ("**" if p < 0.01 else "*")
            rows.append({
                "dataset": dataset, "arm": arm,
                "mean (std) over selected epochs": f"{values['mean']:.{digits}f} ({values['std']:.{digits}f}){marks}",
                "values": int(values["count"]),
                "median ± std over seeds": seeds.display.loc[f"{dataset} | {arm}", "accuracy"],
                "seeds": int(seeds.numeric.loc[f"{dataset} | {arm}", ("accuracy", "n")]),
            })
        return pd.DataFrame(rows).set_index(["dataset", "arm"])

    def precision_recall(self) -> pd.DataFrame:
        """Per-class precision and recall of each CNN arm's final fit (last epoch), median ± std over seeds."""
        label_names = self.data.train.label_names
        rows = []
        for r in self.runs:
            metrics = r.final.metrics.get("last")
            if metrics is None:
                continue
            rows.append({"group": f"{r.dataset} | {r.arm}", **{
                f"{kind}/{name}": metrics[f"{kind}/{name}"] for name in label_names for kind in ("precision", "recall")}})
        if not rows:
            return pd.DataFrame()
        frame = pd.DataFrame(rows)
        return median_std(frame, [c for c in frame.columns if c != "group"], "group").display

    def parameter_counts(self, ks: Sequence[int] | None = None) -> pd.DataFrame:
        """The pixel CNN's parameter count ``K(9NC + 1) + (K + 1)`` for this training set, per K (None: every K
        of the grid and the sensitivity study)."""
        s = self.settings
        ks = sorted({*s.grid.k, *s.sensitivity.k}) if ks is None else ks
        c, _, _ = self.data.image_shape
        n = len(self.data.train)
        return pd.DataFrame([{"dataset": self.dataset, "N": n, "C": c, "K": k,
                              "parameters": pixel_cnn_parameter_count(n, c, k)} for k in ks])

    def sensitivity(self, seeds: Sequence[int]) -> pd.DataFrame:
        """Fig. 7: the profile's attention arm with one of K, lambda, E changed at a time, rest at default, for
        each of ``seeds`` that the profile's ``sensitivity.seeds`` lists; kept for :meth:`tables` and
        :meth:`figures`.

        One row per (knob, value, seed): the knob, the value, whether it is the default, the accuracy (paper's
        figure under the profile's ``sensitivity.selection``) and the final map's region AUC.
        """
        spec, grid = self.settings.sensitivity, self.settings.grid
        arm = f"{spec.backbone}+attention"
        defaults = {"k": grid.k[0], "l1_weight": grid.l1_weight[0], "cutoff_epoch": self.settings.cutoff_epoch}
        fixed = {**defaults, "weight_decay": grid.weight_decay[0]}
        rows = []
        for seed in (s for s in seeds if s in spec.seeds):
            for knob in ("k", "l1_weight", "cutoff_epoch"):
                for value in sorted({defaults[knob], *getattr(spec, knob)}):
                    result = self.fit_arm(arm, seed, overrides={**fixed, knob: value}, selection=spec.selection)
                    auc = result.final.metrics.get("map_region_auc", {}).get("final", np.nan)
                    rows.append({"knob": knob, "value": value, "default": value == defaults[knob], "seed": seed,
                                 "accuracy": result.accuracy, "map AUC": auc, "selection": result.selection})
        self._sensitivity = pd.DataFrame(rows, columns=SENSITIVITY_COLUMNS)
        return self._sensitivity

    def sensitivity_summary(self) -> pd.DataFrame:
        """Median accuracy and map AUC over the seeds of :meth:`sensitivity`, per knob and value."""
        return self._sensitivity.groupby(["knob", "value"])[["accuracy", "map AUC"]].median()

    def tables(self) -> dict[str, pd.DataFrame]:
        tables = {
            "the pixel CNN's parameter count per K": self.parameter_counts(),
            "runs: the paper's figure per arm and seed (mean and std of the test accuracy at the selected epochs)":
                self.results_by_run(),
            **super().tables(),
            "Table 2: test accuracy at the selected epochs, mean (std) pooled over seeds, marks by the paper's "
            "t-test; median ± std over seeds": self.table2(),
            "per-class precision and recall (final fit, last epoch; median ± std over seeds)": self.precision_recall(),
        }
        if len(self._sensitivity):
            tables[f"Fig. 7: sensitivity, median over seeds ({self._sensitivity['selection'].iloc[0]} selection)"] = (
                self.sensitivity_summary())
        return tables

    def selection_figures(self, seed: int | None = None) -> list[Figure]:
        """Per CNN arm of ``seed`` (None: the first run's): the mean validation accuracy over the folds per
        epoch, which picks the epochs, and the final fit's test accuracy, which is read at them."""
        seed = self.runs[0].seed if seed is None else seed
        figures = []
        for r in self.runs:
            if r.seed == seed and r.selected_epochs:
                test_curve = r.final.history.set_index("epoch")["test_accuracy"]
                figures.append(plots.selection_curves(
                    r.cv_curve, test_curve, r.selected_epochs,
                    title=f"{r.arm}, seed {r.seed}: epochs selected on {SELECTIONS[r.selection]}, chosen {r.point}"))
        return figures

    def accuracy_figure(self) -> Figure:
        """The paper's figure per arm and seed."""
        return plots.metric_by_arm(self.wide(SELECTED), "accuracy", arms=self.arms(),
                                   title=f"test accuracy, mean at the epochs selected on the CV folds, per seed ({self.dataset})")

    def map_views(self, seed: int | None = None) -> dict[str, Any]:
        """The initial and final weight maps of each attention/L1 arm of ``seed`` (None: the first run's;
        Figs. 4-6), with titles and how they were selected."""
        seed = self.runs[0].seed if seed is None else seed
        maps, titles, epochs = [], [], []
        for r in self.runs:
            if r.seed != seed or Arm.parse(r.arm).variant not in ("attention", "l1"):
                continue
            epochs.append(f"{r.arm}: epoch {r.final.metrics['last_epoch']}")
            stored = r.final.state_dict("maps")
            auc = r.final.metrics.get("map_region_auc", {})
            for when in ("initial", "final"):
                maps.append(stored[when].numpy())
                score = f", region AUC {auc[when]:.2f}" if when in auc else ""
                titles.append(f"{r.arm}: {when}{score}")
        return {
            "maps": maps, "titles": titles, "region_mask": self.data.region_mask,
            "selection": f"seed {seed}: map before training and after the last epoch of the final fit "
                         f"({', '.join(epochs)}); for the attention arms the map is fixed from the cut-off epoch E + 1 on",
        }

    def map_figure(self, seed: int | None = None) -> Figure | None:
        """Figs. 4-6 (:meth:`map_views`), the selection in the title; None without an attention or L1 arm."""
        views = self.map_views(seed)
        if not views["maps"]:
            return None
        figure = plots.weight_maps(views["maps"], views["titles"], views["region_mask"])
        figure.suptitle(views["selection"], fontsize=8)
        figure.tight_layout()
        return figure

    def sensitivity_figure(self) -> Figure | None:
        """Fig. 7 from :meth:`sensitivity` (None before it ran)."""
        frame = self._sensitivity
        if frame.empty:
            return None
        return plots.sensitivity_panels(frame, title=(
            f"{self.settings.sensitivity.backbone}+attention: test accuracy at the epochs selected on "
            f"{SELECTIONS[frame['selection'].iloc[0]]}, "
            f"seeds {sorted(set(frame['seed']))}"))

    def figures(self, seed: int | None = None) -> list[Figure]:
        """The epoch selection of ``seed``'s CNN arms, the paper's figure per arm, Figs. 4-6 and Fig. 7 (when
        :meth:`sensitivity` ran)."""
        figures = [*self.selection_figures(seed), self.accuracy_figure(), self.map_figure(seed), self.sensitivity_figure()]
        return [f for f in figures if f is not None]
