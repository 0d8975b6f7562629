"""The ABN + human-edited attention maps study (paper 3): train, edit, fine-tune, explain.

Per replicate (a seed on a fixed split, or a fold of a k-fold cross-validation, methods.md section 3):

1. train an Attention Branch Network with ``L_abn`` (SGD + momentum, step decay; the last epoch's
   weights are used, as the paper's fixed schedule does);
2. pick training samples to edit (misclassified, or lowest-confidence first, up to a budget) and make
   their "human" maps from the data's source -- the simulated editor (paints the true evidence in and
   erases the network's attention elsewhere), bubble KDE maps, or lesion segmentations -- stored in an
   :class:`~attnlib.edited_maps.EditedMapStore` with provenance;
3. fine-tune the attention and perception branches with ``L_abn + gamma ||M' - M||_2`` (Eqs. 1-3),
   and, as a control the paper does not run, with ``gamma = 0`` (same samples and schedule, no maps);
4. on the test split: Table 1 (misclassified test images re-scored with their edited maps fed in place
   of M, no training), accuracy before / after fine-tuning (Tables 3, 6), deletion / insertion and ROAD
   of CAM, Grad-CAM, ABN's map and the fine-tuned map (Tables 4, 7), and each map's MSE to the edited
   map (Tables 5, 8).

Every stage is a run of the shared run store (study ``abn``), so the sweep's report pass loads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from attnlib import explanations as xai
from attnlib.data.arrays import ArrayDataset
from attnlib.data.cub import CUB200, read_bubbles
from attnlib.data.defaults import synthetic_finegrained
from attnlib.data.idrid_lesions import IDRiDLesions
from attnlib.data.layouts import resolve_dataset
from attnlib.data.splits import stratified_folds
from attnlib.data.synthetic_finegrained import FineGrainedDataset
from attnlib.edited_maps import EditedMap, EditedMapDataset, EditedMapStore, Provenance
from attnlib.editor.session import EditorSession
from attnlib.map_sources import bubble_map, lesion_map, simulate_edit
from attnlib.methods.abn import ABNClassifier, ABNFineTune, select_samples, table1_errors
from attnlib.models.abn import ABNet, create_abn
from attnlib.profiles import load_profile
from attnlib.seeding import seed_everything
from attnlib.stats import describe_change, outcome_words, paired_t_test, with_profile_caveat
from attnlib.training.experiment import data_fingerprint, make_loaders, score
from attnlib.training.runstore import RunResult, RunSpec, RunStore
from attnlib.training.trainer import TrainConfig, Trainer

STUDY = "abn"
DATASETS = ("synthetic", "cub", "idrid")
#: The dataset a ``data_root`` of each layout gives when ``dataset`` is not set.
LAYOUT_DATASETS = {"synthetic": "synthetic", "cub": "cub", "idrid": "idrid"}
MAP_SOURCES = ("editor", "bubbles", "segmentation")
#: Explanation methods of Tables 4-5 / 7-8, in table order.
EXPLANATIONS = ("CAM", "Grad-CAM", "ABN", "fine-tuned")
ARMS = ("ABN", "ABN + fine-tuning", "ABN + fine-tuning (gamma = 0)")
Protocol = Literal["seeds", "folds"]


def study_settings(profile: str | None) -> dict[str, Any]:
    """The profile's ``abn`` section."""
    return load_profile(profile)["abn"]


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
    dataset: str | None = None,
    data_root: str | Path | None = None,
    profile: str | None = None,
    bubbles_csv: str | Path | None = None,
    **synthetic: Any,
) -> StudyData:
    """The study's data: ``synthetic`` (the fine-grained default, generated on first use; ``data_root``
    a folder of ``generate_finegrained``), ``cub`` (CUB-200-2010, official train/test lists, bubbles from
    the CSV ``bubbles_csv``, default ``<data_root>/bubbles.csv`` when present) or ``idrid`` (81 diseased
    vs 120 healthy, k-fold CV). ``dataset`` None: ``synthetic`` without ``data_root``, else told from the
    folder's layout (:func:`~attnlib.data.layouts.resolve_dataset`)."""
    dataset = resolve_dataset(dataset, data_root, LAYOUT_DATASETS, "ABN")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    if bubbles_csv is not None and dataset != "cub":
        raise ValueError(f"bubbles_csv applies to cub only, not {dataset!r}")
    if synthetic and (dataset != "synthetic" or data_root is not None):
        raise ValueError(f"synthetic knobs {sorted(synthetic)} apply only to the generated synthetic default")
    settings = study_settings(profile)
    if dataset == "synthetic":
        return _synthetic(
            Path(data_root) if data_root is not None else synthetic_finegrained(profile, **synthetic)
        )
    if data_root is None:
        raise ValueError(f"dataset {dataset!r} needs data_root (the real data's folder)")
    size = int(settings["image_size"])
    if dataset == "idrid":
        return _idrid(Path(data_root), size, settings["folds"])
    root = Path(data_root)
    default = root / "bubbles.csv"
    bubbles = Path(bubbles_csv) if bubbles_csv is not None else default if default.is_file() else None
    return _cub(root, size, bubbles)


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
    settings: Mapping[str, Any],
    model_key: str | None = None,
    checkpoint: str | None = None,
) -> tuple[np.ndarray, Provenance]:
    """The human map of ``sample_id`` at ``network_map``'s grid, and its provenance.

    ``editor``: :func:`~attnlib.map_sources.simulate_edit` of the network's map with the data's evidence
    (``edit_budget`` strokes); ``bubbles``: the KDE of its bubbles (``bubble_bandwidth``, None = each
    bubble's radius); ``segmentation``: its lesion map. A sample without that knowledge raises ``KeyError``.
    """
    grid = tuple(network_map.shape)
    if source not in data.sources:
        raise ValueError(f"map source {source!r} is not available for {data.name}; available: {data.sources}")
    if source == "editor":
        if sample_id not in data.evidence:
            return network_map.astype(np.float32), Provenance(
                "simulated",
                grid,
                data.image_size,
                (),
                "simulated editor (no evidence: unchanged)",
                model_key,
                checkpoint,
            )
        budget = settings["edit_budget"]
        edited, strokes = simulate_edit(network_map, data.evidence[sample_id], budget=budget)
        simulator = f"simulated editor (budget {budget})"
        return edited, Provenance("simulated", grid, data.image_size, strokes, simulator, model_key, checkpoint)
    if source == "bubbles":
        if sample_id not in data.bubbles:
            raise KeyError(f"{data.name}: no bubbles for {sample_id}")
        frame, size = data.bubbles[sample_id]
        return bubble_map(frame, size, settings.get("bubble_bandwidth"), out_size=grid), Provenance(
            "bubbles", grid
        )
    return lesion_map(data.lesions[sample_id], grid), Provenance("segmentation", grid)


