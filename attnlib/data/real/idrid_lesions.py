"""The ABN paper's IDRiD task: 81 fundus photographs with lesions ("diseased") against 120 healthy ones.

Porwal et al., "Indian Diabetic Retinopathy Image Dataset (IDRiD)", Data 3(3), 25 (2018); IEEE DataPort,
DOI 10.21227/H25W98 (access terms: ``data_manifests/idrid.yaml``). Never commit the images.

Diseased: the images of ``A. Segmentation/1. Original Images/{a. Training Set,b. Testing Set}`` (54 + 27)
that show haemorrhages (HE), hard exudates (EX) or soft exudates (SE), i.e. whose mask
``A. Segmentation/2. All Segmentation Groundtruths/<set>/<lesion folder>/<id>_<HE|EX|SE>.tif`` has a pixel
with a colour channel ``> 0`` (masks may read as {0, 76}, with several channels, an alpha channel that is
ignored, or a palette; :func:`read_mask`); not every image has every lesion file.
Healthy: Disease Grading images (``B. Disease Grading``, read with :class:`attnlib.data.real.idrid.IDRiD`) with
retinopathy grade 0 and macular-edema risk 0, the first ``n_healthy`` in id order over the training then
the testing set. Images are prepared as :class:`~attnlib.data.real.idrid.IDRiDSettings` say (side crop, area
resize, right-eye flip, standardisation); the paper's right-eye list covers the Disease Grading images
only, so a segmentation image is flipped when its optic-disc ground truth (``5. Optic Disc``) lies in the
right half (without that file: :func:`~attnlib.data.real.idrid.detect_laterality`). Lesion masks get the same
crop, resize (area average, then ``> 0``, so small lesions survive) and flip as their image.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from attnlib.data.cache import ArrayCache
from attnlib.data.contract import LabelledDataset
from attnlib.data.real.idrid import (
    IMAGE_DIRS,
    SPLITS,
    IDRiD,
    IDRiDFormatError,
    IDRiDSettings,
    Split,
    crop_bounds,
    detect_laterality,
    list_images,
    read_fundus,
    verify_idrid,
)
from attnlib.data.real.images import image_item
from attnlib.data.real.manifest import Problem, load_manifest, not_decoded

log = logging.getLogger(__name__)

SEGMENTATION_DIR = "A. Segmentation"
#: Ground-truth folder of each lesion (and the optic disc), by the suffix of its files.
LESION_DIRS: dict[str, str] = {
    "MA": "1. Microaneurysms",
    "HE": "2. Haemorrhages",
    "EX": "3. Hard Exudates",
    "SE": "4. Soft Exudates",
    "OD": "5. Optic Disc",
}
#: The lesions that make an image "diseased" in the ABN paper.
DISEASE_LESIONS = ("HE", "EX", "SE")
#: Mask columns of :func:`segmentation_images` (and the dataset's metadata).
MASK_COLUMNS = (*DISEASE_LESIONS, "OD")
LABEL_NAMES = ("healthy", "diseased")
#: Class sizes of the ABN paper's task.
PAPER_COUNTS = {"diseased": 81, "healthy": 120}
#: PIL modes :func:`read_mask` reads, besides the 16-bit integer ones (``I;16``, ``I;16B`` ...).
MASK_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "I", "F")


def segmentation_image_dir(root: str | Path, split: Split) -> Path:
    return Path(root) / SEGMENTATION_DIR / "1. Original Images" / IMAGE_DIRS[split]


def lesion_file(root: str | Path, split: Split, image_id: str, lesion: str) -> Path:
    """``A. Segmentation/2. All Segmentation Groundtruths/<set>/<lesion folder>/<id>_<lesion>.tif``."""
    folder = Path(root) / SEGMENTATION_DIR / "2. All Segmentation Groundtruths" / IMAGE_DIRS[split]
    return folder / LESION_DIRS[lesion] / f"{image_id}_{lesion}.tif"


def read_mask(path: str | Path) -> np.ndarray:
    """A ground-truth mask as bool H x W: a lesion pixel has a colour channel ``> 0``.

    The alpha channel (``LA``, ``RGBA``) is ignored and a palette image (``P``) is read through its
    colours, not its indices; the other modes read are ``1``, ``L``, ``RGB``, ``I;16``, ``I`` and ``F``.
    :class:`IDRiDFormatError` names a missing, unreadable or other-mode file.
    """
    path = Path(path)
    if not path.is_file():
        raise IDRiDFormatError(f"{path}: mask not found")
    try:
        with Image.open(path) as im:
            mode = im.mode
            pixels = np.asarray(im.convert("RGB") if mode == "P" else im)
    except (OSError, ValueError) as err:
        raise IDRiDFormatError(f"{path}: unreadable mask ({err})") from err
    if mode not in MASK_MODES and not mode.startswith("I;16"):
        raise IDRiDFormatError(f"{path}: unsupported mask mode {mode!r}")
    if mode in ("LA", "RGBA"):
        pixels = pixels[..., :-1]
    return (pixels > 0).any(axis=2) if pixels.ndim == 3 else pixels > 0


def transform_mask(mask: np.ndarray, settings: IDRiDSettings, flip: bool) -> np.ndarray:
    """A full-size mask (H x W) cropped, resized and flipped like :func:`~attnlib.data.real.idrid.read_fundus`
    does its image: the area-resized lesion fraction ``> 0`` (bool)."""
    mask = np.asarray(mask, dtype=np.float32)
    if settings.crop:
        x0, x1 = crop_bounds(mask.shape[1])
        mask = mask[:, x0:x1]
    if settings.size is not None and mask.shape != tuple(settings.size):
        resized = Image.fromarray(mask, mode="F").resize(settings.size[::-1], resample=Image.Resampling.BOX)
        mask = np.asarray(resized)
    out = mask > 0
    return np.ascontiguousarray(out[:, ::-1] if flip else out)


def segmentation_images(root: str | Path) -> pd.DataFrame:
    """The segmentation part's images: columns ``split, image_id, path`` and, per lesion of
    :data:`DISEASE_LESIONS` and ``OD``, the mask's path or None when the file does not exist."""
    rows = []
    for split in SPLITS:
        for image_id, path in list_images(segmentation_image_dir(root, split)).items():
            files = {lesion: lesion_file(root, split, image_id, lesion) for lesion in MASK_COLUMNS}
            rows.append({"split": split, "image_id": image_id, "path": path,
                         **{k: (p if p.is_file() else None) for k, p in files.items()}})
    return pd.DataFrame(rows, columns=["split", "image_id", "path", *MASK_COLUMNS])


