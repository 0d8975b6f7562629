"""GG-CAM's study: the networks compared, their data, training and evaluation, per profile.

Arms (the paper's four networks plus the public code's variant):

- ``resnet`` / ``effnet``: the backbone with a CAM head trained by cross-entropy only (the CAM head
  gives the same logits as GAP + linear, so this is the standard network, and its maps can be scored);
- ``resnet+gg-cam`` / ``effnet+gg-cam``: the paper's method (Eq. 9-11);
- ``resnet+gg-cam (public code)``: the authors' public code's variant (class-0 map, raw map, channel-mean
  CAM, exp(log sigma) with its initialisations), run beside the paper's method so its effect is visible,
  with the public code's whole recipe from the profile's ``public_code`` section (:data:`PUBLIC_RECIPE`):
  its network and initialisation, learning rate, patience, reload of the best weights and Adam state at
  every lr drop, epoch and time budget, and its gaze maps (raw samples counted, B as OpenCV's kernel size,
  corner point-sampling).

The profile's ``gg_cam`` section names the backbone behind each family (ResNet-50 and EfficientNetV2-S
in ``paper``; smaller ones on the CPU), the schedule and the image scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from attnlib.data.defaults import egd_cxr_paths, synthetic_egd_cxr
from attnlib.data.egd_cxr import EGDCXR, EGDCXRSettings
from attnlib.device import default_device
from attnlib.methods.gg_cam import GGCAM, TABLE1, CAMClassifier, GGCAMConfig
from attnlib.models.cam import CAMNet, cam_grid, create_cam_model
from attnlib.profiles import load_profile
from attnlib.stats import median_std, one_way_anova, with_profile_caveat
from attnlib.training.experiment import cam_localisation_evaluator, run_seeds
from attnlib.training.methods import Method
from attnlib.training.runstore import RunResult, RunStore
from attnlib.training.trainer import TrainConfig

STUDY = "gg_cam"
ARMS = ("resnet", "resnet+gg-cam", "effnet", "effnet+gg-cam", "resnet+gg-cam (public code)")
#: Synthetic scenarios: the default (no cue) and one whose tag position encodes the class in train/val.
SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "cue": {"cue": "marker_position", "cue_correlation_train": 0.9, "cue_correlation_val": 0.9},
}


#: The keys of a profile's ``gg_cam.public_code`` section: each one setting of the public-code arm.
PUBLIC_RECIPE = (
    "backbone", "pretrained", "lr", "plateau_patience", "reload_best_on_lr_drop", "epochs", "max_hours",
    "early_stop_patience", "amp", "blur_units", "resample", "gaze_source", "gaze_weight",
)
#: The recipe's gaze-map settings (:class:`~attnlib.data.egd_cxr.EGDCXRSettings` fields) and the paper's values.
PUBLIC_GAZE = ("blur_units", "resample", "gaze_source", "gaze_weight")
GAZE_DEFAULTS = {k: getattr(EGDCXRSettings(), k) for k in PUBLIC_GAZE}


@dataclass(frozen=True)
class Arm:
    """One network of the comparison: its family, backbone, whether gaze supervises it, which variant."""

    name: str
    family: str
    backbone: str
    gaze: bool
    public_code: bool

    @classmethod
    def parse(cls, name: str, settings: Mapping[str, Any]) -> Arm:
        """The arm ``name`` with its backbone: the family's from ``backbones``, the public-code arm's from
        ``public_code``."""
        if name not in ARMS:
            raise ValueError(f"unknown GG-CAM network {name!r}; choose from {ARMS}")
        family, public = name.split("+")[0], "public code" in name
        backbone = settings["public_code"]["backbone"] if public else settings["backbones"][family]
        return cls(name, family, backbone, "gg-cam" in name, public)


def study_settings(profile: str | None) -> dict[str, Any]:
    """The profile's ``gg_cam`` section (backbones, schedule, scale, sweep defaults, the public recipe)."""
    settings = load_profile(profile)["gg_cam"]
    recipe = settings.get("public_code", {})
    if set(recipe) != set(PUBLIC_RECIPE):
        raise ValueError(
            f"profile {profile!r}: gg_cam.public_code must set exactly {list(PUBLIC_RECIPE)}; "
            f"missing {sorted(set(PUBLIC_RECIPE) - set(recipe))}, unknown {sorted(set(recipe) - set(PUBLIC_RECIPE))}"
        )
    return settings


