"""The ABN + human-edited attention maps study (paper 3, :class:`ABNStudy`): train, edit, fine-tune, explain.

Per replicate (a seed on a fixed split, or a fold of a k-fold cross-validation, methods.md section 3):

1. train an Attention Branch Network with ``L_abn`` (SGD + momentum, step decay; the last epoch's
   weights are used, as the paper's fixed schedule does);
2. pick training samples to edit (misclassified, or lowest-confidence first, up to a budget) and make
   their "human" maps from the data's source -- the simulated editor (paints the true evidence in and
   erases the network's attention elsewhere), bubble KDE maps, or lesion segmentations -- stored in an
   :class:`~attnlib.data.maps.edited_maps.EditedMapStore` with provenance;
3. fine-tune the attention and perception branches with ``L_abn + gamma ||M' - M||_2`` (Eqs. 1-3),
   and, as a control the paper does not run, with ``gamma = 0`` (same samples and schedule, no maps);
4. on the test split (the explanation pass): Table 1 (misclassified test images re-scored with their
   edited maps fed in place of M, no training), deletion / insertion and ROAD of CAM, Grad-CAM, ABN's
   map and the fine-tuned map (Tables 4, 7), and each map's MSE to the edited map (Tables 5, 8).

The arms are the three networks (``ABN``, ``ABN + fine-tuning``, ``ABN + fine-tuning (gamma = 0)``), each
scored by its test accuracy (Tables 3, 6); each stage is a run of the run store (study ``abn``), loaded
when stored. The explanation pass scores both networks at once, so its values join the arm whose network
they explain: the ABN arm carries its own map's scores, CAM's and Grad-CAM's (``deletion/CAM``, ...) and
Table 1; the fine-tuned arm its own map's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import Tensor

from attnlib.core.device import default_device
from attnlib.core.seeding import seed_everything
from attnlib.data.arrays import ArrayDataset
from attnlib.data.layouts import resolve_dataset
from attnlib.data.maps.edited_maps import EditedMap, EditedMapDataset, EditedMapStore, Provenance
from attnlib.data.maps.sources import bubble_map, lesion_map, simulate_edit
from attnlib.data.real.cub import CUB200, read_bubbles
from attnlib.data.real.idrid_lesions import IDRiDLesions
from attnlib.data.splits import stratified_folds
from attnlib.data.synthetic.defaults import synthetic_finegrained
from attnlib.data.synthetic.finegrained import FineGrainedDataset
from attnlib.engine.executor import Trained, TrainingRun, data_fingerprint, execute, make_loaders
from attnlib.engine.runstore import RunResult, RunSpec
from attnlib.engine.study import ArmRun, ClaimSpec, Comparison, Metric, Study, StudyContext
from attnlib.engine.trainer import TrainConfig
from attnlib.evaluation import explanations as xai
from attnlib.evaluation.stats import median_std
from attnlib.methods.abn import ABNClassifier, ABNFineTune, Selection, select_samples, table1_errors
from attnlib.models.abn import ABNet
from attnlib.models.registry import create_model
from attnlib.reporting import plots

DATASETS = ("synthetic", "cub", "idrid")
#: The dataset a ``data_root`` of each layout gives when ``dataset`` is not set.
LAYOUT_DATASETS = {"synthetic": "synthetic", "cub": "cub", "idrid": "idrid"}
MapSource = Literal["editor", "bubbles", "segmentation"]
MAP_SOURCES: tuple[str, ...] = get_args(MapSource)
#: Explanation methods of Tables 4-5 / 7-8, in table order, as the explanation pass names them.
EXPLANATIONS = ("CAM", "Grad-CAM", "ABN", "fine-tuned")
ARMS = ("ABN", "ABN + fine-tuning", "ABN + fine-tuning (gamma = 0)")
Protocol = Literal["seeds", "folds"]
#: Each explanation measure: its title and whether higher is better.
MEASURES = {
    "deletion": ("deletion (RISE)", False),
    "insertion": ("insertion (RISE)", True),
    "road": ("ROAD (grad-cam)", True),
    "mse": ("MSE to the edited map", False),
}
#: Where each explanation method's values sit in the results: the arm whose network it explains and the
#: suffix of its metrics (an arm's own map: none).
EXPLAINED = {"CAM": (ARMS[0], "/CAM"), "Grad-CAM": (ARMS[0], "/Grad-CAM"), "ABN": (ARMS[0], ""),
             "fine-tuned": (ARMS[1], "")}
GRAD_CAM = "Grad-CAM of ABN"
#: The explanation pairs tested besides the arms' own maps (fine-tuned vs ABN): each map vs Grad-CAM of
#: the ABN, on the measures the paper compares.
MAP_PAIRS = (Comparison(ARMS[1], GRAD_CAM), Comparison(ARMS[0], GRAD_CAM))
TESTED_MEASURES = ("deletion", "insertion", "mse")
#: Table 1: the ABN fed the edited maps M' (metric ``table1/error_after``) vs fed its own maps M.
TABLE1 = Comparison(ARMS[0], "ABN with its own map M")

#: The report's metrics: each arm's accuracy and its own attention map's scores, and the ABN's Table 1 (CAM's
#: and Grad-CAM's scores, ``deletion/CAM``, ..., are in the results and :meth:`ABNStudy.explanation_table`).
METRICS: dict[str, Metric] = {
    "accuracy": Metric("test accuracy (Tables 3, 6)"),
    **{m: Metric(f"{title}, the arm's own attention map", higher) for m, (title, higher) in MEASURES.items()},
    "table1/error_after": Metric("Table 1: top-1 error of the misclassified test images, edited maps M' fed in place "
                                 "of M", higher_is_better=False),
}
#: The metrics the verdict speaks about: accuracy, Table 1 and the maps' faithfulness and similarity.
VERDICT_METRICS = ("accuracy", "table1/error_after", *TESTED_MEASURES)

T = TypeVar("T")


@dataclass(frozen=True)
class Schedule:
    """SGD + momentum, the learning rate x0.1 after each of ``lr_milestones``: one stage's schedule."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    lr_milestones: tuple[int, ...]

    def train_config(self, progress: bool) -> TrainConfig:
        """The trainer's configuration of this schedule."""
        return TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, optimizer="sgd_momentum", lr=self.lr,
            weight_decay=self.weight_decay, plateau_patience=None, lr_milestones=self.lr_milestones,
            progress=progress,
        )