def is_healthy(grading: pd.DataFrame) -> pd.Series:
    """Rows of a Disease Grading table (:func:`~attnlib.data.real.idrid.read_grading_csv`, or
    :attr:`IDRiD.metadata`) with retinopathy grade 0 and macular-edema risk 0."""
    return (grading["retinopathy"] == 0) & (grading["macular_edema"] == 0)


@dataclass(eq=False)
class IDRiDLesions(LabelledDataset):
    """The ABN paper's IDRiD task (module docstring) in attnlib's dataset contract.

    ``root`` is the unpacked IDRiD folder holding ``A. Segmentation`` and ``B. Disease Grading``.
    ``settings`` prepare the images (its ``size`` is replaced by ``image_size`` x ``image_size``; the paper
    trains at 360). Items: ``idx``, ``id`` (``segmentation/<split>/IDRiD_NN`` or
    ``grading/<split>/IDRiD_NNN``: the two parts and sets reuse names), ``img`` (3 x S x S float32), ``lab``
    (0 healthy, 1 diseased). Fewer images than the paper's 81 / 120 are warned about; an empty class is
    an error.
    """

    root: Path
    image_size: int = 360
    n_healthy: int = PAPER_COUNTS["healthy"]
    settings: IDRiDSettings = field(default_factory=IDRiDSettings)
    cache: ArrayCache | None = field(default_factory=ArrayCache)
    label_names: list[str] = field(default_factory=lambda: list(LABEL_NAMES))

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()
        self.settings = dataclasses.replace(self.settings, size=(self.image_size, self.image_size))
        diseased = self._diseased()
        self._grading = {
            split: IDRiD(self.root, split, settings=self.settings, cache=self.cache) for split in SPLITS
        }
        healthy = pd.concat([
            ds.metadata.loc[is_healthy(ds.metadata), ["id", "path"]]
            .rename(columns={"id": "image_id"})
            .assign(split=split, row=lambda t: t.index)
            for split, ds in self._grading.items()
        ]).head(self.n_healthy)
        meta = pd.concat([diseased.assign(part="segmentation", label=1),
                          healthy.assign(part="grading", label=0, lesions="")], ignore_index=True)
        meta.insert(0, "id", meta["part"] + "/" + meta["split"] + "/" + meta["image_id"])
        columns = ["id", "part", "split", "image_id", "path", "label", "lesions", "row", *MASK_COLUMNS]
        self.metadata = meta[columns]
        self.labels = self.metadata["label"].to_numpy(dtype=np.int64)
        counts = {"diseased": len(diseased), "healthy": len(healthy)}
        for name, n in counts.items():
            if n == 0:
                raise IDRiDFormatError(f"{self.root}: no {name} images found; the task needs both classes")
        short = {name: n for name, n in counts.items() if n < PAPER_COUNTS[name]}
        if short or len(healthy) < self.n_healthy:
            warnings.warn(
                f"IDRiD lesion task at {self.root}: {counts['diseased']} diseased and {counts['healthy']} "
                f"healthy images (asked for {self.n_healthy} healthy); the paper has {PAPER_COUNTS}",
                stacklevel=3,
            )

    def _diseased(self) -> pd.DataFrame:
        """Segmentation images with a non-empty HE, EX or SE mask; ``lesions`` lists which (``HE+EX``)."""
        table = segmentation_images(self.root)
        present = [
            [lesion for lesion in DISEASE_LESIONS if row[lesion] is not None and self._any(row[lesion])]
            for row in table.to_dict("records")
        ]
        table["lesions"] = ["+".join(found) for found in present]
        kept = table[table["lesions"] != ""]
        excluded = table.loc[table["lesions"] == "", "image_id"].tolist()
        log.info("IDRiD segmentation part: %d images, %d with HE/EX/SE lesions; excluded %s",
                 len(table), len(kept), excluded[:5])
        return kept.assign(row=-1)

    def _cached(self, path: Path, params: dict[str, Any], fn: Callable[[], np.ndarray]) -> np.ndarray:
        return fn() if self.cache is None else self.cache.get_or_compute(path, params, fn)

    def _any(self, path: Path) -> bool:
        return bool(self._cached(path, {"idrid_mask_any": 1}, lambda: np.array([read_mask(path).any()]))[0])


    def flips(self, i: int) -> bool:
        """Whether image ``i`` (and its lesion mask) is mirrored: Disease Grading images as
        :meth:`IDRiD.flips`; segmentation images when their optic disc lies in the right half."""
        meta = self.metadata.loc[i]
        if meta["part"] == "grading":
            return self._grading[meta["split"]].flips(int(meta["row"]))
        if self.settings.flip == "none":
            return False
        disc = meta["OD"]
        if not isinstance(disc, Path):
            return detect_laterality(meta["path"]) == "right"
        disc_x = self._cached(disc, {"idrid_disc_x": 1}, lambda: np.array([_centre_x(read_mask(disc))]))[0]
        return bool(disc_x > 0.5)

    def image(self, i: int) -> np.ndarray:
        """Cropped, resized, flipped image (3 x S x S float32 in [0, 1]), cached per file and settings."""
        meta = self.metadata.loc[i]
        if meta["part"] == "grading":
            return self._grading[meta["split"]].image(int(meta["row"]))
        s, flip, path = self.settings, self.flips(i), meta["path"]
        params = {"idrid_segmentation": 1, "crop": s.crop, "size": list(s.size), "flipped": flip}
        return self._cached(path, params, lambda: read_fundus(path, crop=s.crop, size=s.size, flip=flip))

    def lesion_mask(self, i: int) -> np.ndarray:
        """Union of the item's HE / EX / SE masks, transformed like its image (bool S x S; False: healthy)."""
        meta = self.metadata.loc[i]
        union = np.zeros(self.settings.size, dtype=bool)
        if meta["part"] == "grading":
            return union
        s, flip = self.settings, self.flips(i)
        with Image.open(meta["path"]) as im:
            image_hw = (im.height, im.width)
        for lesion in DISEASE_LESIONS:
            path = meta[lesion]
            if not isinstance(path, Path):
                continue

            def compute(path: Path = path) -> np.ndarray:
                mask = read_mask(path)
                if mask.shape != image_hw:
                    raise IDRiDFormatError(f"{path}: mask is {mask.shape[0]}x{mask.shape[1]}, its image "
                                           f"{image_hw[0]}x{image_hw[1]}")
                return transform_mask(mask, s, flip)

            params = {"idrid_lesion": 1, "crop": s.crop, "size": list(s.size), "flipped": flip}
            union |= self._cached(path, params, compute)
        return union

    def __getitem__(self, i: int) -> dict[str, object]:
        standardize = self.settings.standardize
        return image_item(i, self.metadata.at[i, "id"], self.image(i), int(self.labels[i]), standardize)

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the selected ids and labels, settings, ``n_healthy`` and the grading sets."""
        digest = hashlib.sha256()
        digest.update(self.metadata[["id", "label"]].to_csv(index=False).encode())
        digest.update(json.dumps({"n_healthy": self.n_healthy, **asdict(self.settings)}, sort_keys=True,
                                 default=list).encode())
        for ds in self._grading.values():
            digest.update(ds.fingerprint.encode())
        return digest.hexdigest()[:12]


def _centre_x(mask: np.ndarray) -> float:
    """Horizontal centre of a mask's pixels (0 = left edge, 1 = right edge); 0.5 for an empty mask."""
    cols = np.flatnonzero(mask.any(axis=0))
    return (float(cols.mean()) + 0.5) / mask.shape[1] if len(cols) else 0.5


