"""The GALA + ClickMe study (paper 4, :class:`GALAStudy`): which network, supervised how, is accurate and looks
where people do.

Per seed, every arm is trained from the profile's schedule (SGD + Nesterov, step decay; the last
epoch's weights are scored) on the same images with the same paired crop-and-flip augmentation:

* Table 1: ResNet, SE-ResNet, GALA-ResNet without maps (``lambda`` = 0), GALA-ResNet with the ClickMe
  map loss (``lambda`` = ``weight``: 6 in the paper; when the profile leaves it null, the loss variant's,
  6 for the paper's loss and 1e-5 for the public code's);
* controls: GALA supervised with bounding boxes of the human maps, and a plain ResNet with the map
  loss on its layer3 activity volumes (no attention module);
* the trade-off sweep: GALA + ClickMe over ``lambdas`` (0 and ``weight`` are the runs above).

Scored on the test split: top-1 / top-5 error (every image), and the human alignment of the model's
attention (the supervised volumes reduced by the column-wise L2 norm, each layer L2-normalised, upsampled
to the image and averaged over layers) and of its SmoothGrad saliency: the mean per-image Spearman rho with
the held-out human map, as a fraction of the inter-rater reliability, with a shuffled-pairs null, over the
images that have a map (GALA-era ClickMe validation records have none). Images without a map are also left
out of the map loss. Every arm and seed is a run of the shared run store (study ``gala``); GALA + ClickMe is
tested against each other arm of Table 1's pairs and the controls with paired t-tests over seeds.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor, nn

from attnlib.core.device import default_device
from attnlib.data.arrays import ArrayDataset
from attnlib.data.layouts import resolve_dataset
from attnlib.data.maps.paired import MapKind, PairedMaps
from attnlib.data.maps.sources import clickme_map
from attnlib.data.real.clickme import (
    PAPER_INTERRATER_NULL,
    PAPER_INTERRATER_RHO,
    ClickMe,
    clickme_files,
    split_of,
)
from attnlib.data.synthetic.defaults import synthetic_finegrained
from attnlib.data.synthetic.finegrained import FineGrainedDataset
from attnlib.engine.executor import Trained, TrainingRun, execute
from attnlib.engine.runstore import RunResult
from attnlib.engine.study import ArmRun, ClaimSpec, Comparison, Metric, Study, StudyContext
from attnlib.engine.trainer import TrainConfig
from attnlib.evaluation import explanations as xai
from attnlib.evaluation.alignment import interrater_reliability
from attnlib.evaluation.metrics import human_alignment, spearman_per_image
from attnlib.evaluation.stats import median_std, one_way_anova
from attnlib.losses.clickme import Variant as LossVariant
from attnlib.losses.clickme import default_weight, reduce_volume
from attnlib.methods.base import Classifier, Method
from attnlib.methods.gala import ClickMeSupervised
from attnlib.models.gala import Variant, forward_with_volumes
from attnlib.models.registry import Pretrained, create_model
from attnlib.reporting import plots

log = logging.getLogger(__name__)

DATASETS = ("synthetic", "clickme")
#: The dataset a ``data_root`` of each layout gives when ``dataset`` is not set.
LAYOUT_DATASETS = {"synthetic": "synthetic", "clickme": "clickme"}
TABLE1 = ("ResNet", "SE-ResNet", "GALA", "GALA + ClickMe")
CONTROLS = ("GALA + boxes", "ResNet + map loss")
#: The arms whose networks the figures load (:meth:`GALAStudy.figure_inputs`): only their runs keep weights.
FIGURE_ARMS = ("GALA", "GALA + ClickMe")
#: The test metrics, in report order (errors over every test image; alignments as fractions of the ceiling).
METRICS: dict[str, Metric] = {
    "top1_error": Metric("top-1 error", higher_is_better=False),
    "top5_error": Metric("top-5 error", higher_is_better=False),
    "alignment": Metric("attention alignment (fraction of the inter-rater ceiling)"),
    "smoothgrad": Metric("SmoothGrad alignment (fraction of the inter-rater ceiling)"),
}
#: The metrics the verdict speaks about: top-1 error and the alignment of attention and of SmoothGrad.
VERDICT_METRICS = ("top1_error", "alignment", "smoothgrad")
#: The weights every run is scored and shown with: the fixed schedule's last epoch (none is chosen on data).
CHECKPOINT = "last"


@dataclass(frozen=True)
class GALASettings:
    """The profile's ``gala`` section.

    ``image_size``: side of real ClickMe images after resizing; ``backbone``: the ResNet the arms add
    ``gala_`` / ``se`` to; ``variant``: GALA block and placement; ``loss_variant``: the ClickMe loss;
    ``weight``: lambda (None: the loss variant's, :attr:`map_weight`); ``lambdas``: the sweep, used as
    given; ``box_threshold``: the box control's cut (fraction of the map's maximum); ``blur_kernel``: of the
    synthetic maps; schedule: ``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``lr_milestones`` (x0.1);
    ``augment_padding``: the paired crop; ``interrater_ceiling`` (None: measured on the synthetic set,
    0.58 for ClickMe); ``n_align``: test images scored for alignment; ``smoothgrad_samples`` /
    ``smoothgrad_noise``; ``checkpoint_every``: epochs between resumable checkpoints (None: none);
    ``progress``: a progress bar per run.
    """

    image_size: int
    backbone: str
    pretrained: Pretrained
    variant: Variant
    loss_variant: LossVariant
    weight: float | None
    lambdas: tuple[float, ...]
    box_threshold: float
    blur_kernel: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    lr_milestones: tuple[int, ...]
    augment_padding: int
    interrater_ceiling: float | None
    n_align: int
    smoothgrad_samples: int
    smoothgrad_noise: float
    checkpoint_every: int | None
    progress: bool

    @property
    def map_weight(self) -> float:
        """The map-loss weight of "GALA + ClickMe" and the controls: ``weight``, or when it is None the
        ``loss_variant``'s (:func:`~attnlib.losses.clickme.default_weight`: 6 paper, 1e-5 public code)."""
        return default_weight(self.loss_variant) if self.weight is None else self.weight