@torch.no_grad()
def network_maps(
    model: ABNet, dataset: ArrayDataset, device: torch.device, batch_size: int = 64
) -> np.ndarray:
    """The attention branch's map M of every item (N x h x w)."""
    model.to(device).eval()
    out = [
        model(dataset.images[i : i + batch_size].to(device)).predicted_map[:, 0].cpu()
        for i in range(0, len(dataset), batch_size)
    ]
    return torch.cat(out).numpy()


def edit_maps(
    data: StudyData,
    dataset: ArrayDataset,
    model: ABNet,
    source: str,
    settings: Mapping[str, Any],
    store: EditedMapStore,
    folder: str,
    model_key: str,
    checkpoint: str,
    device: torch.device,
) -> dict[str, EditedMap]:
    """Human maps of every item of ``dataset`` against ``model``'s maps, saved under ``store/folder``."""
    maps = network_maps(model, dataset, device)
    out = {}
    for sample_id, network_map in zip(dataset.ids, maps, strict=True):
        edited, provenance = human_map(data, sample_id, source, network_map, settings, model_key, checkpoint)
        store.save(folder, sample_id, edited, provenance)
        out[sample_id] = EditedMap(edited, provenance)
    return out


def edited_map_store(store: RunStore) -> EditedMapStore:
    """The edited-map store beside a run store (``<runs>/edited_maps``), shared by the study and the editor."""
    return EditedMapStore(store.root.parent / "edited_maps")


def human_edits_folder(data: StudyData, base: RunResult, r: int) -> str:
    """The store folder of the maps edited by hand against ``base`` (replicate ``r``'s ABN)."""
    return f"{data.name}-human-{base.spec.key}-r{r}"


