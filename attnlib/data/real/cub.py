"""CUB-200-2010: 200 bird species, with rough segmentations, bounding boxes and (separately) bubbles.

Welinder, Branson, Mita, Wah, Schroff, Belongie, Perona, "Caltech-UCSD Birds 200", Caltech technical
report CNS-TR-2010-001 (2010), https://www.vision.caltech.edu/datasets/cub_200/. Free for research;
cite the report. Never commit the images.

Layout (``data_manifests/cub200_2010.yaml``): ``images/NNN.Class_Name/<file>.jpg``; ``lists/train.txt``
and ``lists/test.txt`` (3,000 / 3,033 lines, each a path relative to ``images/``); ``lists/classes.txt``
(200 lines ``NNN.Class_Name`` in class order: the class list; without it, the class folders of
``images/``); the label is ``int(NNN) - 1``; ``annotations-mat/NNN.Class_Name/<image stem>.mat`` holds
``seg`` (H x W, non-zero = bird) and ``bbox`` (a struct with ``left, top, right, bottom``, returned as
stored). Hidden ``._*`` files (macOS resource forks) are skipped everywhere, also when a list names them.

Bubbles (the "Bubbles" game: circles a player opened to see the bird). The public file format could not
be confirmed; attnlib reads a CSV with the columns ``image, worker, x, y, radius``: ``image`` the path as
in ``lists/*.txt``, ``worker`` the player, ``x`` / ``y`` the column / row of the circle's centre in pixels
of the ORIGINAL image (0-based; a centre must satisfy ``0 <= x < W`` and ``0 <= y < H``), ``radius`` in
original pixels (> 0). Convert another format to this one before use.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import scipy.io
from PIL import Image

from attnlib.data.cache import ArrayCache
from attnlib.data.contract import LabelledDataset
from attnlib.data.real.images import image_item, is_hidden
from attnlib.data.real.manifest import Problem, load_manifest, not_decoded

log = logging.getLogger(__name__)

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")
IMAGES_DIR = "images"
LISTS_DIR = "lists"
CLASSES_FILE = "classes.txt"
ANNOTATIONS_DIR = "annotations-mat"
BBOX_FIELDS = ("left", "top", "right", "bottom")
BUBBLE_COLUMNS = ("image", "worker", "x", "y", "radius")


class CUBFormatError(ValueError):
    """A file of the CUB-200-2010 layout (or a bubbles CSV) is missing or lacks the expected content."""


class BBox(NamedTuple):
    """A bounding box as stored in ``annotations-mat`` (pixels of the original image)."""

    left: float
    top: float
    right: float
    bottom: float


@dataclass(frozen=True)
class Annotation:
    """One image's ``annotations-mat`` file: ``seg`` (H x W as stored, non-zero = bird) and ``bbox``."""

    seg: np.ndarray
    bbox: BBox


def class_number(rel: str) -> int:
    """The 1-based class number of a path ``NNN.Class_Name/<file>`` (its folder's ``NNN``)."""
    folder = Path(rel).parts[0] if Path(rel).parts else ""
    number, dot, _ = folder.partition(".")
    if not dot or not number.isdigit() or len(Path(rel).parts) != 2:
        raise CUBFormatError(f"{rel!r} is not a path like '001.Black_footed_Albatross/<file>.jpg'")
    return int(number)


def list_file(root: str | Path, split: Split) -> Path:
    return Path(root) / LISTS_DIR / f"{split}.txt"


def class_file(root: str | Path) -> Path:
    """``lists/classes.txt``: the class list, one ``NNN.Class_Name`` per line."""
    return Path(root) / LISTS_DIR / CLASSES_FILE


def annotation_file(root: str | Path, rel: str) -> Path:
    """``annotations-mat/<class folder>/<image stem>.mat`` of the image at ``images/<rel>``."""
    return (Path(root) / ANNOTATIONS_DIR / rel).with_suffix(".mat")


def read_list(path: str | Path) -> list[str]:
    """The relative image paths of a split list, in file order; blank lines and hidden entries skipped.

    Raises :class:`CUBFormatError` naming the file when it is missing or a line is not ``NNN.Name/<file>``.
    """
    path = Path(path)
    if not path.is_file():
        raise CUBFormatError(f"{path}: split list not found")
    entries = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        rel = line.strip().replace("\\", "/")
        if not rel or is_hidden(rel):
            continue
        try:
            class_number(rel)
        except CUBFormatError as err:
            raise CUBFormatError(f"{path}: line {lineno}: {err}") from err
        entries.append(rel)
    return entries