@dataclass(frozen=True)
class ABNSettings:
    """The profile's ``abn`` section.

    ``image_size``: of real images (CUB, IDRiD); ``train`` / ``finetune``: the two stages' schedules;
    ``gamma``: the map term's weight (not published); ``selection`` and ``edit_limit``: which training
    images are edited (None: all); ``map_source``: the human maps; ``edit_budget``: strokes of the
    simulated editor; ``bubble_bandwidth``: of the bubble KDE (None: each bubble's radius); ``folds``:
    IDRiD's cross-validation; ``n_explain``: test images of the explanation pass, perturbed
    ``perturbation_step`` pixels at a time in batches of ``perturbation_batch``; ``road``: score ROAD too;
    ``editor_demo_edits``: samples notebook 04 edits with scripted strokes.
    """

    image_size: int
    backbone: str
    pretrained: bool | Literal["auto"]
    train: Schedule
    finetune: Schedule
    gamma: float
    selection: Selection
    edit_limit: int | None
    map_source: MapSource
    edit_budget: int
    bubble_bandwidth: float | None
    folds: int
    n_explain: int
    perturbation_step: int
    perturbation_batch: int
    road: bool
    progress: bool
    checkpoint_every: int | None
    editor_demo_edits: int

    def __post_init__(self) -> None:
        if self.gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")


# ---------------------------------------------------------------------------------------------- data