def verify_idrid_lesions(
    root: str | Path, *, deep: bool = False, manifest: dict[str, Any] | None = None
) -> tuple[dict[str, int], list[Problem]]:
    """Check the parts of a local IDRiD copy the lesion task reads; counts and every problem found.

    Counts: segmentation images per set, images with each of HE / EX / SE, diseased images, images
    without those lesions, and healthy candidates (grade 0, risk 0) per Disease Grading set. Problems:
    a missing segmentation folder, segmentation counts other than the release's and class sizes below
    the paper's (warnings), unreadable masks and masks of another size than their image, plus
    :func:`~attnlib.data.real.idrid.verify_idrid`'s findings on the Disease Grading part. Masks are always
    decoded; with ``deep``, every image of both parts is decoded too, without it a note per part counts
    the images not decoded.
    """
    manifest = manifest or load_manifest("idrid")
    expected = manifest["segmentation"]["expected_counts"]
    root = Path(root).expanduser()
    problems: list[Problem] = []
    table = segmentation_images(root)
    counts = {f"segmentation_{split}_images": int((table["split"] == split).sum()) for split in SPLITS}
    counts.update({f"with_{lesion}": 0 for lesion in DISEASE_LESIONS})
    diseased = 0
    for split in SPLITS:
        folder = segmentation_image_dir(root, split)
        part = table[table["split"] == split]
        if not folder.is_dir():
            problems.append(Problem("error", folder, "segmentation image folder not found"))
        elif len(part) != expected[split]:
            message = f"{len(part)} images, the release has {expected[split]}"
            problems.append(Problem("warning", folder, message))
        for row in part.itertuples():
            problems += _check_image(row.path, deep)
            shows = False
            for lesion in DISEASE_LESIONS:
                path = getattr(row, lesion)
                if path is not None:
                    lesion_shown, found = _check_mask(path, row.path)
                    problems += found
                    counts[f"with_{lesion}"] += lesion_shown
                    shows |= lesion_shown
            diseased += shows
    counts["diseased"], counts["without_lesions"] = diseased, len(table) - diseased
    if not deep:
        problems += not_decoded(root / SEGMENTATION_DIR, len(table), "images")
    problems += verify_idrid(root, deep=deep, manifest=manifest)
    for split in SPLITS:
        try:
            ds = IDRiD(root, split, cache=None)
        except IDRiDFormatError:
            counts[f"healthy_candidates_{split}"] = 0
            continue
        counts[f"healthy_candidates_{split}"] = int(is_healthy(ds.metadata).sum())
    candidates = counts["healthy_candidates_train"] + counts["healthy_candidates_test"]
    for name, n in (("diseased", diseased), ("healthy", candidates)):
        if n < PAPER_COUNTS[name]:
            message = f"{n} {name} images, the paper uses {PAPER_COUNTS[name]}"
            problems.append(Problem("warning", root, message))
    return counts, problems


def _check_image(path: Path, deep: bool) -> list[Problem]:
    if not deep:
        return []
    try:
        read_fundus(path, crop=False, size=None)
    except IDRiDFormatError as err:
        return [Problem("error", path, str(err).removeprefix(f"{path}: "))]
    return []


def _check_mask(path: Path, image: Path) -> tuple[bool, list[Problem]]:
    """Whether the mask at ``path`` shows a lesion, and its problem: unreadable, or not ``image``'s size."""
    try:
        mask = read_mask(path)
        with Image.open(image) as im:
            size = (im.height, im.width)
    except (IDRiDFormatError, OSError) as err:
        return False, [Problem("error", path, str(err).removeprefix(f"{path}: "))]
    if mask.shape != size:
        message = f"mask is {mask.shape[0]}x{mask.shape[1]}, its image {size[0]}x{size[1]}"
        return False, [Problem("error", path, message)]
    return bool(mask.any()), []