def read_classes(path: str | Path) -> list[str]:
    """The class names ``NNN.Class_Name`` of a ``classes.txt``, in file order; blank lines skipped.

    Raises :class:`CUBFormatError` naming the file and line when a line is not ``NNN.Class_Name`` or its
    number is not its position (the list must run 001 ... K, so that label ``NNN - 1`` indexes it).
    """
    path = Path(path)
    names: list[str] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        try:
            number = class_number(f"{name}/x")
        except CUBFormatError:
            raise CUBFormatError(f"{path}: line {lineno}: {name!r} is not NNN.Class_Name") from None
        if number != len(names) + 1:
            due = len(names) + 1
            raise CUBFormatError(f"{path}: line {lineno}: class {number:03d} where {due:03d} is due")
        names.append(name)
    return names


def class_names(root: str | Path) -> list[str]:
    """The classes ``NNN.Class_Name`` in class order: :func:`read_classes` of ``lists/classes.txt`` when
    present (class folders may then be missing), else :func:`class_folders`."""
    path = class_file(root)
    return read_classes(path) if path.is_file() else class_folders(root)


def class_folders(root: str | Path) -> list[str]:
    """The class folders of ``images/``, in class order; they must be numbered 001 ... K without gaps."""
    folder = Path(root) / IMAGES_DIR
    if not folder.is_dir():
        raise CUBFormatError(f"{folder}: image folder not found")
    names = [p.name for p in folder.iterdir() if p.is_dir() and not is_hidden(p.name)]
    try:
        numbered = sorted((class_number(f"{name}/x"), name) for name in names)
    except CUBFormatError as err:
        raise CUBFormatError(f"{folder}: a class folder is not named NNN.Class_Name ({err})") from err
    numbers = [n for n, _ in numbered]
    if numbers != list(range(1, len(numbers) + 1)):
        missing = sorted(set(range(1, max(numbers, default=0) + 1)) - set(numbers))
        raise CUBFormatError(
            f"{folder}: class folders must be numbered 001 ... K; missing {missing[:5]}, found {numbers[:5]}"
        )
    return [name for _, name in numbered]


def read_annotation(path: str | Path) -> Annotation:
    """An ``annotations-mat`` file (read with :func:`scipy.io.loadmat`).

    Raises :class:`CUBFormatError` naming the file when it is missing, unreadable, lacks ``seg`` or
    ``bbox``, ``seg`` is not 2-D, or ``bbox`` lacks one of ``left, top, right, bottom``.
    """
    path = Path(path)
    if not path.is_file():
        raise CUBFormatError(f"{path}: annotation not found")
    try:
        content = scipy.io.loadmat(path, simplify_cells=True)
    except (OSError, ValueError, TypeError) as err:
        raise CUBFormatError(f"{path}: unreadable .mat file ({err})") from err
    missing = [k for k in ("seg", "bbox") if k not in content]
    if missing:
        raise CUBFormatError(f"{path}: no {missing} in the .mat file (found {sorted(content)})")
    seg, bbox = np.asarray(content["seg"]), content["bbox"]
    if seg.ndim != 2:
        raise CUBFormatError(f"{path}: seg must be H x W, got shape {seg.shape}")
    if not isinstance(bbox, dict) or any(k not in bbox for k in BBOX_FIELDS):
        raise CUBFormatError(f"{path}: bbox must be a struct with fields {list(BBOX_FIELDS)}, got {bbox!r}")
    return Annotation(seg, BBox(*(float(bbox[k]) for k in BBOX_FIELDS)))


def _open_rgb(path: Path) -> Image.Image:
    if not path.is_file():
        raise CUBFormatError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as err:
        raise CUBFormatError(f"{path}: unreadable image ({err})") from err


def image_size_of(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image, from its header."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, ValueError) as err:
        raise CUBFormatError(f"{path}: unreadable image ({err})") from err


def read_image(path: str | Path, size: int | None = 224) -> np.ndarray:
    """An image as float32 3 x size x size in [0, 1] (bilinear resize; None keeps its size); grey -> RGB."""
    im = _open_rgb(Path(path))
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), resample=Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0)


