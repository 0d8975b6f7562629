"""The GALA + ClickMe study (paper 4): which network, supervised how, is accurate and looks where people do.

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
out of the map loss. Every arm and seed is a run of the shared run store (study ``gala``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlib import explanations as xai
from attnlib.data.arrays import ArrayDataset
from attnlib.data.clickme import PAPER_INTERRATER_RHO, ClickMe, clickme_files, split_of
from attnlib.data.defaults import synthetic_finegrained
from attnlib.data.layouts import resolve_dataset
from attnlib.data.paired import MapKind, PairedMaps
from attnlib.data.synthetic_finegrained import FineGrainedDataset
from attnlib.explore import interrater_reliability
from attnlib.losses.clickme import default_weight, reduce_volume
from attnlib.map_sources import clickme_map
from attnlib.methods.gala import ClickMeSupervised
from attnlib.metrics import human_alignment, spearman_per_image
from attnlib.models.gala import create_gala_resnet, forward_with_volumes
from attnlib.models.registry import create_model
from attnlib.profiles import load_profile
from attnlib.progress import tqdm
from attnlib.seeding import seed_everything
from attnlib.stats import describe_change, paired_t_test, with_profile_caveat
from attnlib.training.experiment import data_fingerprint, make_loaders, score
from attnlib.training.methods import Classifier, Method
from attnlib.training.runstore import RunResult, RunSpec, RunStore
from attnlib.training.trainer import TrainConfig, Trainer

log = logging.getLogger(__name__)

STUDY = "gala"
DATASETS = ("synthetic", "clickme")
#: The dataset a ``data_root`` of each layout gives when ``dataset`` is not set.
LAYOUT_DATASETS = {"synthetic": "synthetic", "clickme": "clickme"}
TABLE1 = ("ResNet", "SE-ResNet", "GALA", "GALA + ClickMe")
CONTROLS = ("GALA + boxes", "ResNet + map loss")


@dataclass(frozen=True)
class Arm:
    """One trained configuration: the backbone family (``""`` ResNet, ``"se"``, ``"gala_"``), the map-loss
    weight (None: plain cross-entropy, no maps) and the maps it is supervised with."""

    family: str
    weight: float | None
    maps: MapKind = "clickme"


def study_settings(profile: str | None) -> dict[str, Any]:
    """The profile's ``gala`` section, its ``weight`` resolved by :func:`map_weight`."""
    section = load_profile(profile)["gala"]
    return {**section, "weight": map_weight(section)}


def map_weight(settings: Mapping[str, Any]) -> float:
    """The map-loss weight of "GALA + ClickMe" and the controls: ``weight``, or when it is None the
    ``loss_variant``'s (:func:`~attnlib.losses.clickme.default_weight`: 6 paper, 1e-5 public code)."""
    weight = settings["weight"]
    return default_weight(settings["loss_variant"]) if weight is None else float(weight)


def arms(settings: Mapping[str, Any]) -> dict[str, Arm]:
    """Table 1's arms, the two controls and the lambda sweep (``GALA + ClickMe (lambda=x)``), in order.

    The weight is :func:`map_weight`; the sweep's ``lambdas`` are used as given. Sweep points equal to 0 or
    to the weight are the same runs as "GALA" and "GALA + ClickMe" (the run store keys runs by
    configuration, not by name)."""
    weight = map_weight(settings)
    out = {
        "ResNet": Arm("", None),
        "SE-ResNet": Arm("se", None),
        "GALA": Arm("gala_", 0.0),
        "GALA + ClickMe": Arm("gala_", weight),
        "GALA + boxes": Arm("gala_", weight, "box"),
        "ResNet + map loss": Arm("", weight),
    }
    for value in settings["lambdas"]:
        out[sweep_name(float(value))] = Arm("gala_", float(value))
    return out


#: The arms whose networks the figures load (:func:`_figure_inputs`): only their runs keep weights.
FIGURE_ARMS = ("GALA", "GALA + ClickMe")


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