def editor_session(
    store: RunStore,
    data: StudyData,
    r: int,
    base: RunResult,
    settings: Mapping[str, Any],
    order: str | Sequence[str] = "misclassified",
    limit: int | None = None,
    editor: str | None = None,
    device: str | None = None,
) -> EditorSession:
    """An editing session on replicate ``r``'s training images against ``base`` (its ABN,
    :func:`train_base`), saving to :func:`human_edits_folder`.

    ``order``: "misclassified" (the ABN's wrong training predictions first, then the others least
    confident first), "lowest_confidence" (all, least confident in the true class first), or a list of
    sample ids; ``limit`` keeps the first that many.
    """
    train, _ = data.replicate(r)
    if isinstance(order, str):
        ids = select_samples(base.predictions["train"], order)  # type: ignore[arg-type]
        if order == "misclassified":  # then the correctly classified ones, least confident first
            wrong = set(ids)
            ids += [i for i in select_samples(base.predictions["train"], "lowest_confidence") if i not in wrong]
        ids = ids[:limit]
    else:
        ids = [str(i) for i in order][:limit]
    if not ids:
        raise ValueError(
            f"replicate {r}: the order {order!r} selects no training image (an empty list or limit 0)"
        )
    return EditorSession(
        load_abn(base, settings, data),
        train,
        edited_map_store(store),
        human_edits_folder(data, base, r),
        ids,
        model_key=base.spec.key,
        checkpoint=_checkpoint(base),
        editor=editor,
        device=device,
    )


def _human_edits(maps_store: EditedMapStore, data: StudyData, base: RunResult, r: int) -> dict[str, EditedMap]:
    folder = human_edits_folder(data, base, r)
    maps = maps_store.load_all(folder)
    if not maps:
        raise FileNotFoundError(
            f"replicate {r}: no hand-edited maps in {maps_store.root / folder}; edit them with "
            "notebooks/04_attention_editor.ipynb (same profile, dataset and replicate) first"
        )
    return maps


def _checkpoint(base: RunResult) -> str:
    return f"last (epoch {base.metrics['last_epoch']})"


# ------------------------------------------------------------------------------------------ training


def train_config(settings: Mapping[str, Any], stage: Literal["train", "finetune"]) -> TrainConfig:
    """SGD + momentum with the profile's step decay; ``finetune`` uses the ``finetune`` sub-section."""
    part = settings if stage == "train" else {**settings, **settings["finetune"]}
    return TrainConfig(
        epochs=int(part["epochs"]),
        batch_size=int(part["batch_size"]),
        optimizer="sgd_momentum",
        lr=float(part["lr"]),
        weight_decay=float(part["weight_decay"]),
        plateau_patience=None,
        lr_milestones=tuple(part.get("lr_milestones", ())),
        progress=bool(settings.get("progress", True)),
    )


def build_abn(settings: Mapping[str, Any], data: StudyData) -> ABNet:
    """The profile's ABN backbone for ``data``'s classes and channels."""
    return create_abn(
        settings["backbone"],
        len(data.images.label_names),
        int(data.images.images.shape[1]),
        pretrained=settings["pretrained"],
    )


def train_base(
    store: RunStore,
    data: StudyData,
    r: int,
    settings: Mapping[str, Any],
    profile: str,
    device: str | None = None,
) -> RunResult:
    """Replicate ``r``'s ABN trained with ``L_abn``; predictions ``train`` (for the selection) and ``last`` (test)."""
    train, test = data.replicate(r)
    cfg = train_config(settings, "train")
    config = {
        "arm": "abn",
        "dataset": data.name,
        "replicate": r,
        "protocol": data.protocol,
        "backbone": settings["backbone"],
        "pretrained": settings["pretrained"],
        "train": _plain(cfg),
    }
    spec = RunSpec(STUDY, config, r, profile, data_fingerprint({"train": train, "test": test}))

    def fn(workdir: Path) -> dict[str, Any]:
        seed_everything(r, deterministic=cfg.deterministic)
        method = ABNClassifier(build_abn(settings, data))
        loaders = make_loaders({"train": train, "test": test}, cfg.batch_size, r)
        trainer = Trainer(cfg, device=device, checkpoint_every=settings["checkpoint_every"])
        fit = trainer.fit(method, loaders["train"], None, workdir, r, eval_loaders={"test": loaders["test"]})
        frame, metrics = score(method, loaders["test"], trainer, train.label_names)
        in_order = make_loaders({"eval": train}, cfg.batch_size, r)["eval"]
        return {
            "history": fit.history,
            "metrics": {"last": metrics, "last_epoch": fit.last_epoch},
            "predictions": {"last": frame, "train": trainer.predict(method, in_order)},
            "states": {"last": fit.last_state},
        }

    return store.run(spec, fn)


def load_abn(result: RunResult, settings: Mapping[str, Any], data: StudyData) -> ABNet:
    """The ABN of a stored run (its last weights), in eval mode."""
    method = ABNClassifier(build_abn(settings, data))
    method.load_state_dict(result.state_dict("last"))
    return method.model.eval()