@dataclass(eq=False)
class CUB200(LabelledDataset):
    """CUB-200-2010 in attnlib's dataset contract (Welinder et al., Caltech CNS-TR-2010-001).

    Get the data from https://www.vision.caltech.edu/datasets/cub_200/ (images, lists, annotations)
    and pass the folder holding ``images/``, ``lists/`` and ``annotations-mat/`` as ``root``. ``split``
    is the official list. ``label_names`` are the class names (:func:`class_names`: ``lists/classes.txt``,
    else the class folders) without the number, in class order (label = ``NNN - 1``). Items: ``idx``,
    ``id`` (the path as in the list, e.g. ``001.Black_footed_Albatross/Black_footed_Albatross_0001.jpg``),
    ``img`` (3 x S x S float32, S = ``image_size``; [0, 1] unless ``standardize`` applies ImageNet
    mean/std), ``lab``.
    """

    root: Path
    split: Split = "train"
    image_size: int = 224
    standardize: bool = True
    cache: ArrayCache | None = field(default_factory=ArrayCache)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {self.split!r}")
        if self.image_size < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        self.root = Path(self.root).expanduser()
        if not (self.root / IMAGES_DIR).is_dir():
            raise CUBFormatError(f"{self.root / IMAGES_DIR}: image folder not found")
        classes = class_names(self.root)
        self.label_names = [name.partition(".")[2] for name in classes]
        rels = read_list(list_file(self.root, self.split))
        unknown = sorted({Path(rel).parts[0] for rel in rels} - set(classes))
        if unknown:
            listed = class_file(self.root)
            where = f"are not in {listed}" if listed.is_file() else "have no folder in images/"
            raise CUBFormatError(f"{list_file(self.root, self.split)}: classes {unknown[:5]} {where}")
        if not rels:
            raise CUBFormatError(f"{list_file(self.root, self.split)}: no images listed")
        self.metadata = pd.DataFrame({"id": rels, "label": [class_number(rel) - 1 for rel in rels]})
        self.metadata["split"] = self.split
        self.labels = self.metadata["label"].to_numpy(dtype=np.int64)
        log.info("CUB-200-2010 %s: %d images of %d classes", self.split, len(self), len(self.label_names))


    def image_path(self, i: int) -> Path:
        return self.root / IMAGES_DIR / self.metadata.at[i, "id"]

    def original_size(self, i: int) -> tuple[int, int]:
        """(H, W) of the original image (bubble and annotation coordinates refer to it)."""
        return image_size_of(self.image_path(i))

    def image(self, i: int) -> np.ndarray:
        """The resized image (3 x S x S float32 in [0, 1]), cached per file and size."""
        path, size = self.image_path(i), self.image_size
        if self.cache is None:
            return read_image(path, size)
        return self.cache.get_or_compute(path, {"cub_image": size}, lambda: read_image(path, size))

    def annotation(self, i: int) -> Annotation:
        """The item's segmentation (original size) and bounding box, from ``annotations-mat``."""
        return read_annotation(annotation_file(self.root, self.metadata.at[i, "id"]))

    def segmentation(self, i: int) -> np.ndarray:
        """The bird's mask at the item's size (bool S x S; nearest-neighbour resize of ``seg > 0``)."""
        seg = (self.annotation(i).seg > 0).astype(np.uint8)
        mask = Image.fromarray(seg).resize((self.image_size, self.image_size), Image.Resampling.NEAREST)
        return np.asarray(mask) > 0

    def __getitem__(self, i: int) -> dict[str, object]:
        return image_item(i, self.metadata.at[i, "id"], self.image(i), int(self.labels[i]), self.standardize)

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the listed ids and labels, split, size, standardisation and the list's bytes."""
        digest = hashlib.sha256()
        digest.update(self.metadata[["id", "label"]].to_csv(index=False).encode())
        digest.update(json.dumps({"split": self.split, "image_size": self.image_size,
                                  "standardize": self.standardize}, sort_keys=True).encode())
        digest.update(list_file(self.root, self.split).read_bytes())
        return digest.hexdigest()[:12]


