"""Global spatial attention's study (paper 2): the networks, their data, the paper's epoch selection.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from torch import Tensor

from attnlib.data.arrays import ArrayDataset
from attnlib.data.defaults import synthetic_structured
from attnlib.data.idrid import IDRiD, IDRiDSettings
from attnlib.data.jaffe import JAFFE, JAFFESettings
from attnlib.data.layouts import resolve_dataset
from attnlib.data.splits import balanced_split, stratified_folds
from attnlib.data.synthetic_structured import StructuredDataset, map_region_auc
from attnlib.methods.global_attention import GlobalAttention, GlobalAttentionConfig, PixelWeightL1
from attnlib.models.pixel_attention import pixel_cnn_parameter_count
from attnlib.models.registry import create_model, list_models
from attnlib.profiles import load_profile, profile_name
from attnlib.seeding import seed_everything
from attnlib.stats import median_std, one_way_anova, t_test, with_profile_caveat
from attnlib.training.experiment import data_fingerprint, make_loaders, score
from attnlib.training.methods import Classifier, Method
from attnlib.training.runstore import RunResult, RunSpec, RunStore
from attnlib.training.trainer import TrainConfig, Trainer

STUDY = "global_attention"
DATASETS = ("synthetic", "idrid-dr", "idrid-me", "jaffe")
#: The dataset a ``data_root`` of each layout gives when ``dataset`` is not set (macular edema: ``idrid-me``).
LAYOUT_DATASETS = {"synthetic": "synthetic", "idrid": "idrid-dr", "jaffe": "jaffe"}
VARIANTS = ("vanilla", "attention", "l1")
LOCAL_ATTENTION = ("vgg_att3", "resattnet56", "resattnet92")
SKLEARN = ("lr", "svm")
#: Grid keys each kind of arm searches (``weight_decay`` is the optimiser's; ``pixel_l1_weight`` the L1 baseline's).
GRID_KEYS = {
    "vanilla": ("weight_decay",),
    "local": ("weight_decay",),
    "attention": ("weight_decay", "k", "l1_weight"),
    "l1": ("weight_decay", "pixel_l1_weight"),
}
Selection = Literal["cv", "holdout"]


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


def arm_names(settings: Mapping[str, Any]) -> list[str]:
    """The profile's arms: every backbone with every variant, then the baselines."""
    suffix = {"vanilla": "", "attention": "+attention", "l1": "+l1"}
    cnn = [f"{b}{suffix[v]}" for b in settings["backbones"] for v in settings["variants"]]
    return cnn + list(settings["baselines"])


def study_settings(profile: str | None) -> dict[str, Any]:
    """The profile's ``global_attention`` section."""
    return load_profile(profile)["global_attention"]


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


def load_data(
    dataset: str | None = None,
    data_root: str | Path | None = None,
    profile: str | None = None,
    **synthetic: Any,
) -> StudyData:
    """The 80/20 split of ``dataset`` at the profile's image size, decoded into memory.

    ``dataset`` None: ``synthetic`` without ``data_root``, else told from the folder's layout
    (:func:`~attnlib.data.layouts.resolve_dataset`; IDRiD gives ``idrid-dr``, the paper's first task).

    ``synthetic``: the structured synthetic default (``data_root`` None: the profile's, generated on
    first use, with ``synthetic`` knobs as overrides; else a folder written by ``generate_structured``);
    its own label-balanced 80/20 split. ``idrid-dr`` / ``idrid-me``: IDRiD Disease Grading, retinopathy
    grade or macular-edema risk, the official train/test sets (413 / 103, i.e. 80/20), the paper's
    preprocessing at ``image_size``. ``jaffe``: label-balanced 80/20 split (split seed 0) of the rated images.
    """
    dataset = resolve_dataset(dataset, data_root, LAYOUT_DATASETS, "global-attention")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    if synthetic and (dataset != "synthetic" or data_root is not None):
        raise ValueError(f"synthetic knobs {sorted(synthetic)} apply only to the generated synthetic default")
    size = study_settings(profile)["image_size"]
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
    if data_root is None:
        raise ValueError(f"dataset {dataset!r} needs data_root (the real data's folder)")
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