def load_data(
    dataset: str | None = None,
    data_root: str | Path | None = None,
    profile: str | None = None,
    **synthetic: Any,
) -> StudyData:
    """``synthetic``: the ClickMe-like default (the fine-grained generator with the profile's
    ``gala_synthetic`` knobs; maps made from the simulated players' bubbles the way ClickMe makes them,
    the ceiling measured between two halves of the players); ``clickme``: the real ClickMe files under
    ``data_root`` (train and test splits by file name, val when there is no test; the paper's 49-px
    blur; ceiling 0.58 unless the profile sets ``interrater_ceiling``). ``dataset`` None: ``synthetic``
    without ``data_root``, else told from the folder's layout (:func:`~attnlib.data.layouts.resolve_dataset`)."""
    dataset = resolve_dataset(dataset, data_root, LAYOUT_DATASETS, "GALA")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    if synthetic and (dataset != "synthetic" or data_root is not None):
        raise ValueError(f"synthetic knobs {sorted(synthetic)} apply only to the generated synthetic default")
    settings = study_settings(profile)
    if dataset == "clickme":
        if data_root is None:
            raise ValueError("dataset 'clickme' needs data_root (a folder of ClickMe .npz or TFRecord files)")
        return _clickme(Path(data_root), settings)
    root = (
        Path(data_root)
        if data_root is not None
        else synthetic_finegrained(profile, section="gala_synthetic", **synthetic)
    )
    return _synthetic(root, settings)


def _clickme(root: Path, settings: Mapping[str, Any]) -> StudyData:
    size = int(settings["image_size"])
    _, files = clickme_files(root)
    splits = {split_of(f.relative_to(root).as_posix() if root.is_dir() else f.name) for f in files}
    held_out = "test" if "test" in splits else "val"  # the GALA-era release has train and val only
    if not {"train", held_out} <= splits:
        raise ValueError(
            f"{root}: ClickMe needs train and test (or val) files by name; found {sorted(splits)}"
        )
    train, test = (ClickMe(root, split=s, image_size=size) for s in ("train", held_out))
    ceiling = settings["interrater_ceiling"] or PAPER_INTERRATER_RHO
    source = "profile" if settings["interrater_ceiling"] else "the paper's value for ClickMe"
    description = f"ClickMe at {root}: {len(train)} train / {len(test)} {held_out} images at {size} px"
    return StudyData("clickme", train, test, None, None, float(ceiling), source, description)


def _synthetic(root: Path, settings: Mapping[str, Any]) -> StudyData:
    parts = {split: FineGrainedDataset(root, split) for split in ("train", "test")}
    kernel = int(settings["blur_kernel"])
    measured = interrater_reliability(parts["test"], kernel)  # split-half players, with the shuffled null
    if settings["interrater_ceiling"]:
        ceiling, source = float(settings["interrater_ceiling"]), "profile"
    else:
        ceiling = measured.rho
        source = f"measured between player halves on the test images (null {measured.null_rho:.3f})"
    config = parts["train"].config
    description = (
        f"synthetic ClickMe-like set {root.name}: {config.n_images} images {config.size} px, "
        f"{config.n_classes} classes decided by a {config.part_radius}-px part, a context square agreeing with "
        f"the label in {config.distractor_correlation_train:.0%} of training images (chance in test), "
        f"{config.n_annotators} players x {config.bubbles_per_annotator} bubbles per image, maps blurred {kernel} px"
    )
    return StudyData(
        "synthetic",
        ArrayDataset.from_dataset(parts["train"]),
        ArrayDataset.from_dataset(parts["test"]),
        _maps(parts["train"], kernel),
        _maps(parts["test"], kernel),
        float(ceiling),
        source,
        description,
    )


def _maps(dataset: FineGrainedDataset, kernel: int) -> Tensor:
    size = (dataset.config.size, dataset.config.size)
    maps = [clickme_map(dataset.bubbles(i), size, kernel) for i in range(len(dataset))]
    return torch.from_numpy(np.stack(maps))[:, None]


# ------------------------------------------------------------------------------------------ training