def train_config(arm: Arm, settings: Mapping[str, Any]) -> TrainConfig:
    """Adam with ReduceLROnPlateau: Table 1 in the paper profile, the profile's schedule otherwise; the
    public-code arm takes its recipe (rate, patience, reload on lr drop, epoch and time budget)."""
    if arm.public_code:
        recipe = settings["public_code"]
        return TrainConfig(
            epochs=recipe["epochs"], batch_size=settings["batch_size"], optimizer="adam", lr=recipe["lr"],
            plateau_patience=recipe["plateau_patience"], early_stop_patience=recipe["early_stop_patience"],
            reload_best_on_lr_drop=recipe["reload_best_on_lr_drop"], max_hours=recipe["max_hours"],
            amp=recipe["amp"], progress=False,
        )
    key = f"{arm.family}+gg-cam" if arm.gaze else arm.family
    lr = TABLE1[key]["lr"] if settings["table1"] else settings["lr"]
    patience = TABLE1[key]["patience"] if settings["table1"] else settings["plateau_patience"]
    return TrainConfig(
        epochs=settings["epochs"], batch_size=settings["batch_size"], optimizer="adam", lr=lr,
        plateau_patience=patience, early_stop_patience=settings.get("early_stop_patience"), progress=False,
    )


def pretrained(arm: Arm, settings: Mapping[str, Any]) -> bool | str:
    """How the arm's network starts: the recipe's for the public-code arm, the profile's otherwise."""
    return settings["public_code"]["pretrained"] if arm.public_code else settings["pretrained"]