@dataclass(frozen=True)
class Arm:
    """One trained configuration: the backbone family (``""`` ResNet, ``"se"``, ``"gala_"``), the map-loss
    weight (None: plain cross-entropy, no maps) and the maps it is supervised with."""

    family: str
    weight: float | None
    maps: MapKind = "clickme"


def sweep_name(value: float) -> str:
    """Name of the lambda-sweep arm with weight ``value``."""
    return f"GALA + ClickMe (lambda={value:g})"


# ---------------------------------------------------------------------------------------------- data


@dataclass
class StudyData:
    """Train and test images with their human maps (N x 1 x H x W, None when the items carry ``map``),
    the inter-rater reliability used as the alignment ceiling, and where it comes from."""

    name: str
    train: Any
    test: Any
    train_maps: Tensor | None
    test_maps: Tensor | None
    ceiling: float
    ceiling_source: str
    description: str

    @property
    def label_names(self) -> list[str]:
        return list(self.train.label_names)


def load_clickme(root: Path, image_size: int, ceiling: float | None) -> StudyData:
    """The real ClickMe files under ``root``: train and test splits by file name (val when there is no test),
    images at ``image_size`` px; the alignment ceiling ``ceiling``, else the paper's 0.58."""
    _, files = clickme_files(root)
    splits = {split_of(f.relative_to(root).as_posix() if root.is_dir() else f.name) for f in files}
    held_out = "test" if "test" in splits else "val"  # the GALA-era release has train and val only
    if not {"train", held_out} <= splits:
        raise ValueError(f"{root}: ClickMe needs train and test (or val) files by name; found {sorted(splits)}")
    train, test = (ClickMe(root, split=s, image_size=image_size) for s in ("train", held_out))
    source = "profile" if ceiling else "the paper's value for ClickMe"
    description = f"ClickMe at {root}: {len(train)} train / {len(test)} {held_out} images at {image_size} px"
    ceiling = float(ceiling or PAPER_INTERRATER_RHO)
    return StudyData("clickme", train, test, None, None, ceiling, source, description)