def train_config(settings: Mapping[str, Any]) -> TrainConfig:
    """SGD with Nesterov momentum and the profile's step decay (x0.1 at ``lr_milestones``)."""
    return TrainConfig(
        epochs=int(settings["epochs"]),
        batch_size=int(settings["batch_size"]),
        optimizer="sgd_nesterov",
        lr=float(settings["lr"]),
        weight_decay=float(settings["weight_decay"]),
        plateau_patience=None,
        lr_milestones=tuple(settings["lr_milestones"]),
        progress=bool(settings.get("progress", True)),
    )


def build_model(arm: Arm, settings: Mapping[str, Any], num_classes: int) -> nn.Module:
    """The arm's network: ``<family><backbone>`` from the registry (GALA with the profile's ``variant``)."""
    backbone = settings["backbone"]
    if arm.family == "gala_":
        return create_gala_resnet(backbone, num_classes, 3, settings["pretrained"], settings["variant"])
    return create_model(f"{arm.family}{backbone}", num_classes, 3, settings["pretrained"])


def build_method(arm: Arm, settings: Mapping[str, Any], num_classes: int) -> Method:
    """Cross-entropy (``weight`` None) or :class:`ClickMeSupervised` with the arm's weight."""
    model = build_model(arm, settings, num_classes)
    if arm.weight is None:
        return Classifier(model)
    return ClickMeSupervised(model, arm.weight, settings["loss_variant"])


def train_arm(
    store: RunStore,
    data: StudyData,
    arm: Arm,
    seed: int,
    settings: Mapping[str, Any],
    profile: str,
    device: str | None = None,
) -> RunResult:
    """One arm and seed: trained, scored on the test split (errors, alignment), stored; with its last
    weights only when it is one of :data:`FIGURE_ARMS` (by configuration: the figures load nothing else)."""
    cfg = train_config(settings)
    keeps_weights = arm in [arms(settings)[name] for name in FIGURE_ARMS]
    train = PairedMaps(
        data.train,
        data.train_maps,
        arm.maps,
        int(settings["augment_padding"]),
        float(settings["box_threshold"]),
    )
    test = PairedMaps(data.test, data.test_maps)
    config = {
        "arm": asdict(arm),
        "dataset": data.name,
        "backbone": f"{arm.family}{settings['backbone']}",
        "pretrained": settings["pretrained"],
        "variant": settings["variant"] if arm.family == "gala_" else None,
        "loss_variant": settings["loss_variant"] if arm.weight is not None else None,
        "n_align": int(settings["n_align"]),
        "smoothgrad": [int(settings["smoothgrad_samples"]), float(settings["smoothgrad_noise"])],
        "train": {k: v for k, v in asdict(cfg).items() if k != "progress"},
    }
    spec = RunSpec(STUDY, config, seed, profile, data_fingerprint({"train": train, "test": test}))

    def fn(workdir: Path) -> dict[str, Any]:
        seed_everything(seed, deterministic=cfg.deterministic)
        method = build_method(arm, settings, len(data.label_names))
        loaders = make_loaders({"train": train, "test": test}, cfg.batch_size, seed)
        trainer = Trainer(cfg, device=device, checkpoint_every=settings["checkpoint_every"])
        fit = trainer.fit(
            method, loaders["train"], None, workdir, seed, eval_loaders={"test": loaders["test"]}
        )
        frame, metrics = score(method, loaders["test"], trainer, data.label_names)
        alignment = alignment_scores(method.model, data, settings, trainer.device)
        return {
            "history": fit.history,
            "metrics": {"last": metrics, "last_epoch": fit.last_epoch, "alignment": alignment},
            "predictions": {"last": frame},
            "states": {"last": fit.last_state} if keeps_weights else {},
        }

    return store.run(spec, fn)


def load_model(result: RunResult, arm: Arm, settings: Mapping[str, Any], data: StudyData) -> nn.Module:
    """The network of a stored run (its last weights), in eval mode."""
    method = build_method(arm, settings, len(data.label_names))
    method.load_state_dict(result.state_dict("last"))
    return method.model.eval()


def run_seed(
    store: RunStore, data: StudyData, seed: int, profile: str, device: str | None = None
) -> dict[str, RunResult]:
    """Every arm of :func:`arms` for ``seed`` (runs already stored are loaded)."""
    settings = study_settings(profile)
    return {
        name: train_arm(store, data, arm, seed, settings, profile, device)
        for name, arm in tqdm(arms(settings).items(), desc=f"seed {seed}: arms", leave=False)
    }