def gaze_recipe(arm: Arm, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The gaze-map settings the arm trains with: the public recipe's (:data:`PUBLIC_GAZE`), or none (the
    paper's defaults)."""
    return {k: settings["public_code"][k] for k in PUBLIC_GAZE} if arm.public_code else {}


def method_config(arm: Arm, settings: Mapping[str, Any]) -> GGCAMConfig | None:
    """The GG-CAM configuration of a gaze-supervised arm (Table 1 sigma initialisation), else None."""
    if not arm.gaze:
        return None
    if arm.public_code:
        return GGCAMConfig.public_code(arm.family)
    return GGCAMConfig(
        sigma_parameterisation=settings["sigma_parameterisation"],
        sigma_sm_init=TABLE1[f"{arm.family}+gg-cam"]["sigma_sm_init"],
        scalar_lr=settings.get("scalar_lr"),
    )


def build_method(arm: Arm, settings: Mapping[str, Any], num_classes: int) -> Method:
    """A fresh network of this arm (pretrained weights when present locally, else random)."""
    model = create_cam_model(
        arm.backbone, num_classes, in_chans=1, pretrained=pretrained(arm, settings), channel_mean=arm.public_code
    )
    config = method_config(arm, settings)
    return CAMClassifier(model) if config is None else GGCAM(model, config)


def load_splits(
    profile: str | None,
    scenario: str,
    data_root: str | Path | None,
    model: CAMNet,
    settings: Mapping[str, Any],
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
    data = EGDCXR(paths, settings=EGDCXRSettings(scale=settings["scale"], masks=True))
    grid = cam_grid(model, data.image(0).shape)
    data = data.with_settings(hmap_size=grid)
    gaze = dict(gaze or {})
    if gaze.get("resample") == "public_corner":
        gaze.update(corner_pad=None, corner_stride=round(data.image(0).shape[-2] / grid[0] / settings["scale"]))
    training = data.with_settings(masks=False, **gaze)
    return {"train": training.select("train"), "val": training.select("val"), "test": data.select("test")}


def run_arm(
    store: RunStore,
    arm_name: str,
    scenario: str,
    *,
    profile: str,
    seeds: Sequence[int],
    data_root: str | Path | None = None,
    device: str | None = None,
) -> list[RunResult]:
    """Train (or load) one network on one scenario for every seed."""
    settings = study_settings(profile)
    arm = Arm.parse(arm_name, settings)
    gaze = gaze_recipe(arm, settings)
    splits = load_splits(profile, scenario, data_root, build_method(arm, settings, 3).model, settings, gaze)
    config = method_config(arm, settings)
    return run_seeds(
        store, STUDY, arm.name, lambda: build_method(arm, settings, len(splits["train"].label_names)),
        splits, train_config(arm, settings), seeds, profile,
        config={"scenario": scenario, "backbone": arm.backbone, "pretrained": pretrained(arm, settings),
                "gg_cam": asdict(config) if config else None, "gaze": gaze},
        device=device, evaluators={"localisation": cam_localisation_evaluator},
    )


def results_frame(store: RunStore, runs: Mapping[str, Sequence[RunResult]]) -> pd.DataFrame:
    """One row per run of ``runs`` (scenario -> runs): arm, scenario, seed, selected epochs, test metrics."""
    keys = {r.spec.key for rs in runs.values() for r in rs}
    frame = store.results(STUDY, keys=keys)
    frame = frame.rename(columns={"config.arm": "arm", "config.scenario": "scenario"})
    return frame.sort_values(["scenario", "arm", "seed"]).reset_index(drop=True)


def curriculum(history: pd.DataFrame) -> dict[str, Any]:
    """From one run's history: the epoch where the weighted gaze term first falls to the CE term.

    ``gaze_dominated_epochs`` counts the epochs whose mean training ``term_sm`` exceeds ``term_ce``.
    """
    sm, ce = history["train_term_sm"].to_numpy(), history["train_term_ce"].to_numpy()
    crossed = np.flatnonzero(sm <= ce)
    return {
        "cross_epoch": int(history["epoch"].iloc[crossed[0]]) if crossed.size else None,
        "gaze_dominated_epochs": int((sm > ce).sum()),
        "epochs": len(history),
    }


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


def comparisons(arms: Sequence[str]) -> list[tuple[str, str]]:
    """(standard, gaze-supervised) pairs present among ``arms``: the paper's ANOVA comparisons."""
    pairs = [("resnet", "resnet+gg-cam"), ("effnet", "effnet+gg-cam"), ("resnet", "resnet+gg-cam (public code)")]
    return [(a, b) for a, b in pairs if a in arms and b in arms]


#: The report's test metrics, in order, with the title a table or figure gives each (both AUCs macro; Eq. 12
#: per class as the paper reports it, pooled beside it; the public code's 3 x 3-neighbourhood rule as information).
REPORT_METRICS: dict[str, str] = {
    "auc": "AUC (one-vs-one, macro; the paper's)",
    "auc_ovr": "AUC (one-vs-rest, macro; the public code's log)",
    "interpretability/cardiomegaly": "interpretability, cardiomegaly -> heart (Eq. 12, peak cell; the paper's rule)",
    "interpretability/pneumonia": "interpretability, pneumonia -> lungs (Eq. 12, peak cell; the paper's rule)",
    "interpretability": "interpretability, both classes pooled (Eq. 12, peak cell)",
    "interpretability_public/cardiomegaly": (
        "interpretability, cardiomegaly -> heart (3 x 3 neighbourhood of the peak; the public code's rule)"
    ),
    "interpretability_public/pneumonia": (
        "interpretability, pneumonia -> lungs (3 x 3 neighbourhood of the peak; the public code's rule)"
    ),
    "interpretability_public": "interpretability, both classes pooled (3 x 3 neighbourhood of the peak)",
}


_ANOVA_COLUMNS = [
    "scenario", "comparison", "metric", "title", "checkpoint", "median standard", "median gaze", "seeds", "F", "p",
]


def report_metrics(frame: pd.DataFrame, checkpoint: str = "best") -> list[str]:
    """The :data:`REPORT_METRICS` that ``frame`` holds for ``checkpoint`` (runs stored before a metric existed
    lack it)."""
    return [m for m in REPORT_METRICS if f"metrics.{checkpoint}.{m}" in frame.columns]


def anova_table(frame: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One-way ANOVA (statsmodels) of each metric between each standard network and its GG-CAM version.

    ``metrics``: default the :data:`REPORT_METRICS` the frame holds (AUCs, Eq. 12 per class and pooled, both
    rules). One row per scenario, comparison, metric and checkpoint (``best`` = best validation loss,
    ``last`` = last epoch), with the metric's title, both medians, the number of seeds, F and p. F and p
    are NaN with fewer than 2 seeds per network or when every run of both networks scored the same (no
    variance to test; :func:`~attnlib.stats.one_way_anova`).
    """
    rows = []
    for scenario, part in frame.groupby("scenario", sort=False):
        for standard, guided in comparisons(part["arm"].unique()):
            pair = part[part["arm"].isin([standard, guided])]
            for metric in metrics if metrics is not None else report_metrics(frame):
                for ckpt in ("best", "last"):
                    column = f"metrics.{ckpt}.{metric}"
                    counts = pair.dropna(subset=[column]).groupby("arm").size()
                    seeds = int(min(counts.get(standard, 0), counts.get(guided, 0)))
                    # a per-seed pass of the sweep has one run per arm: no test, only the medians
                    test = one_way_anova(pair, column, "arm") if seeds >= 2 else {"F": np.nan, "p": np.nan}
                    medians = pair.groupby("arm")[column].median()
                    rows.append({
                        "scenario": scenario, "comparison": f"{standard} vs {guided}", "metric": metric,
                        "title": REPORT_METRICS.get(metric, metric), "checkpoint": ckpt,
                        "median standard": medians[standard], "median gaze": medians[guided],
                        "seeds": seeds, "F": test["F"], "p": test["p"],
                    })
    return pd.DataFrame(rows, columns=_ANOVA_COLUMNS)


def verdict(
    anova: pd.DataFrame,
    scenario: str = "default",
    checkpoint: str = "best",
    alpha: float = 0.05,
    profile: str | None = None,
    metrics: Sequence[str] = ("auc",),
) -> str:
    """Sentences computed from ``anova``: for each of ``metrics`` (default the paper's one-vs-one AUC; higher is
    better; one line each) and comparison, whether GG-CAM improved it at p < ``alpha``; after the smoke caveat
    when ``profile`` is ``smoke``."""
    unknown = sorted(set(metrics) - set(anova["metric"])) if len(anova) else []
    if unknown:
        raise ValueError(f"the ANOVA table has no metric(s) {unknown}; it has {sorted(set(anova['metric']))}")
    rows = anova[(anova["scenario"] == scenario) & (anova["checkpoint"] == checkpoint)]
    lines = [
        " ".join(_sentence(row, checkpoint, alpha) for row in rows[rows["metric"] == metric].to_dict("records"))
        for metric in metrics
    ]
    text = "\n".join(lines) if len(rows) else "No standard/GG-CAM pair was run in this scenario."
    return with_profile_caveat(text, profile)


def _sentence(row: Mapping[str, Any], checkpoint: str, alpha: float) -> str:
    """One comparison's outcome from its :func:`anova_table` row."""
    standard, gaze, p = row["median standard"], row["median gaze"], row["p"]
    if row["seeds"] < 2:
        return f"{row['comparison']}: fewer than 2 seeds per network, no test."
    if not np.isfinite(p):
        return f"{row['comparison']}: every run of both networks scored {standard:.3f} ({row['title']}), no test."
    better, significant = gaze > standard, p < alpha
    outcome = "improved" if better and significant else "did not significantly improve"
    if not better and significant:
        outcome = "significantly lowered"
    return (
        f"{row['comparison']}: gaze supervision {outcome} the test {row['title']}: median {standard:.3f} -> "
        f"{gaze:.3f} ({checkpoint} checkpoint, one-way ANOVA p = {p:.2g}, {row['seeds']} seeds per network)."
    )


def metric_summary(frame: pd.DataFrame, checkpoint: str = "best") -> pd.DataFrame:
    """The report's metrics (:data:`REPORT_METRICS` the frame holds) per network and scenario, ``median ± std``
    over seeds, columns named by their titles."""
    metrics = report_metrics(frame, checkpoint)
    frame = frame.assign(group=frame["scenario"] + " | " + frame["arm"])
    table = median_std(frame, [f"metrics.{checkpoint}.{m}" for m in metrics], "group").display
    table.columns = [REPORT_METRICS[m] for m in metrics]
    return table


def precision_recall(frame: pd.DataFrame, label_names: Sequence[str], checkpoint: str = "best") -> pd.DataFrame:
    """Table 2: per-class precision and recall per network and scenario, ``median ± std`` over seeds."""
    metrics = [f"metrics.{checkpoint}.{kind}/{name}" for name in label_names for kind in ("precision", "recall")]
    frame = frame.assign(group=frame["scenario"] + " | " + frame["arm"])
    table = median_std(frame, metrics, "group").display
    table.columns = [c.removeprefix(f"metrics.{checkpoint}.") for c in table.columns]
    return table


def cue_following(runs: Sequence[RunResult], truth: pd.DataFrame, checkpoint: str = "best") -> pd.DataFrame:
    """Per run of the cue scenario: how often test predictions equal the class the cue encodes vs the label.

    In the test split the cue is independent of the label, so a network that learned the cue
    follows it more often than the 1/3 expected by chance.
    """
    cue = truth.set_index("dicom_id")["cue_position"]
    rows = []
    for run in runs:
        pred = run.predictions[checkpoint]
        cue_class = cue.reindex(pred["id"].astype(str)).to_numpy()
        rows.append({
            "arm": run.spec.config["arm"], "seed": run.spec.seed,
            "follows cue": float(np.mean(pred["pred"].to_numpy() == cue_class)),
            "follows label": float(np.mean(pred["pred"].to_numpy() == pred["label"].to_numpy())),
        })
    return pd.DataFrame(rows)


def trained_model(run: RunResult, profile: str | None, checkpoint: str = "best") -> CAMNet:
    """The CAM network of a stored run with its ``best`` (validation) or ``last`` (epoch) weights."""
    settings = {**study_settings(profile), "pretrained": False}
    arm = Arm.parse(run.spec.config["arm"], settings)
    method = build_method(arm, settings, len(run.metrics[checkpoint]["confusion"]))
    method.load_state_dict(run.state_dict(checkpoint))
    return method.model


def scenario_root(profile: str | None, scenario: str) -> Path:
    """Folder of the synthetic data of ``scenario`` (generated on first use)."""
    return synthetic_egd_cxr(profile, **SCENARIOS[scenario])


def hyperparameters(networks: Sequence[str], profile: str | None) -> pd.DataFrame:
    """Table 1 as used: backbone and its start, optimiser, learning rates, patience, reload on lr drop,
    epoch and time budget, sigma/alpha set-up, gaze-map recipe and the Eq. 12 rule shown, per network."""
    settings = study_settings(profile)
    rows = []
    for name in networks:
        arm = Arm.parse(name, settings)
        train, gg = train_config(arm, settings), method_config(arm, settings)
        gaze = {**GAZE_DEFAULTS, **gaze_recipe(arm, settings)}
        rows.append({
            "network": name, "backbone": arm.backbone, "pretrained": pretrained(arm, settings),
            "optimizer": train.optimizer, "lr": train.lr, "plateau patience": train.plateau_patience,
            "reload best on lr drop": train.reload_best_on_lr_drop, "epochs": train.epochs,
            "max hours": train.max_hours, "early stop": train.early_stop_patience, "batch": train.batch_size,
            "precision (CUDA)": "bf16 autocast" if train.amp else "fp32",
            "variant": gg.variant if gg else "cross-entropy only",
            "sigma": gg.sigma_parameterisation if gg else "",
            "sigma_sm init": gg.sigma_sm_init if gg else np.nan,
            "sigma_ce init": gg.sigma_ce_init if gg else np.nan,
            "scalar lr": (gg.scalar_lr or train.lr) if gg else np.nan,
            **{f"gaze {k.removeprefix('gaze_')}": v for k, v in gaze.items()},
            "Eq. 12 rule": "peak; 3x3 neighbourhood shown too" if arm.public_code else "peak",
        })
    return pd.DataFrame(rows).set_index("network")


def figure_views(
    runs: Sequence[RunResult],
    profile: str | None,
    scenario: str,
    data_root: str | Path | None,
    *,
    seed: int,
    checkpoint: str = "best",
) -> dict[str, Any]:
    """What Fig. 2 and Table 3 show for one seed: Omega values per network and Psi / Omega_Y overlays."""
    chosen = [r for r in runs if r.spec.seed == seed]
    models = {r.spec.config["arm"]: trained_model(r, profile, checkpoint) for r in chosen}
    first = next(iter(models.values()))
    test = load_splits(profile, scenario, data_root, first, study_settings(profile))["test"]
    indices = list(range(len(test)))
    examples = [int(np.flatnonzero(test.labels == c)[0]) for c in range(len(test.label_names)) if (test.labels == c).any()]
    omegas = {arm: cam_maps(model, test, indices) for arm, model in models.items()}
    images = [test.image(i) for i in examples]
    maps = [[test.heatmap(i, images[k].shape)] + [omegas[arm][i, test.labels[i]] for arm in models]
            for k, i in enumerate(examples)]
    epochs = ", ".join(f"{r.spec.config['arm']}: epoch {r.metrics[f'{checkpoint}_epoch']}" for r in chosen)
    return {
        "omega_values": omegas,
        "images": images,
        "maps": maps,
        "row_titles": [f"{test.label_names[test.labels[i]]} ({test.metadata.at[i, 'dicom_id'][:8]})" for i in examples],
        "col_titles": ["Psi (gaze)", *(f"Omega_Y {arm}" for arm in models)],
        "selection": f"seed {seed}, {checkpoint} checkpoint ({'lowest validation loss' if checkpoint == 'best' else 'last epoch'}): {epochs}",
    }


def curriculum_summary(table: pd.DataFrame) -> str:
    """One sentence per gaze-supervised network, computed from :func:`curriculum` rows of its runs."""
    sentences = []
    for (scenario, arm), part in table.groupby(["scenario", "arm"], sort=False):
        crossed = part["cross_epoch"].dropna()
        dominated = part["gaze_dominated_epochs"]
        span = f"{dominated.min()}-{dominated.max()}" if dominated.min() != dominated.max() else f"{dominated.min()}"
        when = (f"the terms crossed in {len(crossed)} of {len(part)} runs (epochs {sorted(crossed.astype(int))})"
                if len(crossed) else "the terms never crossed")
        sentences.append(f"{arm} ({scenario}): the gaze term dominated {span} of {part['epochs'].max()} epochs; {when}.")
    return "\n".join(sentences)
