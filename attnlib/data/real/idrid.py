"""IDRiD Disease Grading: fundus photographs with retinopathy grades and macular-edema risk.

Porwal et al., "Indian Diabetic Retinopathy Image Dataset (IDRiD): A Database for Diabetic Retinopathy
Screening Research", Data 3(3), 25 (2018). IEEE DataPort, DOI 10.21227/H25W98
(https://ieee-dataport.org/open-access/indian-diabetic-retinopathy-image-dataset-idrid).

Only part ``B. Disease Grading`` is read (layout and counts: ``data_manifests/idrid.yaml``). The
preprocessing options reproduce the global spatial attention paper: side crop, 224 x 224 area resize,
horizontal flip of right eyes, ImageNet standardisation.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from attnlib.core.progress import tqdm
from attnlib.data.cache import ArrayCache
from attnlib.data.contract import LabelledDataset
from attnlib.data.real.images import image_item
from attnlib.data.real.manifest import Problem, load_manifest, not_decoded

log = logging.getLogger(__name__)

Split = Literal["train", "test"]
Task = Literal["retinopathy", "macular_edema"]
FlipMode = Literal["paper", "auto", "none"]

SPLITS: tuple[Split, ...] = ("train", "test")
GRADING_DIR = "B. Disease Grading"
IMAGE_DIRS: dict[str, str] = {"train": "a. Training Set", "test": "b. Testing Set"}
LABEL_FILES: dict[str, str] = {
    "train": "a. IDRiD_Disease Grading_Training Labels.csv",
    "test": "b. IDRiD_Disease Grading_Testing Labels.csv",
}
ID_COLUMN = "Image name"
#: CSV column of each task, and the prefix of its class names (``DR0`` ... ``DR4``, ``ME0`` ... ``ME2``).
TASK_COLUMNS: dict[str, str] = {"retinopathy": "Retinopathy grade", "macular_edema": "Risk of macular edema"}
TASK_PREFIX: dict[str, str] = {"retinopathy": "DR", "macular_edema": "ME"}

#: The paper keeps columns 260 ... 3685 (inclusive) of the 4288 px wide originals.
ORIGINAL_WIDTH = 4288
CROP_X = (260, 3685)

#: Right eyes the global-attention paper flipped: 0-based indices into the sorted official image lists
#: (index i is ``IDRiD_{i+1:03d}`` in both sets), as listed in the paper.
RIGHT_EYE_INDICES: dict[str, tuple[int, ...]] = {
    "train": (
        0, 6, 8, 9, 12, 13, 16, 17, 19, 21, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 45, 46, 48, 51, 54, 56,
        58, 60, 61, 63, 64, 65, 66, 68, 70, 73, 75, 77, 79, 81, 84, 86, 89, 90, 93, 94, 98, 99, 100, 101, 102,
        104, 106, 109, 111, 115, 117, 118, 119, 123, 124, 127, 128, 131, 134, 135, 137, 139, 141, 144, 145,
        147, 149, 151, 152, 156, 157, 158, 159, 160, 163, 166, 168, 170, 171, 172, 174, 176, 177, 181, 183,
        184, 186, 187, 188, 190, 192, 193, 194, 195, 197, 200, 201, 202, 204, 206, 209, 211, 212, 214, 216,
        217, 220, 222, 226, 230, 234, 235, 238, 241, 244, 246, 248, 251, 252, 253, 256, 258, 259, 261, 264,
        268, 270, 272, 273, 274, 275, 276, 279, 282, 284, 286, 288, 289, 291, 292, 299, 300, 302, 304, 305,
        306, 307, 309, 312, 314, 315, 318, 320, 321, 322, 325, 329, 331, 333, 334, 337, 340, 341, 343, 345,
        349, 351, 356, 357, 359, 361, 362, 367, 369, 370, 372, 373, 375, 377, 378, 381, 383, 384, 387, 389,
        392, 394, 396, 398, 402, 403, 405, 406, 407, 408, 409, 411, 412,
    ),
    "test": (
        1, 3, 4, 5, 8, 9, 14, 15, 16, 19, 21, 24, 26, 27, 31, 34, 35, 36, 38, 39, 41, 42, 45, 48, 50, 53,
        55, 57, 60, 62, 63, 64, 66, 67, 69, 71, 76, 81, 82, 84, 86, 87, 90, 94, 96, 100, 102,
    ),
}


class IDRiDFormatError(ValueError):
    """A file of the IDRiD layout is missing, unreadable or does not have the expected content."""


def grading_root(root: str | Path) -> Path:
    """The ``B. Disease Grading`` folder: ``root`` itself or the folder of that name inside it."""
    root = Path(root).expanduser()
    return root / GRADING_DIR if (root / GRADING_DIR).is_dir() else root


def image_dir(root: str | Path, split: Split) -> Path:
    return grading_root(root) / "1. Original Images" / IMAGE_DIRS[split]


def label_file(root: str | Path, split: Split) -> Path:
    return grading_root(root) / "2. Groundtruths" / LABEL_FILES[split]


def paper_right_eyes(split: Split) -> frozenset[str]:
    """Image ids the paper flipped as right eyes (``IDRiD_001`` for training index 0)."""
    return frozenset(f"IDRiD_{i + 1:03d}" for i in RIGHT_EYE_INDICES[split])


def list_images(folder: Path) -> dict[str, Path]:
    """``{id: path}`` of the JPEGs in ``folder`` (id = file name without extension; ``._*`` skipped)."""
    if not folder.is_dir():
        return {}
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.suffix.lower() in (".jpg", ".jpeg") and not p.name.startswith(".")
    }


def read_grading_csv(path: str | Path) -> pd.DataFrame:
    """A grading CSV as columns ``id, retinopathy, macular_edema`` (int).

    Tolerates a UTF-8 BOM, spaces around column names and ids, and empty (unnamed) columns or rows.
    Raises :class:`IDRiDFormatError` naming the file on a missing column, a repeated id or a
    non-integer grade.
    """
    path = Path(path)
    if not path.is_file():
        raise IDRiDFormatError(f"{path}: grading CSV not found")
    table = pd.read_csv(path, encoding="utf-8-sig", dtype=str, skipinitialspace=True)
    table.columns = [str(c).strip() for c in table.columns]
    table = table.dropna(how="all").dropna(axis=1, how="all")
    missing = [c for c in (ID_COLUMN, *TASK_COLUMNS.values()) if c not in table.columns]
    if missing:
        raise IDRiDFormatError(f"{path}: missing columns {missing} (found {list(table.columns)})")
    out = pd.DataFrame({"id": table[ID_COLUMN].str.strip()})
    dup = out["id"][out["id"].duplicated()]
    if len(dup):
        raise IDRiDFormatError(f"{path}: repeated image names {sorted(dup)[:5]}")
    for task, column in TASK_COLUMNS.items():
        grades = pd.to_numeric(table[column].str.strip(), errors="coerce")
        bad = grades.isna() | (grades != grades.round())
        if bad.any():
            raise IDRiDFormatError(
                f"{path}: non-integer {column!r} for {out.loc[bad, 'id'].head(3).tolist()}"
            )
        out[task] = grades.astype(np.int64).to_numpy()
    return out.reset_index(drop=True)


def crop_bounds(width: int) -> tuple[int, int]:
    """Columns ``[x0, x1)`` the paper keeps, scaled from the 4288 px originals to ``width``."""
    scale = width / ORIGINAL_WIDTH
    return round(CROP_X[0] * scale), round((CROP_X[1] + 1) * scale)


def _open_rgb(path: Path, draft_size: tuple[int, int] | None = None) -> Image.Image:
    if not path.is_file():
        raise IDRiDFormatError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            if draft_size is not None:
                im.draft("RGB", draft_size)
            return im.convert("RGB")
    except (OSError, ValueError) as err:
        raise IDRiDFormatError(f"{path}: unreadable image ({err})") from err


def read_fundus(
    path: str | Path, *, crop: bool = True, size: tuple[int, int] | None = (224, 224), flip: bool = False
) -> np.ndarray:
    """A fundus JPEG as float32 3 x H x W in [0, 1]: side crop, area (BOX) resize to ``size`` = (H, W), flip.

    Raises :class:`IDRiDFormatError` naming the file when it is missing or PIL cannot decode it.
    """
    im = _open_rgb(Path(path))
    if crop:
        x0, x1 = crop_bounds(im.width)
        im = im.crop((x0, 0, x1, im.height))
    if size is not None and (im.height, im.width) != tuple(size):
        im = im.resize((size[1], size[0]), resample=Image.Resampling.BOX)
    arr = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return np.ascontiguousarray(arr[:, :, ::-1] if flip else arr)


def optic_disc_x(path: str | Path, work_width: int = 256) -> float:
    """Horizontal position (0 = left edge, 1 = right edge) of the optic disc, found as the brightest blob.

    The image is decoded at reduced scale, turned grey, area-resized to ``work_width`` px wide and
    blurred with a Gaussian of radius ``work_width / 20`` (about the disc's radius), which smooths
    away vessels and small bright lesions; the disc is the maximum of what remains.
    """
    im = _open_rgb(Path(path), draft_size=(work_width, work_width)).convert("L")
    height = max(1, round(im.height * work_width / im.width))
    small = im.resize((work_width, height), resample=Image.Resampling.BOX)
    blurred = np.asarray(small.filter(ImageFilter.GaussianBlur(radius=work_width / 20)), dtype=np.float32)
    x = np.unravel_index(int(blurred.argmax()), blurred.shape)[1]
    return (x + 0.5) / work_width


def detect_laterality(path: str | Path) -> Literal["left", "right"]:
    """``right`` when the optic disc lies in the right half of the photograph.

    In a fundus photograph (viewed as if facing the patient) the disc is on the nasal side, which is
    the image's right for a right eye; flipping right eyes puts every disc on the left.
    """
    return "right" if optic_disc_x(path) > 0.5 else "left"


@dataclass(frozen=True)
class IDRiDSettings:
    """Preprocessing; part of the cache key and the data fingerprint. Defaults: the paper's.

    ``crop`` drops x < 260 and x > 3685 (scaled to the image width); ``size`` = (H, W) area resize
    (None: keep); ``flip`` mirrors right eyes: ``paper`` from :data:`RIGHT_EYE_INDICES`, ``auto``
    from :func:`detect_laterality`, ``none`` never; ``standardize`` applies ImageNet mean/std.
    """

    crop: bool = True
    size: tuple[int, int] | None = (224, 224)
    flip: FlipMode = "paper"
    standardize: bool = True

    def __post_init__(self) -> None:
        if self.flip not in ("paper", "auto", "none"):
            raise ValueError(f"flip must be 'paper', 'auto' or 'none', got {self.flip!r}")


@dataclass(eq=False)
class IDRiD(LabelledDataset):
    """IDRiD Disease Grading in attnlib's dataset contract (Porwal et al., Data 2018; IEEE DataPort).

    Get the data from https://ieee-dataport.org/open-access/indian-diabetic-retinopathy-image-dataset-idrid
    (DOI 10.21227/H25W98) and pass the unpacked folder (or its ``B. Disease Grading``) as ``root``.
    ``split`` is the official set (``train``: 413, ``test``: 103); the paper's own 80/20 split is the
    caller's. ``task`` picks the label: ``retinopathy`` (grade) or ``macular_edema`` (risk); the
    classes are the grades found in both official CSVs. CSV rows without an image are skipped and
    images without a CSV row ignored, both counted in one log line. Items: ``idx, id, img``
    (3 x H x W float32; [0, 1] unless standardised), ``lab``.
    """

    root: Path
    split: Split = "train"
    task: Task = "retinopathy"
    settings: IDRiDSettings = field(default_factory=IDRiDSettings)
    cache: ArrayCache | None = field(default_factory=ArrayCache)

    def __post_init__(self) -> None:
        if self.split not in IMAGE_DIRS:
            raise ValueError(f"split must be one of {sorted(IMAGE_DIRS)}, got {self.split!r}")
        if self.task not in TASK_COLUMNS:
            raise ValueError(f"task must be one of {sorted(TASK_COLUMNS)}, got {self.task!r}")
        self.root = Path(self.root)
        folder = image_dir(self.root, self.split)
        if not folder.is_dir():
            raise IDRiDFormatError(f"{folder}: image folder not found")
        table = read_grading_csv(label_file(self.root, self.split))
        grades = {int(g) for s in SPLITS for g in self._grades_of(s, table)}
        self.grades = sorted(grades)
        self.label_names = [f"{TASK_PREFIX[self.task]}{g}" for g in self.grades]
        images = list_images(folder)
        has_image = table["id"].isin(images)
        without_image = table.loc[~has_image, "id"].tolist()
        without_row = sorted(set(images) - set(table["id"]))
        self.n_rows_without_image, self.n_images_without_row = len(without_image), len(without_row)
        log.info(
            "IDRiD %s: %d CSV rows, %d images; skipped %d CSV rows without an image %s and ignored %d images "
            "without a CSV row %s",
            self.split, len(table), len(images), len(without_image), without_image[:3],
            len(without_row), without_row[:3],
        )
        table = table[has_image].sort_values("id").reset_index(drop=True)
        table["path"] = [images[i] for i in table["id"]]
        table["label"] = [self.grades.index(g) for g in table[self.task]]
        self.metadata = table
        self.labels = table["label"].to_numpy(dtype=np.int64)
        self._right = paper_right_eyes(self.split)

    def _grades_of(self, split: Split, own: pd.DataFrame) -> list[int]:
        if split == self.split:
            return own[self.task].tolist()
        path = label_file(self.root, split)
        return read_grading_csv(path)[self.task].tolist() if path.is_file() else []


    def with_settings(self, **changes: Any) -> IDRiD:
        """A view with some preprocessing settings changed, sharing the table and the cache."""
        view = copy.copy(self)
        view.settings = dataclasses.replace(self.settings, **changes)
        view.__dict__.pop("fingerprint", None)
        return view

    def flips(self, i: int) -> bool:
        """Whether image ``i`` is mirrored under ``settings.flip``."""
        if self.settings.flip == "paper":
            return self.metadata.at[i, "id"] in self._right
        if self.settings.flip == "auto":
            return detect_laterality(self.metadata.at[i, "path"]) == "right"
        return False

    def image(self, i: int) -> np.ndarray:
        """Cropped, resized, flipped image (3 x H x W float32 in [0, 1]), cached per file and settings."""
        s = self.settings
        path = self.metadata.at[i, "path"]
        if self.cache is None:
            return read_fundus(path, crop=s.crop, size=s.size, flip=self.flips(i))
        params = {"idrid": 1, "crop": s.crop, "size": list(s.size) if s.size else None, "flip": s.flip}
        if s.flip == "paper":
            params["flipped"] = self.flips(i)
        return self.cache.get_or_compute(
            path, params, lambda: read_fundus(path, crop=s.crop, size=s.size, flip=self.flips(i))
        )

    def __getitem__(self, i: int) -> dict[str, object]:
        standardize = self.settings.standardize
        return image_item(i, self.metadata.at[i, "id"], self.image(i), int(self.labels[i]), standardize)

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the selected ids and labels, the task, the settings and the CSV's bytes."""
        digest = hashlib.sha256()
        digest.update(self.metadata[["id", "label"]].to_csv(index=False).encode())
        digest.update(json.dumps({"split": self.split, "task": self.task, **asdict(self.settings)},
                                 sort_keys=True, default=list).encode())
        digest.update(label_file(self.root, self.split).read_bytes())
        return digest.hexdigest()[:12]


def laterality_table(root: str | Path, split: Split, *, progress: bool = False) -> pd.DataFrame:
    """Every image of ``split``: the paper's right-eye list against :func:`optic_disc_x`.

    Columns ``id, paper_right, disc_x`` (0 = left edge), ``auto_right`` (disc in the right half),
    ``agree`` and ``problem``. An image that cannot be decoded does not stop the check: its ``problem``
    names the file and the error, its ``disc_x`` is NaN, ``auto_right`` NA and ``agree`` False (``problem``
    is missing elsewhere). Decodes every image at reduced scale; ``progress`` shows a tqdm bar.
    """
    right = paper_right_eyes(split)
    rows = []
    images = list_images(image_dir(root, split)).items()
    for image_id, path in tqdm(images, desc=f"optic disc ({split})", disable=not progress, leave=False):
        try:
            disc_x, problem = optic_disc_x(path), None
        except IDRiDFormatError as err:
            disc_x, problem = float("nan"), str(err)
        rows.append({"id": image_id, "paper_right": image_id in right, "disc_x": disc_x,
                     "auto_right": pd.NA if problem else disc_x > 0.5, "problem": problem})
    table = pd.DataFrame(rows, columns=["id", "paper_right", "disc_x", "auto_right", "problem"])
    table = table.astype({"paper_right": bool, "disc_x": float, "auto_right": "boolean"})
    table.insert(4, "agree", (table["paper_right"] == table["auto_right"]).fillna(False).astype(bool))
    return table


def laterality_disagreements(root: str | Path, split: Split) -> pd.DataFrame:
    """The rows of :func:`laterality_table` where the paper's list and the optic-disc check disagree, and
    those of the images that cannot be decoded (their ``problem`` names the file and the error).

    Columns ``id, paper_right, auto_right, disc_x, problem``; one log line gives both counts.
    """
    table = laterality_table(root, split)
    report = table.loc[~table["agree"], ["id", "paper_right", "auto_right", "disc_x", "problem"]]
    unreadable = int(report["problem"].notna().sum())
    log.info("IDRiD %s: the paper's right-eye list and the optic-disc check disagree on %d images; %d images "
             "could not be read", split, len(report) - unreadable, unreadable)
    return report.reset_index(drop=True)


def verify_idrid(
    root: str | Path, *, deep: bool = False, manifest: dict[str, Any] | None = None
) -> list[Problem]:
    """Check a local IDRiD Disease Grading copy against ``data_manifests/idrid.yaml``; every problem found.

    Checks the folders, image counts, the CSVs' columns (after stripping), grade ranges, repeated
    names, and that every CSV row has an image and every image a row. With ``deep``, every JPEG is
    decoded; without it a note counts the JPEGs not decoded.
    """
    manifest = manifest or load_manifest("idrid")
    grading = grading_root(root)
    if not grading.is_dir():
        return [Problem("error", grading, "Disease Grading folder not found: nothing else can be checked")]
    problems: list[Problem] = []
    ranges = {task: manifest["columns"][column]["range"] for task, column in TASK_COLUMNS.items()}
    n_images = 0
    for split in SPLITS:
        folder = image_dir(root, split)
        images = list_images(folder)
        n_images += len(images)
        expected = manifest["expected_counts"][split]
        if not folder.is_dir():
            problems.append(Problem("error", folder, "image folder not found"))
        elif len(images) != expected:
            problems.append(Problem("warning", folder, f"{len(images)} images, the release has {expected}"))
        if deep:
            for path in images.values():
                try:
                    _open_rgb(path)
                except IDRiDFormatError as err:
                    problems.append(Problem("error", path, str(err).removeprefix(f"{path}: ")))
        csv = label_file(root, split)
        try:
            table = read_grading_csv(csv)
        except IDRiDFormatError as err:
            problems.append(Problem("error", csv, str(err).removeprefix(f"{csv}: ")))
            continue
        for task, (low, high) in ranges.items():
            bad = table[(table[task] < low) | (table[task] > high)]
            problems += [
                Problem("error", csv, f"{row.id}: {TASK_COLUMNS[task]!r} = {row[task]} outside {low}-{high}")
                for _, row in bad.iterrows()
            ]
        problems += [
            Problem("error", csv, f"{i}: no image {folder / i}.jpg") for i in table["id"] if i not in images
        ]
        ids = set(table["id"])
        problems += [Problem("error", p, "image has no row in the grading CSV") for i, p in images.items()
                     if i not in ids]
    return problems + ([] if deep else not_decoded(grading, n_images, "images"))