# ---------------------------------------------------------------------------------------- alignment


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


def alignment_scores(
    model: nn.Module, data: StudyData, settings: Mapping[str, Any], device: torch.device
) -> dict[str, float]:
    """Human alignment of the attention maps and of SmoothGrad on those of the first ``n_align`` test images
    that have a map (:func:`test_subset`; ``n`` of them, ``n_without_map`` left out). NaN, with a warning,
    when fewer than 2 have one."""
    n_align = min(int(settings["n_align"]), len(data.test))
    images, labels, human = test_subset(data, n_align)
    counts = {"ceiling": data.ceiling, "n": len(images), "n_without_map": n_align - len(images)}
    if len(images) < 2:
        log.warning(
            "%d of the first %d test images have a human map: human alignment needs 2, reported as NaN",
            len(images),
            n_align,
        )
        keys = ("rho", "fraction_of_ceiling", "null_rho")
        return {
            **{f"{name}_{k}": float("nan") for name in ("attention", "smoothgrad") for k in keys},
            **counts,
        }
    attention = attention_maps(model, images, device)
    saliency = xai.smoothgrad_maps(
        model.to(device),
        images.to(device),
        labels.to(device),
        int(settings["smoothgrad_samples"]),
        float(settings["smoothgrad_noise"]),
    ).cpu()
    out = {}
    for name, maps in (("attention", attention), ("smoothgrad", saliency)):
        scores = human_alignment(maps.numpy(), human.numpy(), data.ceiling)
        out.update({f"{name}_{k}": v for k, v in scores.items() if k not in ("ceiling", "n")})
    return {**out, **counts}


# ------------------------------------------------------------------------------------------- report


def results_frame(results: Sequence[Mapping[str, RunResult]], settings: Mapping[str, Any]) -> pd.DataFrame:
    """One row per seed and arm: the map-loss weight and loss variant that ran (None without the map loss),
    top-1 / top-5 error, alignment (fraction of the ceiling and rho) of the attention maps and of SmoothGrad,
    the null, the last epoch."""
    rows = []
    for per_seed in results:
        for name, run in per_seed.items():
            last, align = run.metrics["last"], run.metrics["alignment"]
            rows.append(
                {
                    "seed": run.spec.seed,
                    "arm": name,
                    "weight": run.spec.config["arm"]["weight"],
                    "loss_variant": run.spec.config["loss_variant"],
                    "top1_error": 1 - last["accuracy"],
                    "top5_error": 1 - last["top5_accuracy"] if "top5_accuracy" in last else np.nan,
                    "alignment": align["attention_fraction_of_ceiling"],
                    "alignment_rho": align["attention_rho"],
                    "alignment_null": align["attention_null_rho"],
                    "smoothgrad": align["smoothgrad_fraction_of_ceiling"],
                    "smoothgrad_rho": align["smoothgrad_rho"],
                    "epoch": run.metrics["last_epoch"],
                }
            )
    return pd.DataFrame(rows)


def lambda_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The sweep's rows (one per seed and lambda), with ``lambda``."""
    sweep = frame[frame["arm"].str.startswith("GALA + ClickMe (lambda=")].copy()
    sweep["lambda"] = sweep["weight"].astype(float)
    return sweep.sort_values(["lambda", "seed"]).reset_index(drop=True)


def verdict(frame: pd.DataFrame, alpha: float = 0.05, profile: str | None = None) -> str:
    """One computed sentence: did ClickMe supervision improve GALA's error and alignment (paired over seeds)?
    (After the smoke caveat when ``profile`` is ``smoke``.)"""
    parts = []
    for metric, label, higher in (
        ("top1_error", "top-1 error", False),
        ("alignment", "attention alignment (fraction of the ceiling)", True),
        ("smoothgrad", "SmoothGrad alignment", True),
    ):
        test = paired_t_test(frame, metric, "arm", "GALA + ClickMe", "GALA", pair="seed")
        parts.append(describe_change(test, label, alpha, higher, "paired t-test p"))
    text = "On this data, supervising GALA with the human maps changed " + "; ".join(parts) + "."
    return with_profile_caveat(text, profile)