def fine_tune(
    store: RunStore,
    data: StudyData,
    r: int,
    base: RunResult,
    maps: Mapping[str, EditedMap | np.ndarray],
    ids: Sequence[str],
    gamma: float,
    settings: Mapping[str, Any],
    profile: str,
    device: str | None = None,
    keep_weights: bool = True,
) -> RunResult:
    """Fine-tune ``base``'s ABN on the samples ``ids`` with their ``maps`` (Eqs. 1-3, branches only).

    ``maps`` may come from any :class:`EditedMapStore` (e.g. the editor's ``load_all``). ``keep_weights``
    False stores the run without its weights (the gamma = 0 control: its scores are all a report reads).
    """
    train, test = data.replicate(r)
    cfg = train_config(settings, "finetune")
    subset = EditedMapDataset(train, maps, ids)
    config = {
        "arm": "abn+ft",
        "gamma": float(gamma),
        "base": base.spec.key,
        "dataset": data.name,
        "replicate": r,
        "n_samples": len(subset),
        "train": _plain(cfg),
    }
    spec = RunSpec(STUDY, config, r, profile, data_fingerprint({"train": subset, "test": test}))

    def fn(workdir: Path) -> dict[str, Any]:
        seed_everything(r, deterministic=cfg.deterministic)
        method = ABNFineTune(build_abn(settings, data), gamma)
        method.load_state_dict(base.state_dict("last"))
        loaders = make_loaders({"train": subset, "test": test}, cfg.batch_size, r)
        trainer = Trainer(cfg, device=device, checkpoint_every=settings["checkpoint_every"])
        fit = trainer.fit(method, loaders["train"], None, workdir, r, eval_loaders={"test": loaders["test"]})
        frame, metrics = score(method, loaders["test"], trainer, train.label_names)
        return {
            "history": fit.history,
            "metrics": {"last": metrics, "last_epoch": fit.last_epoch},
            "predictions": {"last": frame},
            "states": {"last": fit.last_state} if keep_weights else {},
        }

    return store.run(spec, fn)


def _plain(cfg: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in asdict(cfg).items() if k != "progress"}


# ---------------------------------------------------------------------------------------- evaluation