@dataclass
class StudyData:
    """Every image of a study in memory, the replicates' train/test indices, and the human knowledge.

    ``protocol`` "seeds": one fixed split (``splits[0]``) for every replicate; "folds": replicate r
    tests on fold r. Knowledge by sample id, at the images' size: ``evidence`` (bool masks of the true
    evidence, for the simulated editor), ``bubbles`` (bubble frames and the image size their pixels
    refer to), ``lesions`` (lesion masks).
    """

    name: str
    images: ArrayDataset
    splits: list[tuple[np.ndarray, np.ndarray]]
    protocol: Protocol
    description: str
    evidence: dict[str, np.ndarray] = field(default_factory=dict)
    bubbles: dict[str, tuple[pd.DataFrame, tuple[int, int]]] = field(default_factory=dict)
    lesions: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the images the network sees."""
        return tuple(self.images.images.shape[2:])  # type: ignore[return-value]

    @property
    def sources(self) -> list[str]:
        """The map sources this data supports."""
        have = {"editor": self.evidence, "bubbles": self.bubbles, "segmentation": self.lesions}
        return [name for name in MAP_SOURCES if have[name]]

    def replicate(self, r: int) -> tuple[ArrayDataset, ArrayDataset]:
        """(train, test) of replicate ``r``."""
        if r < 0 or (self.protocol == "folds" and r >= len(self.splits)):
            raise ValueError(f"replicate {r} does not exist: {self.name} has {len(self.splits)} folds")
        train_idx, test_idx = self.splits[0 if self.protocol == "seeds" else r]
        return self.images.subset(train_idx), self.images.subset(test_idx)


def load_data(
    dataset: str, root: Path, image_size: int, folds: int, bubbles_csv: Path | None = None
) -> StudyData:
    """The study's data from ``root``: ``synthetic`` (a folder of ``generate_finegrained``), ``cub``
    (CUB-200-2010, official train/test lists at ``image_size``, bubbles from the CSV ``bubbles_csv``) or
    ``idrid`` (81 diseased vs 120 healthy at ``image_size``, ``folds``-fold CV)."""
    if dataset == "synthetic":
        return _synthetic(root)
    if dataset == "idrid":
        return _idrid(root, image_size, folds)
    if dataset == "cub":
        return _cub(root, image_size, bubbles_csv)
    raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")


def _synthetic(root: Path) -> StudyData:
    everything = FineGrainedDataset(root)
    images = ArrayDataset.from_dataset(everything, "synthetic fine-grained")
    split = everything.metadata["split"].to_numpy()
    cfg = everything.config
    size = (cfg.size, cfg.size)
    return StudyData(
        "synthetic",
        images,
        [(np.flatnonzero(split == "train"), np.flatnonzero(split == "test"))],
        "seeds",
        f"synthetic fine-grained set {root.name}: {cfg.n_images} images {cfg.size}x{cfg.size}, {cfg.n_classes} "
        f"classes decided by a {cfg.part_radius}-px head (evidence strength {cfg.evidence_strength}), a distractor "
        f"agreeing with the label with p = {cfg.distractor_correlation_train} in training and at chance in test, "
        f"{cfg.n_annotators} simulated annotators x {cfg.bubbles_per_annotator} bubbles",
        evidence={images.ids[i]: everything.evidence_mask(i) for i in range(len(images))},
        bubbles={images.ids[i]: (everything.bubbles(i), size) for i in range(len(images))},
    )


def _cub(root: Path, size: int, bubbles_csv: Path | None) -> StudyData:
    sets = {split: CUB200(root, split, image_size=size) for split in ("train", "test")}
    arrays = {split: ArrayDataset.from_dataset(ds, f"CUB {split}") for split, ds in sets.items()}
    images = _concat(arrays["train"], arrays["test"])
    n_train = len(arrays["train"])
    evidence, bubbles = {}, {}
    by_image = dict(tuple(read_bubbles(bubbles_csv).groupby("image"))) if bubbles_csv is not None else {}
    for split, ds in sets.items():
        for i in range(len(ds)):
            sample_id = arrays[split].ids[i]
            evidence[sample_id] = ds.segmentation(i)
            if sample_id in by_image:
                bubbles[sample_id] = (by_image[sample_id].reset_index(drop=True), ds.original_size(i))
    return StudyData(
        "cub",
        images,
        [(np.arange(n_train), np.arange(n_train, len(images)))],
        "seeds",
        f"CUB-200-2010, official train/test lists, {size}x{size}; bubbles for {len(bubbles)} images"
        f" ({bubbles_csv if bubbles_csv is not None else 'no bubbles CSV'})",
        evidence=evidence,
        bubbles=bubbles,
    )


def _idrid(root: Path, size: int, folds: int) -> StudyData:
    ds = IDRiDLesions(root, image_size=size)
    images = ArrayDataset.from_dataset(ds, "IDRiD lesions")
    lesions = {images.ids[i]: ds.lesion_mask(i) for i in range(len(images))}
    return StudyData(
        "idrid",
        images,
        stratified_folds(images.labels.tolist(), folds, seed=0),
        "folds",
        f"IDRiD lesion task: {int((images.labels == 1).sum())} diseased vs {int((images.labels == 0).sum())} "
        f"healthy, {size}x{size}, {folds}-fold CV",
        evidence={k: v for k, v in lesions.items() if v.any()},
        lesions=lesions,
    )


def _concat(a: ArrayDataset, b: ArrayDataset) -> ArrayDataset:
    return ArrayDataset(
        torch.cat([a.images, b.images]),
        [*a.labels, *b.labels],
        [*a.ids, *b.ids],
        a.label_names,
        f"{a.fingerprint}+{b.fingerprint}",
    )


# ---------------------------------------------------------------------------------------------- maps


def human_map(
    data: StudyData,
    sample_id: str,
    source: str,
    network_map: np.ndarray,
    budget: int,
    bandwidth: float | None = None,
    model_key: str | None = None,
    checkpoint: str | None = None,
) -> tuple[np.ndarray, Provenance]:
    """The human map of ``sample_id`` at ``network_map``'s grid, and its provenance.

    ``editor``: :func:`~attnlib.data.maps.sources.simulate_edit` of the network's map with the data's evidence
    (``budget`` strokes); ``bubbles``: the KDE of its bubbles (``bandwidth``, None = each bubble's radius);
    ``segmentation``: its lesion map. A sample without that knowledge raises ``KeyError``.
    """
    grid = tuple(network_map.shape)
    if source not in data.sources:
        raise ValueError(f"map source {source!r} is not available for {data.name}; available: {data.sources}")
    if source == "editor":
        if sample_id not in data.evidence:
            return network_map.astype(np.float32), Provenance(
                "simulated", grid, data.image_size, (), "simulated editor (no evidence: unchanged)", model_key,
                checkpoint,
            )
        edited, strokes = simulate_edit(network_map, data.evidence[sample_id], budget=budget)
        simulator = f"simulated editor (budget {budget})"
        return edited, Provenance("simulated", grid, data.image_size, strokes, simulator, model_key, checkpoint)
    if source == "bubbles":
        if sample_id not in data.bubbles:
            raise KeyError(f"{data.name}: no bubbles for {sample_id}")
        frame, size = data.bubbles[sample_id]
        return bubble_map(frame, size, bandwidth, out_size=grid), Provenance("bubbles", grid)
    return lesion_map(data.lesions[sample_id], grid), Provenance("segmentation", grid)


@torch.no_grad()
def network_maps(model: ABNet, dataset: ArrayDataset, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """The attention branch's map M of every item (N x h x w)."""
    model.to(device).eval()
    out = [
        model(dataset.images[i : i + batch_size].to(device)).predicted_map[:, 0].cpu()
        for i in range(0, len(dataset), batch_size)
    ]
    return torch.cat(out).numpy()


def checkpoint_words(run: RunResult) -> str:
    """The weights of a stored run the maps are edited against, as their provenance records them."""
    return f"last (epoch {run.metrics['last_epoch']})"


# ---------------------------------------------------------------------------------------- evaluation


def explanation_scores(
    models: Mapping[str, ABNet],
    images: Tensor,
    targets: Tensor,
    step: int,
    batch_size: int,
    road: bool,
    device: torch.device,
) -> pd.DataFrame:
    """Per image and explanation method: deletion, insertion (RISE, ``step`` pixels at a time in batches of
    ``batch_size``), ROAD (grad-cam; NaN unless ``road``) and the MSE to ``targets``.

    ``models``: ``base`` (explained by CAM, Grad-CAM and its own map) and ``fine-tuned`` (its own map).
    """
    images = images.to(device)
    rows = []
    for name in EXPLANATIONS:
        model = (models["fine-tuned"] if name == "fine-tuned" else models["base"]).to(device).eval()
        if name == "CAM":
            saliency = xai.cam_maps(model, images)
        elif name == "Grad-CAM":
            saliency = xai.gradcam_maps(model, images)
        else:
            saliency = xai.abn_maps(model, images)
        scorer = xai.LogitsOnly(model)
        curves = xai.deletion_insertion(scorer, images, saliency, step=step, batch_size=batch_size)
        scores = xai.road_scores(scorer, images, saliency) if road else torch.full((len(images),), np.nan)
        mse = xai.map_mse(saliency.cpu(), targets)
        for i in range(len(images)):
            rows.append({
                "image": i, "method": name, "deletion": float(curves["deletion"][i]),
                "insertion": float(curves["insertion"][i]), "road": float(scores[i]), "mse": float(mse[i]),
            })
    return pd.DataFrame(rows)


def explanation_means(explain: RunResult) -> pd.DataFrame:
    """Mean deletion, insertion, ROAD and MSE over the explained test images, per method (index)."""
    frame = explain.predictions["explanations"]
    return frame.groupby("method", sort=False)[list(MEASURES)].mean()


def last_metrics(run: RunResult) -> dict[str, float]:
    """The numeric test metrics of a run's last weights (the confusion matrix left out)."""
    return {k: float(v) for k, v in run.metrics["last"].items() if isinstance(v, (int, float))}


# ---------------------------------------------------------------------------------------------- study


@dataclass(frozen=True)
class Edits:
    """The training maps a replicate fine-tunes on: by sample id, the ids in order, their store folder."""

    maps: dict[str, EditedMap]
    ids: list[str]
    folder: Path


class ABNStudy(Study[ABNSettings]):
    """ABN fine-tuned with human-edited attention maps (paper 3): the fine-tuned network vs the ABN and vs
    the same fine-tuning without maps, paired t-tests over replicates (module docstring).

    ``dataset`` None: ``synthetic`` without ``data_root``, else told from the folder's layout; ``data_root``:
    the real data's folder (CUB-200-2010 or IDRiD), or a folder of ``generate_finegrained``; None: the
    profile's synthetic set, with the generator knobs ``synthetic``, generated on first use;
    ``bubbles_csv``: CUB's bubbles (default ``<data_root>/bubbles.csv`` when present); ``map_source``
    (None: the profile's): the maps of the test images, and of the training images unless ``human_edits``:
    then each replicate fine-tunes on the maps edited by hand in notebook 04 (:meth:`human_edits_folder`).
    """

    name = "abn"
    paper = "ABN + edited maps"
    settings_type = ABNSettings
    metrics = METRICS
    test = "paired_t"

    def __init__(
        self,
        context: StudyContext,
        settings: ABNSettings | None = None,
        *,
        dataset: str | None = None,
        data_root: str | Path | None = None,
        bubbles_csv: str | Path | None = None,
        synthetic: Mapping[str, Any] | None = None,
        map_source: str | None = None,
        human_edits: bool = False,
    ) -> None:
        super().__init__(context, settings)
        self.dataset = resolve_dataset(dataset, data_root, LAYOUT_DATASETS, "ABN")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose from {DATASETS}")
        if bubbles_csv is not None and self.dataset != "cub":
            raise ValueError(f"bubbles_csv applies to cub only, not {self.dataset!r}")
        if synthetic and (self.dataset != "synthetic" or data_root is not None):
            raise ValueError(f"synthetic knobs {sorted(synthetic)} apply only to the generated synthetic default")
        if data_root is None and self.dataset != "synthetic":
            raise ValueError(f"dataset {self.dataset!r} needs data_root (the real data's folder)")
        self.source = map_source or self.settings.map_source
        if self.source not in MAP_SOURCES:
            raise ValueError(f"unknown map source {self.source!r}; choose from {MAP_SOURCES}")
        self.data_root = Path(data_root) if data_root is not None else None
        self.bubbles_csv = Path(bubbles_csv) if bubbles_csv is not None else None
        self.synthetic = dict(synthetic or {})
        self.human_edits = human_edits
        self._stages: dict[tuple[str, int], Any] = {}

    @cached_property
    def data(self) -> StudyData:
        """The study's images, replicates and human knowledge (:func:`load_data`), loaded on first use."""
        root = self.data_root or synthetic_finegrained(self.profile, **self.synthetic)
        default = root / "bubbles.csv"
        bubbles = self.bubbles_csv or (default if self.dataset == "cub" and default.is_file() else None)
        return load_data(self.dataset, root, self.settings.image_size, self.settings.folds, bubbles)

    @property
    def device(self) -> torch.device:
        """Where maps and explanations are computed: the context's device, else CUDA when present."""
        return default_device(self.context.device)

    @property
    def maps_store(self) -> EditedMapStore:
        """The edited-map store beside the run store (``<runs>/edited_maps``), shared with the editor."""
        return EditedMapStore(self.context.store.root.parent / "edited_maps")

    def describe(self) -> str:
        """The data, the map source, the network and both schedules, in words."""
        s, data = self.settings, self.data
        hand = "; fine-tuning on the maps edited by hand in notebook 04" if self.human_edits else ""
        schedule = f"lr {s.train.lr} x0.1 at {list(s.train.lr_milestones)}, batch {s.train.batch_size}"
        lines = [
            f"profile {self.profile!r}; data: {data.description} ({data.protocol} protocol)",
            f"map source: {self.source} (available: {data.sources}){hand}",
            f"network: {s.backbone} + ABN, pretrained={s.pretrained}; training: {s.train.epochs} epochs, {schedule}",
            f"fine-tuning: {asdict(s.finetune)}, gamma {s.gamma}, {s.selection} selection up to {s.edit_limit} images",
        ]
        if self.profile != "paper":
            lines.append("CPU substitute: ResNet-18 + ABN at the profile's image size for the paper's ResNet-18/34/50 "
                         "at 224 x 224")
        return "\n".join(lines)

    # -- the stages of a replicate (each loaded from the run store when stored) --------------------------

    def _once(self, stage: str, r: int, make: Callable[[], T]) -> T:
        if (stage, r) not in self._stages:
            self._stages[(stage, r)] = make()
        return self._stages[(stage, r)]

    def build_abn(self) -> ABNet:
        """The profile's ABN backbone for the data's classes and channels."""
        images = self.data.images
        return create_model(self.settings.backbone, len(images.label_names), int(images.images.shape[1]),
                          pretrained=self.settings.pretrained, head="abn")

    def network(self, run: RunResult) -> ABNet:
        """The ABN of a stored run (its last weights) in eval mode; a fine-tuned one with its feature
        extractor frozen, as it was trained."""
        config = run.spec.config
        fine_tuned = config["arm"] == "abn+ft"
        method = ABNFineTune(self.build_abn(), config["gamma"]) if fine_tuned else ABNClassifier(self.build_abn())
        method.load_state_dict(run.state_dict("last"))
        return method.model.eval()

    def base(self, r: int) -> RunResult:
        """Replicate ``r``'s ABN trained with ``L_abn``; predictions ``train`` (for the selection) and ``last``
        (test)."""
        return self._once("base", r, lambda: execute(self.context.store, self._base_run(r), self.context.device))

    def _base_run(self, r: int) -> TrainingRun:
        train, test = self.data.replicate(r)
        s = self.settings

        def train_predictions(done: Trained) -> dict[str, dict[str, pd.DataFrame]]:
            in_order = make_loaders({"eval": train}, s.train.batch_size, r)["eval"]
            return {"predictions": {"train": done.trainer.predict(done.method, in_order)}}

        return TrainingRun(
            study=self.name, seed=r, profile=self.profile, datasets={"train": train, "test": test},
            train=s.train.train_config(s.progress),
            config={"arm": "abn", "dataset": self.data.name, "replicate": r, "protocol": self.data.protocol,
                    "backbone": s.backbone, "pretrained": s.pretrained},
            build=lambda: ABNClassifier(self.build_abn()), label_names=train.label_names,
            checkpoint_every=s.checkpoint_every, test_every_epoch=True, keep=("last",), after=train_predictions,
        )

    def abn(self, r: int) -> ABNet:
        """Replicate ``r``'s trained ABN (:meth:`network` of :meth:`base`)."""
        return self._once("abn", r, lambda: self.network(self.base(r)))

    def human_edits_folder(self, r: int) -> str:
        """The store folder of the maps edited by hand against replicate ``r``'s ABN (notebook 04)."""
        return f"{self.data.name}-human-{self.base(r).spec.key}-r{r}"

    def _folder(self, r: int) -> str:
        """The store folders' prefix of the ``map_source`` maps made against replicate ``r``'s ABN."""
        return f"{self.data.name}-{self.source}-{self.base(r).spec.key}-r{r}"

    def _edit_maps(self, r: int, dataset: ArrayDataset, folder: str) -> dict[str, EditedMap]:
        """Human maps of every item of ``dataset`` against replicate ``r``'s ABN, saved under ``folder``."""
        base, s = self.base(r), self.settings
        out = {}
        own = network_maps(self.abn(r), dataset, self.device)
        for sample_id, network_map in zip(dataset.ids, own, strict=True):
            edited, provenance = human_map(self.data, sample_id, self.source, network_map, s.edit_budget,
                                           s.bubble_bandwidth, base.spec.key, checkpoint_words(base))
            self.maps_store.save(folder, sample_id, edited, provenance)
            out[sample_id] = EditedMap(edited, provenance)
        return out

    def edits(self, r: int) -> Edits:
        """The training maps replicate ``r`` fine-tunes on: the ``selection`` of the ABN's training
        predictions (up to ``edit_limit``) edited from ``map_source``, or with ``human_edits`` those saved
        by hand in notebook 04."""
        return self._once("edits", r, lambda: self._edits(r))

    def _edits(self, r: int) -> Edits:
        if self.human_edits:
            folder = self.human_edits_folder(r)
            maps = self.maps_store.load_all(folder)
            if not maps:
                raise FileNotFoundError(
                    f"replicate {r}: no hand-edited maps in {self.maps_store.root / folder}; edit them with "
                    "notebooks/04_attention_editor.ipynb (same profile, dataset and replicate) first"
                )
            return Edits(maps, list(maps), self.maps_store.root / folder)
        s = self.settings
        selected = select_samples(self.base(r).predictions["train"], s.selection, s.edit_limit)
        if not selected:
            raise RuntimeError(
                f"replicate {r}: no training sample selected by {s.selection!r} "
                "(every training image classified correctly); use selection 'lowest_confidence'"
            )
        train, _ = self.data.replicate(r)
        position = {sample_id: i for i, sample_id in enumerate(train.ids)}
        folder = f"{self._folder(r)}-train"
        maps = self._edit_maps(r, train.subset([position[i] for i in selected]), folder)
        return Edits(maps, selected, self.maps_store.root / folder)

    def fine_tune(
        self, r: int, maps: Mapping[str, EditedMap | np.ndarray], ids: Sequence[str], gamma: float,
        keep_weights: bool = True,
    ) -> RunResult:
        """Fine-tune replicate ``r``'s ABN on the samples ``ids`` with their ``maps`` (Eqs. 1-3, branches only).

        ``maps`` may come from any :class:`EditedMapStore` (e.g. the editor's ``load_all``). ``keep_weights``
        False stores the run without its weights (the gamma = 0 control: its scores are all a report reads).
        """
        base, s = self.base(r), self.settings
        train, test = self.data.replicate(r)
        subset = EditedMapDataset(train, maps, ids)
        run = TrainingRun(
            study=self.name, seed=r, profile=self.profile, datasets={"train": subset, "test": test},
            train=s.finetune.train_config(s.progress),
            config={"arm": "abn+ft", "gamma": float(gamma), "base": base.spec.key, "dataset": self.data.name,
                    "replicate": r, "n_samples": len(subset)},
            build=lambda: ABNFineTune(self.build_abn(), gamma), label_names=train.label_names,
            checkpoint_every=s.checkpoint_every, test_every_epoch=True, keep=("last",) if keep_weights else (),
            prepare=lambda method: method.load_state_dict(base.state_dict("last")),
        )
        return execute(self.context.store, run, self.context.device)

    def fine_tuned(self, r: int) -> RunResult:
        """Replicate ``r``'s ABN fine-tuned on :meth:`edits` with the profile's ``gamma``."""
        return self._once("fine_tuned", r, lambda: self.fine_tune(r, self.edits(r).maps, self.edits(r).ids,
                                                                  self.settings.gamma))

    def control(self, r: int) -> RunResult:
        """The gamma = 0 control: the same samples and schedule without the maps; stored without weights."""
        return self._once("control", r, lambda: self.fine_tune(r, self.edits(r).maps, self.edits(r).ids, 0.0,
                                                               keep_weights=False))

    def explain(self, r: int) -> RunResult:
        """Replicate ``r``'s explanation pass on its test split (step 4 of the module docstring): the test
        images' maps from ``map_source``, Table 1 (``metrics["table1"]``) and per image and method the
        scores of :func:`explanation_scores` (``predictions["explanations"]``, the first ``n_explain``)."""
        return self._once("explain", r, lambda: self._explain(r))

    def _explain(self, r: int) -> RunResult:
        base, fine, s = self.base(r), self.fine_tuned(r), self.settings
        model, device = self.abn(r), self.device  # built before the run seeds: its draws would shift ROAD's
        _, test = self.data.replicate(r)
        n = min(s.n_explain, len(test))
        config = {"arm": "explain", "base": base.spec.key, "fine_tuned": fine.spec.key, "source": self.source, "n": n,
                  "perturbation_step": s.perturbation_step, "road": s.road, "edit_budget": s.edit_budget}
        spec = RunSpec(self.name, config, r, self.profile, data_fingerprint({"test": test}))

        def fn(workdir: Path) -> dict[str, Any]:
            seed_everything(r)
            maps = self._edit_maps(r, test, f"{self._folder(r)}-test")
            target = torch.stack([torch.from_numpy(maps[i].map) for i in test.ids])
            labels = torch.as_tensor(test.labels)
            wrong = torch.from_numpy(base.predictions["last"]["pred"].to_numpy() != test.labels)
            table1 = (
                table1_errors(model, test.images[wrong], labels[wrong], target[wrong][:, None], device)
                if wrong.any()
                else {"n": 0, "error_before": float("nan"), "error_after": float("nan")}
            )
            scores = explanation_scores({"base": model, "fine-tuned": self.network(fine)}, test.images[:n], target[:n],
                                        s.perturbation_step, s.perturbation_batch, s.road, device)
            scores.insert(0, "id", [test.ids[i] for i in scores["image"]])
            return {"history": pd.DataFrame({"epoch": []}), "metrics": {"table1": table1},
                    "predictions": {"explanations": scores}}

        return self.context.store.run(spec, fn)

    # -- the engine's hooks -------------------------------------------------------------------------------

    def arms(self) -> list[str]:
        return list(ARMS)

    def run_arm(self, arm: str, seed: int, scenario: str = "default") -> ArmRun:
        """The arm's network for replicate ``seed``: its test metrics (last weights); the ABN arm adds its
        maps' explanation scores and Table 1, the fine-tuned arm its map's explanation scores."""
        if arm == ARMS[0]:
            runs = [self.base(seed), self.explain(seed)]
            means = explanation_means(runs[1])
            values = {**last_metrics(runs[0]), **{m: means.at["ABN", m] for m in MEASURES},
                      **{f"{m}/{method}": means.at[method, m] for method in ("CAM", "Grad-CAM") for m in MEASURES},
                      **{f"table1/{k}": v for k, v in runs[1].metrics["table1"].items()}}
        elif arm == ARMS[1]:
            runs = [self.fine_tuned(seed), self.explain(seed)]
            means = explanation_means(runs[1])
            values = {**last_metrics(runs[0]), **{m: means.at["fine-tuned", m] for m in MEASURES}}
        elif arm == ARMS[2]:
            runs = [self.control(seed)]
            values = last_metrics(runs[0])
        else:
            raise ValueError(f"unknown arm {arm!r}; choose from {ARMS}")
        return ArmRun(arm, scenario, seed, runs, {"last": {k: float(v) for k, v in values.items()}},
                      {"last": int(runs[0].metrics["last_epoch"])})

    def comparisons(self) -> list[Comparison]:
        return [Comparison(ARMS[1], ARMS[0]), Comparison(ARMS[1], ARMS[2])]

    def tests(self, metrics: Sequence[str] | None = None) -> pd.DataFrame:
        """The paired t-tests over replicates: of each arm comparison, of each map vs Grad-CAM of the ABN
        (:data:`MAP_PAIRS`; deletion, insertion, MSE) and of Table 1 (the ABN fed M' vs fed its own M,
        :data:`TABLE1`), on the metrics both sides have; columns as :meth:`Study.tests`."""
        chosen = set(metrics) if metrics is not None else set(self.metrics)
        rows = []
        if "last" in self.checkpoints():
            labels = {method: f"{method} of ABN" if suffix else arm for method, (arm, suffix) in EXPLAINED.items()}
            maps = self.explanations().replace({"method": labels}).rename(columns={"method": "arm"})
            rows += [self._test_row(maps, "default", pair, m, "last")
                     for pair in MAP_PAIRS for m in TESTED_MEASURES if m in chosen]
            table1 = self.table1().rename(columns={"replicate": "seed"})
            if "table1/error_after" in chosen:
                fed = pd.concat([table1.assign(arm=TABLE1.method),
                                 table1.assign(arm=TABLE1.reference, error_after=table1["error_before"])])
                rows.append(self._test_row(fed.rename(columns={"error_after": "table1/error_after"}), "default",
                                           TABLE1, "table1/error_after", "last"))
        frame = super().tests(metrics)
        frame = pd.concat([frame, pd.DataFrame(rows, columns=frame.columns)], ignore_index=True)
        return frame.dropna(subset=["median method", "median reference"]).reset_index(drop=True)

    def verdict(
        self, checkpoint: str | None = None, metrics: Sequence[str] | None = None, scenario: str | None = None,
        alpha: float = 0.05,
    ) -> str:
        """:meth:`Study.verdict` on :data:`VERDICT_METRICS` unless ``metrics`` are given."""
        return super().verdict(checkpoint, VERDICT_METRICS if metrics is None else metrics, scenario, alpha)

    def claim_specs(self) -> list[ClaimSpec]:
        fine_tuned, control = Comparison(ARMS[1], ARMS[0]), Comparison(ARMS[1], ARMS[2])
        grad_cam = MAP_PAIRS[0]
        return [
            ClaimSpec("fine-tuning with edited maps raises test accuracy", fine_tuned, "accuracy",
                      "CUB +4-7 points from scratch, about +1 pretrained (Table 3); IDRiD ResNet-18/34/50 "
                      "95.33/96.88/97.22 -> 96.88/97.23/99.17 % (Table 6)", checkpoint="last"),
            ClaimSpec("the gain comes from the edited maps, not from more training on the hard images "
                      "(a control the paper does not run)", control, "accuracy", "", checkpoint="last"),
            ClaimSpec("feeding edited maps in place of M corrects misclassified images (no training)", TABLE1,
                      "table1/error_after", "100 -> 83.2 % top-1 error (ImageNet, 1,000 images; Table 1)",
                      checkpoint="last"),
            ClaimSpec("the fine-tuned map is more faithful than the ABN's: lower deletion", fine_tuned, "deletion",
                      "0.071 -> 0.056 (CUB, Table 4); 0.384 -> 0.310 (IDRiD, Table 7)", checkpoint="last"),
            ClaimSpec("the fine-tuned map is more faithful than the ABN's: higher insertion", fine_tuned, "insertion",
                      "0.633 -> 0.683 (CUB, Table 4); 0.652 -> 0.892 (IDRiD, Table 7)", checkpoint="last"),
            ClaimSpec("the fine-tuned map is closer to the edited maps than the ABN's", fine_tuned, "mse",
                      "0.550 -> 0.205 (CUB, Table 5); 0.129 -> 0.090 (IDRiD, Table 8)", checkpoint="last"),
            ClaimSpec("the fine-tuned map is more faithful than Grad-CAM: lower deletion", grad_cam, "deletion",
                      "0.148 -> 0.056 (CUB, Table 4); 0.285 -> 0.310 (IDRiD, Table 7)", checkpoint="last"),
            ClaimSpec("the fine-tuned map is more faithful than Grad-CAM: higher insertion", grad_cam, "insertion",
                      "0.397 -> 0.683 (CUB, Table 4); 0.747 -> 0.892 (IDRiD, Table 7)", checkpoint="last"),
            ClaimSpec("the fine-tuned map is closer to the edited maps than Grad-CAM", grad_cam, "mse",
                      "0.388 -> 0.205 (CUB, Table 5); 0.153 -> 0.090 (IDRiD, Table 8)", checkpoint="last"),
        ]

    # -- what the report shows -----------------------------------------------------------------------------

    def runs_table(self) -> pd.DataFrame:
        """One row per replicate and arm: test ``accuracy`` (last weights), its epoch, the fine-tuning set size."""
        return pd.DataFrame([
            {"replicate": r.seed, "arm": r.arm, "accuracy": r.values["last"]["accuracy"], "epoch": r.epochs["last"],
             "n_finetune": len(self.edits(r.seed).ids)}
            for r in self.runs
        ])

    def table1(self) -> pd.DataFrame:
        """Table 1 per replicate: misclassified test images and their error with M (before) and M' (after)."""
        wide = self.wide("last")
        columns = {"seed": "replicate", "table1/n": "n", "table1/error_before": "error_before",
                   "table1/error_after": "error_after"}
        part = wide.loc[wide["arm"] == ARMS[0]].reindex(columns=list(columns)).rename(columns=columns)
        return part.dropna(subset=["n"]).reset_index(drop=True)

    def explanations(self) -> pd.DataFrame:
        """Tables 4-5 / 7-8 per replicate: one row per seed and explanation method (:data:`EXPLAINED`),
        mean deletion, insertion, ROAD and MSE over the explained test images."""
        wide = self.wide("last")
        parts = []
        for method, (arm, suffix) in EXPLAINED.items():
            part = wide.loc[wide["arm"] == arm].reindex(columns=["seed", *(m + suffix for m in MEASURES)])
            parts.append(part.set_axis(["seed", *MEASURES], axis=1).assign(method=method))
        frame = pd.concat(parts)[["seed", "method", *MEASURES]]
        return frame.dropna(subset=list(MEASURES), how="all").reset_index(drop=True)

    def explanation_table(self) -> pd.DataFrame:
        """Tables 4-5 / 7-8: per explanation method, median ± std over replicates of :meth:`explanations`."""
        return median_std(self.explanations(), list(MEASURES), "method").display.reindex(list(EXPLAINED))

    def tables(self) -> dict[str, pd.DataFrame]:
        return {
            "runs: test accuracy of the last weights per replicate and arm": self.runs_table(),
            **super().tables(),
            "Table 1: misclassified test images, top-1 error with M and with the edited maps M' (no training)":
                self.table1(),
            "Tables 4-5 / 7-8: deletion, insertion, ROAD, MSE to the edited map, median ± std over replicates "
            "(last weights)": self.explanation_table(),
        }

    def training_curves(self, r: int) -> dict[str, pd.DataFrame]:
        """Per-epoch histories of replicate ``r``'s three runs, the fine-tuning epochs numbered on from the ABN's last."""
        base = self.base(r)
        offset = int(base.metrics["last_epoch"])
        tuned = {ARMS[1]: self.fine_tuned(r), ARMS[2]: self.control(r)}
        return {ARMS[0]: base.history,
                **{name: run.history.assign(epoch=run.history["epoch"] + offset) for name, run in tuned.items()}}

    def overlays(self, r: int, n: int = 4) -> dict[str, Any]:
        """Replicate ``r``'s first ``n`` test images (misclassified by the ABN first) and per image the ABN
        map, the edited map and the fine-tuned map, with titles and how the weights were chosen, for
        ``plots.map_grid``."""
        _, test = self.data.replicate(r)
        base, fine = self.base(r), self.fine_tuned(r)
        edited = self.maps_store.load_all(f"{self._folder(r)}-test")
        before, after = base.predictions["last"], fine.predictions["last"]
        order = np.argsort(before["pred"].to_numpy() == test.labels, kind="stable")[:n]
        subset = test.subset(order)
        maps_base = network_maps(self.abn(r), subset, self.device)
        maps_tuned = network_maps(self.network(fine), subset, self.device)
        names = test.label_names
        return {
            "images": [img.permute(1, 2, 0).numpy() for img in subset.images],
            "maps": [[maps_base[k], edited[sample_id].map, maps_tuned[k]] for k, sample_id in enumerate(subset.ids)],
            "row_titles": [
                f"{sample_id}: true {names[test.labels[i]]}\nABN {names[before['pred'][i]]}, "
                f"fine-tuned {names[after['pred'][i]]}"
                for sample_id, i in zip(subset.ids, order, strict=True)
            ],
            "col_titles": ["ABN map (M)", "edited map (M')", "fine-tuned map"],
            "selection": f"replicate {r}, last weights (ABN epoch {base.metrics['last_epoch']}, fine-tuned epoch "
                         f"{fine.metrics['last_epoch']}); misclassified test images first",
        }

    def figures(self, seed: int | None = None) -> list[Figure]:
        """Replicate ``seed``'s (default the first run's) test accuracy per epoch, every replicate's test
        accuracy per arm, and the replicate's maps before and after (Figs. 8-10); last weights throughout."""
        seed = self.runs[0].seed if seed is None else seed
        views = self.overlays(seed)
        return [
            plots.epoch_curves(self.training_curves(seed), "test_accuracy",
                               title=f"replicate {seed}: test accuracy per epoch (the last epoch of each run is used)"),
            plots.metric_by_arm(self.wide("last"), "accuracy", arms=list(ARMS),
                                title=f"test accuracy per replicate ({self.data.name}), last weights"),
            plots.map_grid(views["images"], views["maps"], row_titles=views["row_titles"],
                           col_titles=views["col_titles"], suptitle=views["selection"]),
        ]