def layer_views(
    results: Sequence[Mapping[str, RunResult]],
    data: StudyData,
    settings: Mapping[str, Any],
    n: int = 4,
    device: str | None = None,
) -> dict[str, Any]:
    """Fig. 4: per test image, the human map and the attention of every GALA layer for GALA without and
    with ClickMe maps (first seed's runs, last weights), for ``plots.map_grid``."""
    per_seed, models, torch_device, (images, labels, human) = _figure_inputs(
        results, data, settings, n, device
    )
    per_arm = {name: attention_maps(model, images, torch_device, True) for name, model in models.items()}
    n_layers = per_arm["GALA"].shape[1]
    maps = [
        [_unit(human[i])] + [_unit(per_arm[name][i, j]) for name in per_arm for j in range(n_layers)]
        for i in range(len(images))
    ]
    rho = {name: spearman_per_image(per_arm[name].mean(1).numpy(), human.numpy()) for name in per_arm}
    names = data.label_names
    return {
        "images": [img.permute(1, 2, 0).numpy() for img in images],
        "maps": maps,
        "row_titles": [
            f"{names[int(labels[i])]}: rho {rho['GALA'][i]:.2f} / {rho['GALA + ClickMe'][i]:.2f}"
            for i in range(len(images))
        ],
        "col_titles": ["human map"] + [f"{name} L{j + 1}" for name in per_arm for j in range(n_layers)],
        "selection": f"seed {per_seed['GALA'].spec.seed}, last weights (epoch {per_seed['GALA'].metrics['last_epoch']}); "
        f"the first {len(images)} test images; rho = Spearman with the human map (GALA / GALA + ClickMe)",
    }


def smoothgrad_views(
    results: Sequence[Mapping[str, RunResult]],
    data: StudyData,
    settings: Mapping[str, Any],
    n: int = 4,
    device: str | None = None,
) -> dict[str, Any]:
    """SmoothGrad of GALA without and with ClickMe maps and their difference (with minus without,
    min-max scaled), first seed, for ``plots.map_grid``."""
    _, models, torch_device, (images, labels, human) = _figure_inputs(results, data, settings, n, device)
    saliency = {}
    for name, model in models.items():
        saliency[name] = xai.smoothgrad_maps(
            model.to(torch_device),
            images.to(torch_device),
            labels.to(torch_device),
            int(settings["smoothgrad_samples"]),
            float(settings["smoothgrad_noise"]),
        ).cpu()
    maps = []
    for i in range(len(images)):
        without, with_maps = _unit(saliency["GALA"][i]), _unit(saliency["GALA + ClickMe"][i])
        maps.append([_unit(human[i]), without, with_maps, _unit(with_maps - without)])
    return {
        "images": [img.permute(1, 2, 0).numpy() for img in images],
        "maps": maps,
        "row_titles": [data.label_names[int(label)] for label in labels],
        "col_titles": [
            "human map",
            "SmoothGrad GALA",
            "SmoothGrad GALA + ClickMe",
            "difference (with - without)",
        ],
    }


def _figure_inputs(
    results: Sequence[Mapping[str, RunResult]],
    data: StudyData,
    settings: Mapping[str, Any],
    n: int,
    device: str | None,
) -> tuple[Mapping[str, RunResult], dict[str, nn.Module], torch.device, tuple[Tensor, Tensor, Tensor]]:
    """What the figures compare: the first seed's runs, its GALA and GALA + ClickMe networks (last weights),
    the device and :func:`test_subset`."""
    per_seed = results[0]
    table = arms(settings)
    models = {
        name: load_model(per_seed[name], table[name], settings, data) for name in FIGURE_ARMS
    }
    torch_device = torch.device(device) if device else torch.device("cpu")
    return per_seed, models, torch_device, test_subset(data, n)


def _unit(values: Tensor | np.ndarray) -> np.ndarray:
    """``values`` min-max scaled to [0, 1] (a constant map gives zeros)."""
    array = np.asarray(values, dtype=np.float32)
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)