def load_synthetic(root: Path, blur_kernel: int, ceiling: float | None) -> StudyData:
    """The synthetic ClickMe-like set at ``root``: maps from the simulated players' bubbles blurred by
    ``blur_kernel``; the ceiling ``ceiling``, else measured between two halves of the players."""
    parts = {split: FineGrainedDataset(root, split) for split in ("train", "test")}
    measured = interrater_reliability(parts["test"], blur_kernel)  # split-half players, with the shuffled null
    if ceiling:
        source = "profile"
    else:
        ceiling = measured.rho
        source = f"measured between player halves on the test images (null {measured.null_rho:.3f})"
    config = parts["train"].config
    description = (
        f"synthetic ClickMe-like set {root.name}: {config.n_images} images {config.size} px, "
        f"{config.n_classes} classes decided by a {config.part_radius}-px part, a context square agreeing with "
        f"the label in {config.distractor_correlation_train:.0%} of training images (chance in test), "
        f"{config.n_annotators} players x {config.bubbles_per_annotator} bubbles per image, "
        f"maps blurred {blur_kernel} px"
    )
    return StudyData(
        "synthetic",
        ArrayDataset.from_dataset(parts["train"]),
        ArrayDataset.from_dataset(parts["test"]),
        _maps(parts["train"], blur_kernel),
        _maps(parts["test"], blur_kernel),
        float(ceiling),
        source,
        description,
    )


def _maps(dataset: FineGrainedDataset, kernel: int) -> Tensor:
    size = (dataset.config.size, dataset.config.size)
    maps = [clickme_map(dataset.bubbles(i), size, kernel) for i in range(len(dataset))]
    return torch.from_numpy(np.stack(maps))[:, None]