def arm_grid(arm: Arm, settings: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
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
    values = [[overrides[k]] if k in overrides else list(settings["grid"][k]) for k in keys]
    points = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]
    if arm.variant == "attention":
        for point in points:
            point["cutoff_epoch"] = overrides.get("cutoff_epoch", settings["cutoff_epoch"])
    return points


def train_config(settings: Mapping[str, Any], point: Mapping[str, Any]) -> TrainConfig:
    """Adam at the profile's constant learning rate, the point's weight decay, no early stopping."""
    return TrainConfig(
        epochs=settings["epochs"], batch_size=settings["batch_size"], optimizer="adam", lr=settings["lr"],
        weight_decay=point["weight_decay"], plateau_patience=None, progress=False,
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


@dataclass
class ArmResult:
    """The outcome of the protocol for one arm and seed.

    ``selected_epochs``: the epochs chosen on the validation folds (empty for scikit-learn arms);
    ``test_accuracy``: the final fit's test accuracy at those epochs (one value for scikit-learn);
    ``cv_curve``: mean validation accuracy per epoch of the chosen grid point; ``final``: the run
    whose test curve is read (its ``last`` weights and ``maps`` are stored).
    """

    arm: str
    seed: int
    dataset: str
    selection: str
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


def top_epochs(curve: pd.Series, n: int) -> list[int]:
    """The ``n`` epochs with the highest values of ``curve`` (index = epoch), earliest first on ties, sorted."""
    order = sorted(curve.index, key=lambda epoch: (-curve[epoch], epoch))
    return sorted(int(e) for e in order[:n])


def run_arm(
    store: RunStore,
    arm_name: str,
    data: StudyData,
    *,
    profile: str | None,
    seed: int,
    overrides: Mapping[str, Any] | None = None,
    selection: Selection = "cv",
    device: str | None = None,
) -> ArmResult:
    """Run (or load) the protocol of one arm for one seed on ``data`` (module docstring)."""
    profile = profile_name(profile)
    settings = study_settings(profile)
    arm = Arm.parse(arm_name)
    if arm.variant in SKLEARN:
        if overrides:
            raise ValueError(f"{arm.name} takes no overrides")
        return _run_sklearn(store, arm, data, settings, profile, seed)
    if selection not in ("cv", "holdout"):
        raise ValueError(f"selection must be 'cv' or 'holdout', got {selection!r}")
    n_folds, n_top = settings["cv_folds"], settings["top_epochs"]
    if n_top > settings["epochs"]:
        raise ValueError(f"top_epochs ({n_top}) exceeds epochs ({settings['epochs']})")
    folds = stratified_folds(data.train.labels, n_folds, seed)
    scores, curves, holdout_runs = [], [], []
    for point in arm_grid(arm, settings, overrides):
        if selection == "cv":
            runs = [_fit(store, arm, point, data, (i, folds[i]), n_folds, settings, profile, seed, device)
                    for i in range(n_folds)]
        else:
            runs = [_fit(store, arm, point, data, (0, folds[0]), n_folds, settings, profile, seed, device, test=True)]
            holdout_runs.append(runs[0])
        curve = pd.concat([r.history.set_index("epoch")["val_accuracy"] for r in runs], axis=1).mean(axis=1)
        curves.append(curve)
        scores.append({**point, "cv_score": float(np.mean(curve[top_epochs(curve, n_top)]))})
    grid_scores = pd.DataFrame(scores)
    best = int(grid_scores["cv_score"].to_numpy().argmax())
    point = {k: v for k, v in scores[best].items() if k != "cv_score"}
    selected = top_epochs(curves[best], n_top)
    if selection == "cv":
        final = _fit(store, arm, point, data, None, n_folds, settings, profile, seed, device, test=True)
    else:
        final = holdout_runs[best]
    test_curve = final.history.set_index("epoch")["test_accuracy"]
    return ArmResult(arm.name, seed, data.name, selection, point, selected,
                     test_curve[selected].to_numpy(float), curves[best], final, grid_scores)


def _fit(
    store: RunStore,
    arm: Arm,
    point: Mapping[str, Any],
    data: StudyData,
    fold: tuple[int, tuple[np.ndarray, np.ndarray]] | None,
    n_folds: int,
    settings: Mapping[str, Any],
    profile: str,
    seed: int,
    device: str | None,
    test: bool = False,
) -> RunResult:
    """One training run: on fold ``fold``'s training part validated on its held-out part, or (None) on
    the whole training set without validation; the test set is scored every epoch when ``test``."""
    train_cfg = train_config(settings, point)
    if fold is None:
        splits: dict[str, ArrayDataset] = {"train": data.train}
    else:
        fit_idx, val_idx = fold[1]
        splits = {"train": data.train.subset(fit_idx), "val": data.train.subset(val_idx)}
    if test:
        splits["test"] = data.test
    config = {
        "arm": arm.name, "dataset": data.name, "point": dict(point), "fold": None if fold is None else fold[0],
        "n_folds": n_folds, "scores_test": test, "pretrained": settings["pretrained"],
        "train": {k: v for k, v in asdict(train_cfg).items() if k != "progress"},
    }
    spec = RunSpec(STUDY, config, seed, profile, data_fingerprint(splits))

    def fn(workdir: Path) -> dict[str, Any]:
        seed_everything(seed, deterministic=train_cfg.deterministic)
        method = build_method(arm, point, splits["train"], settings["pretrained"])
        initial_map = weight_map(method)
        loaders = make_loaders(splits, train_cfg.batch_size, seed)
        trainer = Trainer(train_cfg, device=device, checkpoint_every=settings["checkpoint_every"])
        evaluate = {"test": loaders["test"]} if test else None
        fit = trainer.fit(method, loaders["train"], loaders.get("val"), workdir, seed, eval_loaders=evaluate)
        output: dict[str, Any] = {"history": fit.history, "metrics": {"last_epoch": fit.last_epoch}, "predictions": {}}
        if test:
            frame, output["metrics"]["last"] = score(method, loaders["test"], trainer, data.train.label_names)
            output["predictions"] = {"last": frame}
        final_map = weight_map(method)
        if (fold is None or test) and final_map is not None:  # the report reads the maps, never the weights
            output["states"] = {"maps": {"initial": initial_map, "final": final_map}}
            if data.region_mask is not None:
                output["metrics"]["map_region_auc"] = {
                    "initial": map_region_auc(initial_map.numpy(), data.region_mask),
                    "final": map_region_auc(final_map.numpy(), data.region_mask),
                }
        return output

    return store.run(spec, fn)


def _run_sklearn(
    store: RunStore, arm: Arm, data: StudyData, settings: Mapping[str, Any], profile: str, seed: int
) -> ArmResult:
    """Logistic regression or SVM on standardised raw pixels, hyper-parameters by stratified k-fold CV."""
    grid = settings["sklearn_grid"]
    if arm.name == "lr":
        estimator = LogisticRegression(max_iter=5000)
        params = {"logisticregression__C": list(grid["lr_C"])}
    else:
        estimator = SVC()
        params = {"svc__C": list(grid["svm_C"]), "svc__kernel": list(grid["svm_kernel"])}
    config = {"arm": arm.name, "dataset": data.name, "grid": params, "n_folds": settings["cv_folds"]}
    spec = RunSpec(STUDY, config, seed, profile, data_fingerprint({"train": data.train, "test": data.test}))

    def fn(_workdir: Path) -> dict[str, Any]:
        x_train = data.train.images.flatten(1).numpy()
        x_test = data.test.images.flatten(1).numpy()
        folds = StratifiedKFold(settings["cv_folds"], shuffle=True, random_state=seed)
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

    run = store.run(spec, fn)
    cv = run.history.set_index("params")["mean_test_score"]
    return ArmResult(arm.name, seed, data.name, "cv", run.metrics["best_params"], [],
                     np.array([run.metrics["test_accuracy"]]), cv, run)


def results_frame(results: Sequence[ArmResult]) -> pd.DataFrame:
    """One row per arm and seed: the paper's figure (mean and std over the selected epochs) and the choices."""
    rows = []
    for r in results:
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


def epoch_values(results: Sequence[ArmResult]) -> pd.DataFrame:
    """Long frame of every test accuracy at a selected epoch: the samples of the paper's t-test."""
    rows = [{"dataset": r.dataset, "arm": r.arm, "seed": r.seed, "epoch": e, "accuracy": float(a)}
            for r in results for e, a in zip(r.selected_epochs or [None], r.test_accuracy, strict=True)]
    return pd.DataFrame(rows)


def comparisons(arms: Sequence[str]) -> list[tuple[str, str]]:
    """(attention arm, reference) pairs present among ``arms``: vs the vanilla CNN and vs the L1 baseline."""
    pairs = []
    for name in arms:
        arm = Arm.parse(name)
        if arm.variant != "attention":
            continue
        pairs += [(name, ref) for ref in (arm.backbone, f"{arm.backbone}+l1") if ref in arms]
    return pairs


def tests_table(results: Sequence[ArmResult]) -> pd.DataFrame:
    """The paper's test and the repository's, for every attention arm vs its vanilla CNN and vs L1.

    Paper: Student's t-test (scipy) between the test accuracies at the selected epochs, pooled over
    seeds (epochs of one fit are not independent samples; the paper treats them so). Repository: one-way
    ANOVA (statsmodels) between the per-seed figures. NaN where a side has fewer than 2 values.
    """
    frame, epochs = results_frame(results), epoch_values(results)
    rows = []
    for dataset, part in frame.groupby("dataset", sort=False):
        for attention, reference in comparisons(part["arm"].unique()):
            seeds = part[part["arm"].isin([attention, reference])]
            samples = epochs[(epochs["dataset"] == dataset) & epochs["arm"].isin([attention, reference])]
            n_seeds = int(seeds.groupby("arm").size().min())
            paper = (t_test(samples, "accuracy", "arm", attention, reference, equal_var=True)
                     if samples.groupby("arm").size().min() >= 2 else {"t": np.nan, "p": np.nan})
            anova = one_way_anova(seeds, "accuracy", "arm") if n_seeds >= 2 else {"F": np.nan, "p": np.nan}
            means = seeds.groupby("arm")["accuracy"].mean()
            rows.append({
                "dataset": dataset, "comparison": f"{attention} vs {reference}",
                "mean attention": means[attention], "mean reference": means[reference], "seeds": n_seeds,
                "t (epochs)": paper["t"], "p (t-test, epochs)": paper["p"],
                "F (seeds)": anova["F"], "p (ANOVA, seeds)": anova["p"],
            })
    return pd.DataFrame(rows)


def table2(results: Sequence[ArmResult], digits: int = 3) -> pd.DataFrame:
    """Table 2: per dataset and arm, the paper's ``mean (std)`` over all selected epochs of all seeds, the
    median ± std of the per-seed figures, and marks from :func:`tests_table` (``*`` p < 0.05, ``**``
    p < 0.01, paper's t-test vs the vanilla CNN; ``†`` the same vs the L1 baseline)."""
    frame, epochs, tests = results_frame(results), epoch_values(results), tests_table(results)
    pooled = epochs.groupby(["dataset", "arm"], sort=False)["accuracy"].agg(["mean", "std", "count"])
    seeds = median_std(frame.assign(key=frame["dataset"] + " | " + frame["arm"]), ["accuracy"], "key", digits)
    rows = []
    for (dataset, arm), values in pooled.iterrows():
        marks = ""
        for row in tests[(tests["dataset"] == dataset) & tests["comparison"].str.startswith(f"{arm} vs ")].to_dict("records"):
            p = row["p (t-test, epochs)"]
            if np.isfinite(p) and p < 0.05:
                reference = row["comparison"].split(" vs ")[1]
                marks += ("†" if reference.endswith("+l1") else ("**" if p < 0.01 else "*"))
        rows.append({
            "dataset": dataset, "arm": arm,
            "mean (std) over selected epochs": f"{values['mean']:.{digits}f} ({values['std']:.{digits}f}){marks}",
            "values": int(values["count"]),
            "median ± std over seeds": seeds.display.loc[f"{dataset} | {arm}", "accuracy"],
            "seeds": int(seeds.numeric.loc[f"{dataset} | {arm}", ("accuracy", "n")]),
        })
    return pd.DataFrame(rows).set_index(["dataset", "arm"])


def verdict(tests: pd.DataFrame, alpha: float = 0.05, profile: str | None = None) -> str:
    """A sentence per comparison, computed from :func:`tests_table`: did global attention win at p < alpha?
    (After the smoke caveat when ``profile`` is ``smoke``.)"""
    sentences = []
    for row in tests.to_dict("records"):
        attention, reference = row["comparison"].split(" vs ")
        diff = row["mean attention"] - row["mean reference"]
        parts = []
        for label, p in (("paper's t-test over the selected epochs", row["p (t-test, epochs)"]),
                         ("one-way ANOVA over seeds", row["p (ANOVA, seeds)"])):
            if not np.isfinite(p):
                parts.append(f"{label}: too few values")
                continue
            outcome = "better" if diff > 0 and p < alpha else ("worse" if diff < 0 and p < alpha else "no significant difference")
            parts.append(f"{label}: {outcome} (p = {p:.2g})")
        sentences.append(
            f"{row['dataset']}: {attention} vs {reference}: mean accuracy {row['mean attention']:.3f} vs "
            f"{row['mean reference']:.3f} ({row['seeds']} seeds); " + "; ".join(parts) + "."
        )
    text = "\n".join(sentences) if sentences else "No attention arm was run beside its vanilla CNN or L1 baseline."
    return with_profile_caveat(text, profile)


def precision_recall(results: Sequence[ArmResult], label_names: Sequence[str]) -> pd.DataFrame:
    """Per-class precision and recall of each CNN arm's final fit (last epoch), median ± std over seeds."""
    rows = []
    for r in results:
        metrics = r.final.metrics.get("last")
        if metrics is None:
            continue
        rows.append({"group": f"{r.dataset} | {r.arm}",
                     **{f"{kind}/{name}": metrics[f"{kind}/{name}"] for name in label_names for kind in ("precision", "recall")}})
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    return median_std(frame, [c for c in frame.columns if c != "group"], "group").display


def sensitivity(
    store: RunStore,
    data: StudyData,
    *,
    profile: str | None,
    seed: int,
    device: str | None = None,
) -> pd.DataFrame:
    """Fig. 7: the profile's attention arm with one of K, lambda, E changed at a time, rest at default.

    One row per (knob, value): the knob, the value, whether it is the default, the accuracy (paper's
    figure under the profile's ``sensitivity.selection``) and the final map's region AUC.
    """
    settings = study_settings(profile)
    spec = settings["sensitivity"]
    arm = f"{spec['backbone']}+attention"
    defaults = {"k": settings["grid"]["k"][0], "l1_weight": settings["grid"]["l1_weight"][0],
                "cutoff_epoch": settings["cutoff_epoch"]}
    fixed = {**defaults, "weight_decay": settings["grid"]["weight_decay"][0]}
    rows = []
    for knob in ("k", "l1_weight", "cutoff_epoch"):
        for value in sorted({defaults[knob], *spec[knob]}):
            result = run_arm(store, arm, data, profile=profile, seed=seed, overrides={**fixed, knob: value},
                             selection=spec["selection"], device=device)
            auc = result.final.metrics.get("map_region_auc", {}).get("final", np.nan)
            rows.append({"knob": knob, "value": value, "default": value == defaults[knob], "seed": seed,
                         "accuracy": result.accuracy, "map AUC": auc, "selection": result.selection})
    return pd.DataFrame(rows)


def parameter_counts(data: StudyData, ks: Sequence[int], kernel_size: int = 3) -> pd.DataFrame:
    """The pixel CNN's parameter count ``K(9NC + 1) + (K + 1)`` for this training set, per K."""
    c, _, _ = data.image_shape
    n = len(data.train)
    return pd.DataFrame([{"dataset": data.name, "N": n, "C": c, "K": k,
                          "parameters": pixel_cnn_parameter_count(n, c, k, kernel_size)} for k in ks])


def map_views(results: Sequence[ArmResult], data: StudyData, seed: int) -> dict[str, Any]:
    """The initial and final weight maps of each attention/L1 arm of ``seed`` (Figs. 4-6), with titles."""
    maps, titles, epochs = [], [], []
    for r in results:
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
        "maps": maps, "titles": titles, "region_mask": data.region_mask,
        "selection": f"seed {seed}: map before training and after the last epoch of the final fit "
                     f"({', '.join(epochs)}); for the attention arms the map is fixed from the cut-off epoch E + 1 on",
    }