def read_bubbles(path: str | Path) -> pd.DataFrame:
    """A bubbles CSV (module docstring) as columns ``image, worker`` (str), ``x, y, radius`` (float).

    The index is the CSV line of each bubble (the header is line 1). Tolerates a UTF-8 BOM, spaces
    around names and values, and empty rows or columns. Raises :class:`CUBFormatError` naming the file
    on a missing column, an empty image name, a non-numeric value or a radius that is not positive.
    """
    path = Path(path)
    if not path.is_file():
        raise CUBFormatError(f"{path}: bubbles CSV not found")
    table = pd.read_csv(path, encoding="utf-8-sig", dtype=str, skipinitialspace=True, skip_blank_lines=False)
    table.columns = [str(c).strip() for c in table.columns]
    table.index = pd.RangeIndex(2, len(table) + 2, name="line")
    table = table.dropna(how="all").dropna(axis=1, how="all")
    missing = [c for c in BUBBLE_COLUMNS if c not in table.columns]
    if missing:
        raise CUBFormatError(f"{path}: missing columns {missing} (found {list(table.columns)})")
    out = pd.DataFrame({c: table[c].fillna("").str.strip() for c in ("image", "worker")})
    out["image"] = out["image"].str.replace("\\", "/", regex=False)
    if (out["image"] == "").any():
        lines = out.index[out["image"] == ""].tolist()[:5]
        raise CUBFormatError(f"{path}: empty image name on lines {lines}")
    for column in ("x", "y", "radius"):
        values = pd.to_numeric(table[column].str.strip(), errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            lines = out.index[bad].tolist()[:5]
            found = table.loc[lines, column].tolist()
            raise CUBFormatError(f"{path}: non-numeric {column!r} on lines {lines}: {found}")
        out[column] = values.astype(float)
    bad = out["radius"] <= 0
    if bad.any():
        raise CUBFormatError(f"{path}: radius must be > 0; lines {out.index[bad].tolist()[:5]} have "
                             f"{out.loc[bad, 'radius'].tolist()[:5]}")
    return out


def check_bubbles(bubbles: pd.DataFrame, datasets: Sequence[CUB200], source: str | Path) -> list[Problem]:
    """Errors of the bubbles read from ``source`` (:func:`read_bubbles`) against the images of ``datasets``.

    One error per bubble whose image is in none of the datasets' lists, and one per bubble whose centre
    lies outside its original image (``0 <= x < W``, ``0 <= y < H``); each names the CSV, the bubble's
    line and the image.
    """
    source = Path(source)
    where = {rel: (ds, i) for ds in datasets for i, rel in enumerate(ds.metadata["id"])}
    known = bubbles["image"].isin(list(where))
    found = {line: f"image {rel!r} is in no split list" for line, rel in bubbles.loc[~known, "image"].items()}
    sizes = {rel: where[rel][0].original_size(where[rel][1]) for rel in bubbles.loc[known, "image"].unique()}
    inside = bubbles[known]
    height = inside["image"].map(lambda rel: sizes[rel][0])
    width = inside["image"].map(lambda rel: sizes[rel][1])
    outside = ~((inside["x"] >= 0) & (inside["x"] < width) & (inside["y"] >= 0) & (inside["y"] < height))
    for line, row in inside[outside].iterrows():
        h, w = sizes[row["image"]]
        centre = f"centre (x={row['x']:g}, y={row['y']:g})"
        found[line] = f"{centre} lies outside {row['image']} ({w} x {h} px, W x H)"
    return [Problem("error", source, f"line {line}: {message}") for line, message in sorted(found.items())]


def verify_cub(
    root: str | Path,
    bubbles: str | Path | None = None,
    *,
    deep: bool = False,
    manifest: dict[str, Any] | None = None,
) -> tuple[dict[str, int | float], list[Problem]]:
    """Check a local CUB-200-2010 copy (and a bubbles CSV) against ``data_manifests/cub200_2010.yaml``.

    Returns counts (images per split, classes, hidden list entries skipped, annotations present and
    missing; with ``bubbles``: the CSV's rows, images with bubbles, training and test images without, and
    bubbles per image min / mean / max) and every problem found: missing folders or lists, listed images
    without a file, images in no list, missing annotations (warnings), counts that differ from the release
    (warnings), and :func:`check_bubbles`'s errors. A bubble of an image in no list is such an error and
    counts only among the rows: images with bubbles and the per-image statistics are of listed images.
    Listed images without bubbles are one warning per split, for training and test alike: they have no
    bubble map, so the ABN study's ``bubbles`` source (a map for every test image and every selected
    training image) fails on them, while the data and its other map sources work. With ``deep``, every
    image and annotation is read and each ``seg`` compared with its image's size and each bbox with its
    bounds; without it, notes count the images and annotations not decoded.
    """
    manifest = manifest or load_manifest("cub200-2010")
    root = Path(root).expanduser()
    expected = manifest["expected_counts"]
    try:
        sets = [CUB200(root, split, cache=None) for split in SPLITS]
    except CUBFormatError as err:
        where, _, message = str(err).partition(": ")
        return {}, [Problem("error", Path(where), f"{message}: nothing else can be checked")]
    counts: dict[str, int | float] = {f"{ds.split}_images": len(ds) for ds in sets}
    counts["classes"] = len(sets[0].label_names)
    texts = [list_file(root, split).read_text("utf-8-sig") for split in SPLITS]
    lines = [line.strip() for text in texts for line in text.splitlines()]
    counts["hidden_list_entries_skipped"] = sum(map(is_hidden, lines))
    problems = [
        Problem("warning", list_file(root, ds.split),
                f"{len(ds)} images, the release has {expected[ds.split]}")
        for ds in sets
        if len(ds) != expected[ds.split]
    ]
    if counts["classes"] != expected["classes"]:
        classes_from = class_file(root) if class_file(root).is_file() else root / IMAGES_DIR
        problems.append(Problem("warning", classes_from, f"{counts['classes']} classes, the release has "
                                                         f"{expected['classes']}"))
    listed = {rel for ds in sets for rel in ds.metadata["id"]}
    on_disk = {p.relative_to(root / IMAGES_DIR).as_posix() for p in (root / IMAGES_DIR).glob("*/*.jpg")}
    problems += [Problem("warning", root / IMAGES_DIR / rel, "image is in no split list") for rel in
                 sorted(rel for rel in on_disk - listed if not is_hidden(rel))]
    images = present = 0
    for ds in sets:
        for i, rel in enumerate(ds.metadata["id"]):
            image, mat = ds.image_path(i), annotation_file(root, rel)
            if rel not in on_disk:
                problems.append(Problem("error", image, f"listed in {ds.split}.txt but not found"))
                continue
            images += 1
            present += mat.is_file()
            if not mat.is_file():
                problems.append(Problem("warning", mat, "annotation not found"))
            if deep:
                problems += _deep_check(ds, i, mat)
    counts["annotations_present"], counts["annotations_missing"] = present, len(listed) - present
    if bubbles is not None:
        try:
            table = read_bubbles(bubbles)
        except CUBFormatError as err:
            problems.append(Problem("error", Path(bubbles), str(err).removeprefix(f"{bubbles}: ")))
        else:
            problems += check_bubbles(table, sets, bubbles)
            counts.update(_bubble_counts(table, sets))
            for ds, name in zip(sets, ("training", "test"), strict=True):
                without = counts[f"{ds.split}_images_without_bubbles"]
                if without:
                    message = f"{without} {name} images have no bubbles"
                    problems.append(Problem("warning", Path(bubbles), message))
    if not deep:
        problems += not_decoded(root, images, "images") + not_decoded(root, present, "annotations")
    return counts, problems


def _bubble_counts(table: pd.DataFrame, sets: Sequence[CUB200]) -> dict[str, int | float]:
    """The bubble counts of :func:`verify_cub`: ``bubbles`` counts every row, the others listed images only
    (the per-image statistics only when some image has bubbles)."""
    listed = table["image"].isin([rel for ds in sets for rel in ds.metadata["id"]])
    per_image = table[listed].groupby("image").size()
    counts: dict[str, int | float] = {"bubbles": len(table), "images_with_bubbles": len(per_image)}
    for ds in sets:
        counts[f"{ds.split}_images_without_bubbles"] = int((~ds.metadata["id"].isin(per_image.index)).sum())
    if len(per_image):
        counts.update(
            bubbles_per_image_min=int(per_image.min()),
            bubbles_per_image_mean=round(float(per_image.mean()), 2),
            bubbles_per_image_max=int(per_image.max()),
        )
    return counts


def _deep_check(ds: CUB200, i: int, mat: Path) -> list[Problem]:
    """Decode image ``i`` and its annotation; compare ``seg``'s shape and the bbox with the image."""
    try:
        image = _open_rgb(ds.image_path(i))
        note = read_annotation(mat) if mat.is_file() else None
    except CUBFormatError as err:
        where, _, message = str(err).partition(": ")
        return [Problem("error", Path(where), message)]
    if note is None:
        return []
    problems = []
    if note.seg.shape != (image.height, image.width):
        problems.append(Problem("error", mat, f"seg is {note.seg.shape[0]}x{note.seg.shape[1]}, "
                                              f"its image {image.height}x{image.width}"))
    box = note.bbox
    if not (0 <= box.left <= box.right <= image.width and 0 <= box.top <= box.bottom <= image.height):
        size = f"{image.width} x {image.height}"
        problems.append(Problem("error", mat, f"bbox {tuple(box)} is not inside the {size} image"))
    return problems