def explanation_scores(
    models: Mapping[str, ABNet],
    images: Tensor,
    targets: Tensor,
    settings: Mapping[str, Any],
    device: torch.device,
) -> pd.DataFrame:
    """Per image and explanation method: deletion, insertion (RISE), ROAD (grad-cam) and the MSE to ``targets``.

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
        curves = xai.deletion_insertion(
            scorer,
            images,
            saliency,
            step=int(settings["perturbation_step"]),
            batch_size=int(settings["perturbation_batch"]),
        )
        road = (
            xai.road_scores(scorer, images, saliency)
            if settings["road"]
            else torch.full((len(images),), np.nan)
        )
        mse = xai.map_mse(saliency.cpu(), targets)
        for i in range(len(images)):
            rows.append(
                {
                    "image": i,
                    "method": name,
                    "deletion": float(curves["deletion"][i]),
                    "insertion": float(curves["insertion"][i]),
                    "road": float(road[i]),
                    "mse": float(mse[i]),
                }
            )
    return pd.DataFrame(rows)


@dataclass
class ReplicateResult:
    """Everything one replicate produced: the three runs, the explanation run, the folders of the edited
    maps fine-tuned on (``train_maps``) and fed to the test images (``test_maps``)."""

    replicate: int
    base: RunResult
    fine_tuned: RunResult
    control: RunResult
    explain: RunResult
    train_maps: Path
    test_maps: Path
    selected: list[str]

    @property
    def table1(self) -> dict[str, float]:
        """Table 1 figures of this replicate (misclassified test images, before / after edited maps)."""
        return self.explain.metrics["table1"]


def run_replicate(
    store: RunStore,
    data: StudyData,
    r: int,
    profile: str,
    device: str | None = None,
    source: str | None = None,
    human_edits: bool = False,
) -> ReplicateResult:
    """Steps 1-4 of the module docstring for replicate ``r`` (each stage loaded when already stored).

    ``human_edits``: fine-tune on the maps saved with the interactive editor for this replicate's ABN
    (:func:`editor_session`, folder :func:`human_edits_folder`) instead of step 2's; the test maps of
    Table 1 and the MSE still come from ``source``.
    """
    settings = study_settings(profile)
    source = source or settings["map_source"]
    torch_device = (
        torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    base = train_base(store, data, r, settings, profile, device)
    model = load_abn(base, settings, data)
    checkpoint = _checkpoint(base)
    maps_store = edited_map_store(store)
    folder = f"{data.name}-{source}-{base.spec.key}-r{r}"
    train, _ = data.replicate(r)
    if human_edits:
        maps = _human_edits(maps_store, data, base, r)
        selected = list(maps)
    else:
        selected = select_samples(base.predictions["train"], settings["selection"], settings["edit_limit"])
        if not selected:
            raise RuntimeError(
                f"replicate {r}: no training sample selected by {settings['selection']!r} "
                "(every training image classified correctly); use selection 'lowest_confidence'"
            )
        position = {sample_id: i for i, sample_id in enumerate(train.ids)}
        chosen = train.subset([position[i] for i in selected])
        maps = edit_maps(
            data,
            chosen,
            model,
            source,
            settings,
            maps_store,
            f"{folder}-train",
            base.spec.key,
            checkpoint,
            torch_device,
        )
    fine = fine_tune(store, data, r, base, maps, selected, settings["gamma"], settings, profile, device)
    control = fine_tune(store, data, r, base, maps, selected, 0.0, settings, profile, device, keep_weights=False)
    explain = _explain(
        store,
        data,
        r,
        base,
        fine,
        model,
        source,
        settings,
        profile,
        maps_store,
        folder,
        checkpoint,
        torch_device,
    )
    train_folder = human_edits_folder(data, base, r) if human_edits else f"{folder}-train"
    return ReplicateResult(
        r, base, fine, control, explain, maps_store.root / train_folder, maps_store.root / f"{folder}-test", selected
    )


def _explain(
    store: RunStore,
    data: StudyData,
    r: int,
    base: RunResult,
    fine: RunResult,
    model: ABNet,
    source: str,
    settings: Mapping[str, Any],
    profile: str,
    maps_store: EditedMapStore,
    folder: str,
    checkpoint: str,
    device: torch.device,
) -> RunResult:
    _, test = data.replicate(r)
    n = min(int(settings["n_explain"]), len(test))
    config = {
        "arm": "explain",
        "base": base.spec.key,
        "fine_tuned": fine.spec.key,
        "source": source,
        "n": n,
        **{k: settings[k] for k in ("perturbation_step", "road", "edit_budget")},
    }
    spec = RunSpec(STUDY, config, r, profile, data_fingerprint({"test": test}))

    def fn(workdir: Path) -> dict[str, Any]:
        seed_everything(r)
        maps = edit_maps(
            data,
            test,
            model,
            source,
            settings,
            maps_store,
            f"{folder}-test",
            base.spec.key,
            checkpoint,
            device,
        )
        target = torch.stack([torch.from_numpy(maps[i].map) for i in test.ids])
        labels = torch.as_tensor(test.labels)
        wrong = torch.from_numpy(base.predictions["last"]["pred"].to_numpy() != test.labels)
        table1 = (
            table1_errors(model, test.images[wrong], labels[wrong], target[wrong][:, None], device)
            if wrong.any()
            else {"n": 0, "error_before": float("nan"), "error_after": float("nan")}
        )
        tuned = ABNFineTune(build_abn(settings, data), settings["gamma"])
        tuned.load_state_dict(fine.state_dict("last"))
        scores = explanation_scores(
            {"base": model, "fine-tuned": tuned.model}, test.images[:n], target[:n], settings, device
        )
        scores.insert(0, "id", [test.ids[i] for i in scores["image"]])
        return {
            "history": pd.DataFrame({"epoch": []}),
            "metrics": {"table1": table1},
            "predictions": {"explanations": scores},
        }

    return store.run(spec, fn)


# ----------------------------------------------------------------------------------------- reporting


def training_curves(result: ReplicateResult) -> dict[str, pd.DataFrame]:
    """Per-epoch histories of a replicate's three runs, the fine-tuning epochs numbered on from the ABN's last."""
    offset = int(result.base.metrics["last_epoch"])
    shifted = {
        name: run.history.assign(epoch=run.history["epoch"] + offset)
        for name, run in ((ARMS[1], result.fine_tuned), (ARMS[2], result.control))
    }
    return {ARMS[0]: result.base.history, **shifted}


def accuracy_frame(results: Sequence[ReplicateResult]) -> pd.DataFrame:
    """One row per replicate and arm: test ``accuracy`` (last weights) and the fine-tuning set size."""
    rows = []
    for res in results:
        for arm, run in zip(ARMS, (res.base, res.fine_tuned, res.control), strict=True):
            rows.append(
                {
                    "replicate": res.replicate,
                    "arm": arm,
                    "accuracy": run.metrics["last"]["accuracy"],
                    "epoch": run.metrics["last_epoch"],
                    "n_finetune": len(res.selected),
                }
            )
    return pd.DataFrame(rows)


def explanation_frame(results: Sequence[ReplicateResult]) -> pd.DataFrame:
    """Per replicate and explanation method: mean deletion, insertion, ROAD and MSE over the explained images."""
    parts = []
    for res in results:
        frame = res.explain.predictions["explanations"]
        means = (
            frame.groupby("method", sort=False)[["deletion", "insertion", "road", "mse"]].mean().reset_index()
        )
        means.insert(0, "replicate", res.replicate)
        parts.append(means)
    return pd.concat(parts, ignore_index=True)


def table1_frame(results: Sequence[ReplicateResult]) -> pd.DataFrame:
    """Table 1 per replicate: misclassified test images and their error before / after the edited maps."""
    return pd.DataFrame([{"replicate": res.replicate, **res.table1} for res in results])


def verdict(
    accuracy: pd.DataFrame, explanations: pd.DataFrame, alpha: float = 0.05, profile: str | None = None
) -> str:
    """One computed sentence: did fine-tuning with edited maps improve accuracy and the explanation metrics?
    (After the smoke caveat when ``profile`` is ``smoke``.)"""
    acc = paired_t_test(accuracy, "accuracy", "arm", ARMS[1], ARMS[0], pair="replicate")
    control = paired_t_test(accuracy, "accuracy", "arm", ARMS[1], ARMS[2], pair="replicate")
    parts = [
        f"fine-tuning with edited maps changed test accuracy by {acc['mean_a'] - acc['mean_b']:+.3f} "
        f"({outcome_words(acc, alpha, True, 'paired t-test p')})",
        f"against the same fine-tuning without maps (gamma = 0) by {control['mean_a'] - control['mean_b']:+.3f} "
        f"({outcome_words(control, alpha, True)})",
    ]
    for metric, higher in (("deletion", False), ("insertion", True), ("mse", False)):
        test = paired_t_test(explanations, metric, "method", "fine-tuned", "ABN", pair="replicate")
        parts.append(describe_change(test, metric, alpha, higher))
    return with_profile_caveat("On this data, " + "; ".join(parts) + ".", profile)


def overlays(
    results: Sequence[ReplicateResult],
    data: StudyData,
    settings: Mapping[str, Any],
    n: int = 4,
    device: str | None = None,
) -> dict[str, Any]:
    """Images, and per image the ABN map, the edited map and the fine-tuned map (first replicate's test
    images: misclassified by the base model first), with titles, for ``plots.map_grid``."""
    res = results[0]
    _, test = data.replicate(res.replicate)
    torch_device = torch.device(device) if device else torch.device("cpu")
    base = load_abn(res.base, settings, data)
    tuned = ABNFineTune(build_abn(settings, data), settings["gamma"])
    tuned.load_state_dict(res.fine_tuned.state_dict("last"))
    edited = EditedMapStore(res.test_maps.parent).load_all(res.test_maps.name)
    before, after = res.base.predictions["last"], res.fine_tuned.predictions["last"]
    order = np.argsort(before["pred"].to_numpy() == test.labels, kind="stable")[:n]
    subset = test.subset(order)
    maps_base = network_maps(base, subset, torch_device)
    maps_tuned = network_maps(tuned.model.eval(), subset, torch_device)
    names = test.label_names
    return {
        "images": [img.permute(1, 2, 0).numpy() for img in subset.images],
        "maps": [
            [maps_base[k], edited[sample_id].map, maps_tuned[k]] for k, sample_id in enumerate(subset.ids)
        ],
        "row_titles": [
            f"{sample_id}: true {names[test.labels[i]]}\nABN {names[before['pred'][i]]}, "
            f"fine-tuned {names[after['pred'][i]]}"
            for sample_id, i in zip(subset.ids, order, strict=True)
        ],
        "col_titles": ["ABN map (M)", "edited map (M')", "fine-tuned map"],
        "selection": f"replicate {res.replicate}, last weights (ABN epoch {res.base.metrics['last_epoch']}, "
        f"fine-tuned epoch {res.fine_tuned.metrics['last_epoch']}); misclassified test images first",
    }