def test_subset(data: StudyData, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """The images, labels and human maps (N x H x W) of those of the first ``n`` test images that have a map
    (``has_map``; e.g. GALA-era ClickMe validation records have none)."""
    test = PairedMaps(data.test, data.test_maps)
    items = [test[i] for i in range(min(n, len(test)))]
    keep = torch.tensor([bool(item["has_map"]) for item in items])
    return (
        torch.stack([item["img"] for item in items])[keep],
        torch.tensor([int(item["lab"]) for item in items])[keep],
        torch.stack([item["map"][0] for item in items])[keep],
    )


@torch.no_grad()
def attention_maps(model: nn.Module, images: Tensor, device: torch.device, per_layer: bool = False) -> Tensor:
    """The model's attention over the image: each supervised volume reduced by the column-wise L2 norm,
    L2-normalised per image, upsampled (bilinear) to the image; the mean over layers (N x H x W), or
    every layer (N x L x H x W) with ``per_layer``."""
    model.to(device).eval()
    _, volumes = forward_with_volumes(model, images.to(device))
    size = tuple(images.shape[-2:])
    layers = []
    for volume in volumes:
        reduced = reduce_volume(volume.float())
        reduced = reduced / reduced.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
        layers.append(F.interpolate(reduced[:, None], size=size, mode="bilinear", align_corners=False)[:, 0])
    stacked = torch.stack(layers, dim=1).cpu()
    return stacked if per_layer else stacked.mean(dim=1)


def run_values(result: RunResult) -> dict[str, float]:
    """A stored run's test values: top-1 / top-5 error (top-5 when scored), and the alignment (fraction of the
    ceiling, rho, null) of the attention and of SmoothGrad."""
    last, align = result.metrics["last"], result.metrics["alignment"]
    values = {"top1_error": 1 - last["accuracy"]}
    if "top5_accuracy" in last:
        values["top5_error"] = 1 - last["top5_accuracy"]
    return values | {
        "alignment": align["attention_fraction_of_ceiling"],
        "alignment_rho": align["attention_rho"],
        "alignment_null": align["attention_null_rho"],
        "smoothgrad": align["smoothgrad_fraction_of_ceiling"],
        "smoothgrad_rho": align["smoothgrad_rho"],
    }


def _unit(values: Tensor | np.ndarray) -> np.ndarray:
    """``values`` min-max scaled to [0, 1] (a constant map gives zeros)."""
    array = np.asarray(values, dtype=np.float32)
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


# ------------------------------------------------------------------------------------------- the study


class GALAStudy(Study[GALASettings]):
    """GALA + ClickMe (paper 4): Table 1's four networks, the two controls and the lambda sweep; GALA + ClickMe
    against GALA, ResNet and both controls, paired t-tests over seeds, last-epoch weights.

    ``dataset`` None: ``synthetic`` without ``data_root``, else told from the folder's layout
    (:func:`~attnlib.data.layouts.resolve_dataset`). ``synthetic``: the ClickMe-like default (the fine-grained
    generator with the profile's ``gala_synthetic`` knobs, overridden by ``synthetic``; maps made from
    the simulated players' bubbles the way ClickMe makes them, the ceiling measured between two halves of the
    players), or the set at ``data_root``; ``clickme``: the real ClickMe files under ``data_root``
    (:func:`load_clickme`).
    """

    name = "gala"
    paper = "GALA + ClickMe"
    settings_type = GALASettings
    metrics = METRICS
    test = "paired_t"
    verdict_metrics = VERDICT_METRICS

    def __init__(
        self,
        context: StudyContext,
        settings: GALASettings | None = None,
        *,
        dataset: str | None = None,
        data_root: str | Path | None = None,
        synthetic: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(context, settings)
        self.dataset = resolve_dataset(dataset, data_root, LAYOUT_DATASETS, "GALA")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose from {DATASETS}")
        if synthetic and (self.dataset != "synthetic" or data_root is not None):
            raise ValueError(f"synthetic knobs {sorted(synthetic)} apply only to the generated synthetic default")
        if self.dataset == "clickme" and data_root is None:
            raise ValueError("dataset 'clickme' needs data_root (a folder of ClickMe .npz or TFRecord files)")
        self.data_root = Path(data_root) if data_root is not None else None
        self.synthetic_knobs = dict(synthetic or {})

    @cached_property
    def data(self) -> StudyData:
        """The study's images, maps and alignment ceiling (class docstring), loaded on first use."""
        settings = self.settings
        if self.dataset == "clickme":
            return load_clickme(self.data_root, settings.image_size, settings.interrater_ceiling)
        root = self.data_root or synthetic_finegrained(self.profile, section="gala_synthetic", **self.synthetic_knobs)
        return load_synthetic(root, settings.blur_kernel, settings.interrater_ceiling)

    # -- arms and runs -------------------------------------------------------------------------------------

    @cached_property
    def arm_table(self) -> dict[str, Arm]:
        """Table 1's arms, the two controls and the lambda sweep (``GALA + ClickMe (lambda=x)``), in order.

        The weight is :attr:`GALASettings.map_weight`; the sweep's ``lambdas`` are used as given. Sweep points
        equal to 0 or to the weight are the same runs as "GALA" and "GALA + ClickMe" (the run store keys runs
        by configuration, not by name)."""
        weight = self.settings.map_weight
        table = {
            "ResNet": Arm("", None),
            "SE-ResNet": Arm("se", None),
            "GALA": Arm("gala_", 0.0),
            "GALA + ClickMe": Arm("gala_", weight),
            "GALA + boxes": Arm("gala_", weight, "box"),
            "ResNet + map loss": Arm("", weight),
        }
        return table | {sweep_name(value): Arm("gala_", value) for value in self.settings.lambdas}

    def arms(self) -> list[str]:
        return list(self.arm_table)

    def arm(self, name: str) -> Arm:
        if name not in self.arm_table:
            raise ValueError(f"unknown GALA arm {name!r}; this profile's arms: {self.arms()}")
        return self.arm_table[name]

    def train_config(self) -> TrainConfig:
        """SGD with Nesterov momentum and the profile's step decay (x0.1 at ``lr_milestones``)."""
        s = self.settings
        return TrainConfig(
            epochs=s.epochs, batch_size=s.batch_size, optimizer="sgd_nesterov", lr=s.lr, weight_decay=s.weight_decay,
            plateau_patience=None, lr_milestones=s.lr_milestones, progress=s.progress,
        )

    def build_method(self, arm: Arm, num_classes: int) -> Method:
        """The arm's network (``<family><backbone>`` from the registry; GALA with the profile's ``variant``),
        trained by cross-entropy (``weight`` None) or :class:`ClickMeSupervised` with the arm's weight."""
        s = self.settings
        if arm.family == "gala_":
            model = create_model(s.backbone, num_classes, 3, s.pretrained, head="gala", variant=s.variant)
        else:
            model = create_model(f"{arm.family}{s.backbone}", num_classes, 3, s.pretrained)
        return Classifier(model) if arm.weight is None else ClickMeSupervised(model, arm.weight, s.loss_variant)

    def training_run(self, name: str, seed: int) -> TrainingRun:
        """The arm's run for ``seed``: trained, scored on the test split (errors, then :meth:`alignment_scores`
        with the last weights); its last weights kept only when it is one of :data:`FIGURE_ARMS` (by
        configuration: the figures load nothing else)."""
        arm, s, data = self.arm(name), self.settings, self.data
        figure_arms = [self.arm_table[a] for a in FIGURE_ARMS]
        datasets = {
            "train": PairedMaps(data.train, data.train_maps, arm.maps, s.augment_padding, s.box_threshold),
            "test": PairedMaps(data.test, data.test_maps),
        }
        config = {
            "arm": asdict(arm),
            "dataset": data.name,
            "backbone": f"{arm.family}{s.backbone}",
            "pretrained": s.pretrained,
            "variant": s.variant if arm.family == "gala_" else None,
            "loss_variant": s.loss_variant if arm.weight is not None else None,
            "n_align": s.n_align,
            "smoothgrad": [s.smoothgrad_samples, s.smoothgrad_noise],
        }

        def after(trained: Trained) -> dict[str, dict[str, Any]]:
            return {"metrics": {"alignment": self.alignment_scores(trained.method.model, trained.trainer.device)}}

        return TrainingRun(
            study=self.name, config=config, seed=seed, profile=self.profile, datasets=datasets,
            train=self.train_config(), build=lambda: self.build_method(arm, len(data.label_names)),
            label_names=data.label_names,
            checkpoint_every=s.checkpoint_every, test_every_epoch=True,
            keep=(CHECKPOINT,) if arm in figure_arms else (), after=after,
        )

    def run_arm(self, arm: str, seed: int, scenario: str = "default") -> ArmRun:
        result = execute(self.context.store, self.training_run(arm, seed), self.context.device)
        return ArmRun(arm, scenario, seed, [result], {CHECKPOINT: run_values(result)},
                      {CHECKPOINT: result.metrics["last_epoch"]})

    def trained_model(self, run: ArmRun) -> nn.Module:
        """The network of a stored run (its last weights), in eval mode."""
        method = self.build_method(self.arm(run.arm), len(self.data.label_names))
        method.load_state_dict(run.runs[0].state_dict(CHECKPOINT))
        return method.model.eval()

    # -- alignment -----------------------------------------------------------------------------------------

    def smoothgrad(self, model: nn.Module, images: Tensor, labels: Tensor, device: torch.device) -> Tensor:
        """SmoothGrad saliency (N x H x W, on the CPU) with the profile's samples and noise."""
        s = self.settings
        return xai.smoothgrad_maps(
            model.to(device), images.to(device), labels.to(device), s.smoothgrad_samples, s.smoothgrad_noise
        ).cpu()

    def alignment_scores(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Human alignment of the attention maps and of SmoothGrad on those of the first ``n_align`` test images
        that have a map (:func:`test_subset`; ``n`` of them, ``n_without_map`` left out). NaN, with a warning,
        when fewer than 2 have one."""
        data = self.data
        n_align = min(self.settings.n_align, len(data.test))
        images, labels, human = test_subset(data, n_align)
        counts = {"ceiling": data.ceiling, "n": len(images), "n_without_map": n_align - len(images)}
        if len(images) < 2:
            log.warning(
                "%d of the first %d test images have a human map: human alignment needs 2, reported as NaN",
                len(images), n_align,
            )
            keys = ("rho", "fraction_of_ceiling", "null_rho")
            return {**{f"{name}_{k}": float("nan") for name in ("attention", "smoothgrad") for k in keys}, **counts}
        attention = attention_maps(model, images, device)
        saliency = self.smoothgrad(model, images, labels, device)
        out = {}
        for name, maps in (("attention", attention), ("smoothgrad", saliency)):
            scores = human_alignment(maps.numpy(), human.numpy(), data.ceiling)
            out.update({f"{name}_{k}": v for k, v in scores.items() if k not in ("ceiling", "n")})
        return {**out, **counts}

    # -- the paper's comparisons and claims ----------------------------------------------------------------

    def comparisons(self) -> list[Comparison]:
        """GALA + ClickMe against GALA and ResNet (Table 1) and against both controls."""
        return [Comparison("GALA + ClickMe", reference) for reference in ("GALA", "ResNet", *CONTROLS)]

    def claim_specs(self) -> list[ClaimSpec]:
        headline = Comparison("GALA + ClickMe", "GALA")
        return [
            ClaimSpec("ClickMe supervision lowers GALA's top-1 error", headline, "top1_error",
                      "0.5390 -> 0.4929 (53.90 % -> 49.29 %, ClickMe subset of ILSVRC12)", checkpoint=CHECKPOINT),
            ClaimSpec("ClickMe supervision makes GALA's attention align with human maps", headline, "alignment",
                      f"0.8856 of the inter-rater ceiling with ClickMe (rho {PAPER_INTERRATER_RHO}, "
                      f"null {PAPER_INTERRATER_NULL})", checkpoint=CHECKPOINT),
        ]

    # -- what the report shows -----------------------------------------------------------------------------

    def describe(self) -> str:
        """The base's paragraph (arms, test), then the data, its alignment ceiling, the networks and the schedule."""
        s, data = self.settings, self.data
        lines = [
            super().describe(),
            f"data: {data.description}",
            (f"alignment ceiling (inter-rater reliability): {data.ceiling:.3f}, {data.ceiling_source} "
             f"(paper: {PAPER_INTERRATER_RHO})"),
            (f"networks: {s.backbone} family (gala_{s.backbone} with the {s.variant} GALA block, se{s.backbone}), "
             f"pretrained={s.pretrained}; loss: {s.loss_variant}, lambda {s.map_weight}"),
            (f"training: {s.epochs} epochs, SGD + Nesterov lr {s.lr} x0.1 at {list(s.lr_milestones)}, "
             f"batch {s.batch_size}, paired crop (padding {s.augment_padding}) and flip"),
        ]
        if self.profile != "paper":
            lines.append(f"CPU substitute: the {s.backbone} family at {s.image_size} px for the paper's ResNet-50 "
                         "family at 224 px")
        return "\n".join(lines)

    def results_by_run(self) -> pd.DataFrame:
        """One row per arm and seed: the map-loss weight and loss variant that ran (None without the map loss),
        the last epoch and the test values of :func:`run_values`."""
        rows = [
            {"seed": r.seed, "arm": r.arm, "weight": r.runs[0].spec.config["arm"]["weight"],
             "loss_variant": r.runs[0].spec.config["loss_variant"], "epoch": r.epochs[CHECKPOINT],
             **r.values[CHECKPOINT]}
            for r in self.runs
        ]
        return pd.DataFrame(rows)

    def sweep(self) -> pd.DataFrame:
        """The lambda sweep's rows of :meth:`wide` (one per seed and lambda), with ``lambda``, by lambda."""
        wide = self.wide(CHECKPOINT)
        names = [sweep_name(value) for value in self.settings.lambdas]
        part = wide[wide["arm"].isin(names)]
        part = part.assign(**{"lambda": [self.arm(name).weight for name in part["arm"]]})
        return part.sort_values(["lambda", "seed"]).reset_index(drop=True)

    def table1_anova(self) -> pd.DataFrame:
        """One-way ANOVA over Table 1's four arms per verdict metric (empty with fewer than 2 seeds per arm)."""
        wide = self.wide(CHECKPOINT)
        part = wide[wide["arm"].isin(TABLE1)]
        rows = []
        for metric in VERDICT_METRICS:
            values = part[["arm", metric]].dropna() if metric in part.columns else part.iloc[:0]
            counts = values.groupby("arm").size()
            if len(counts) == len(TABLE1) and counts.min() >= 2:
                result = one_way_anova(values, metric, "arm")
                rows.append({"metric": METRICS[metric].title, "F": result["F"], "p": result["p"],
                             "df between": result["df_between"], "df within": result["df_within"]})
        return pd.DataFrame(rows, columns=["metric", "F", "p", "df between", "df within"])

    def tables(self) -> dict[str, pd.DataFrame]:
        """The runs, the base tables (all arms; paired t-tests), then Table 1's arms with their ANOVA, the
        controls beside GALA + ClickMe, and the lambda sweep (median ± std over seeds, last epoch)."""
        summary = self.summary(CHECKPOINT)
        sweep = self.sweep()
        sweep_metrics = [m for m in VERDICT_METRICS if m in sweep.columns]
        trade_off = median_std(sweep, sweep_metrics, "lambda").display if len(sweep) else sweep
        return {
            "runs": self.results_by_run(),
            **super().tables(),
            "Table 1: error and human alignment (last epoch), median ± std over seeds":
                summary.reindex([a for a in TABLE1 if a in summary.index]),
            "Table 1: one-way ANOVA over its four arms": self.table1_anova(),
            "controls beside GALA + ClickMe (last epoch), median ± std over seeds":
                summary.reindex([a for a in ("GALA + ClickMe", *CONTROLS) if a in summary.index]),
            "lambda trade-off of GALA + ClickMe (last epoch), median ± std over seeds":
                trade_off.rename(columns={m: METRICS[m].title for m in sweep_metrics}),
        }

    # -- figures -------------------------------------------------------------------------------------------

    def figure_inputs(self, seed: int, n: int) -> tuple[dict[str, ArmRun], dict[str, nn.Module], torch.device,
                                                         tuple[Tensor, Tensor, Tensor]]:
        """What the map figures compare: ``seed``'s runs of :data:`FIGURE_ARMS`, their networks (last weights),
        the device and :func:`test_subset` of ``n`` images."""
        runs = {r.arm: r for r in self.runs if r.seed == seed and r.arm in FIGURE_ARMS}
        missing = [arm for arm in FIGURE_ARMS if arm not in runs]
        if missing:
            raise ValueError(f"no run of {missing} for seed {seed}; run them first")
        models = {arm: self.trained_model(runs[arm]) for arm in FIGURE_ARMS}
        return runs, models, default_device(self.context.device), test_subset(self.data, n)

    def layer_views(self, seed: int, n: int = 4) -> dict[str, Any]:
        """Fig. 4: per test image, the human map and the attention of every GALA layer for GALA without and
        with ClickMe maps (``seed``'s runs, last weights), for ``plots.map_grid``; ``selection`` says which."""
        runs, models, device, (images, labels, human) = self.figure_inputs(seed, n)
        per_arm = {name: attention_maps(model, images, device, True) for name, model in models.items()}
        n_layers = per_arm["GALA"].shape[1]
        maps = [
            [_unit(human[i])] + [_unit(per_arm[name][i, j]) for name in per_arm for j in range(n_layers)]
            for i in range(len(images))
        ]
        rho = {name: spearman_per_image(per_arm[name].mean(1).numpy(), human.numpy()) for name in per_arm}
        names = self.data.label_names
        return {
            "images": [img.permute(1, 2, 0).numpy() for img in images],
            "maps": maps,
            "row_titles": [
                f"{names[int(labels[i])]}: rho {rho['GALA'][i]:.2f} / {rho['GALA + ClickMe'][i]:.2f}"
                for i in range(len(images))
            ],
            "col_titles": ["human map"] + [f"{name} L{j + 1}" for name in per_arm for j in range(n_layers)],
            "selection": f"seed {seed}, last weights (epoch {runs['GALA'].epochs[CHECKPOINT]}); "
            f"the first {len(images)} test images; rho = Spearman with the human map (GALA / GALA + ClickMe)",
        }

    def smoothgrad_views(self, seed: int, n: int = 4) -> dict[str, Any]:
        """SmoothGrad of GALA without and with ClickMe maps and their difference (with minus without, min-max
        scaled), ``seed``'s runs, last weights, for ``plots.map_grid``; ``selection`` says which."""
        runs, models, device, (images, labels, human) = self.figure_inputs(seed, n)
        saliency = {name: self.smoothgrad(model, images, labels, device) for name, model in models.items()}
        maps = []
        for i in range(len(images)):
            without, with_maps = _unit(saliency["GALA"][i]), _unit(saliency["GALA + ClickMe"][i])
            maps.append([_unit(human[i]), without, with_maps, _unit(with_maps - without)])
        return {
            "images": [img.permute(1, 2, 0).numpy() for img in images],
            "maps": maps,
            "row_titles": [self.data.label_names[int(label)] for label in labels],
            "col_titles": ["human map", "SmoothGrad GALA", "SmoothGrad GALA + ClickMe", "difference (with - without)"],
            "selection": f"seed {seed}, last weights (epoch {runs['GALA'].epochs[CHECKPOINT]}); each map min-max "
            "scaled; difference = with minus without, scaled",
        }

    def figures(self, seed: int | None = None, n: int = 4) -> list[Figure]:
        """Table 1's error and attention alignment per seed, the lambda trade-off (every run's last epoch), and
        Fig. 4 and the SmoothGrad maps of ``seed`` (default: the first run's) on ``n`` test images."""
        seed = self.runs[0].seed if seed is None else seed
        wide = self.wide(CHECKPOINT)
        table1 = [a for a in TABLE1 if a in set(wide["arm"])]
        figures = [plots.metrics_by_arm(
            wide, {m: METRICS[m].title for m in ("top1_error", "alignment")}, arms=table1,
            title=f"Table 1 per seed ({self.data.name}), last-epoch weights of the fixed schedule",
        )]
        sweep = self.sweep()
        if len(sweep):
            figures.append(plots.tradeoff(sweep, "alignment", "top1_error", "lambda",
                                          title="GALA + ClickMe: top-1 error vs attention alignment (last epoch)"))
        for views in (self.layer_views(seed, n), self.smoothgrad_views(seed, n)):
            figures.append(plots.map_grid(views["images"], views["maps"], row_titles=views["row_titles"],
                                          col_titles=views["col_titles"], suptitle=views["selection"]))
        return figures
