"""JAFFE: the Japanese Female Facial Expression database, read from its distribution layout.

Lyons, Akamatsu, Kamachi, Gyoba, "Coding facial expressions with Gabor wavelets", Proc. 3rd IEEE
International Conference on Automatic Face and Gesture Recognition (FG 1998), 200-205. The distribution
(Lyons, Kamachi, Gyoba) is on Zenodo, DOI 10.5281/zenodo.3451524: free for non-commercial research under
its terms of use (see the distribution's terms). Never commit the images.

Expected layout (``data_manifests/jaffe.yaml``): one folder holding the 213 grayscale 256x256 TIFFs,
named ``<SUBJ>.<POSE><n>.<idx>.tiff`` (e.g. ``KA.AN1.39.tiff``), and the README text file whose
semantic-ratings table (header ``# HAP SAD SUR ANG DIS FEA PIC``, mean ratings 1-5 of 60 raters per
image) gives the labels. Re-distributions often unpack the README beside a ``jaffe/`` folder of TIFFs:
either folder may be given (:func:`image_folder`, :func:`find_ratings_readme`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image

from attnlib.data.cache import ArrayCache
from attnlib.data.contract import LabelledDataset
from attnlib.data.real.manifest import Problem, load_manifest, not_decoded

log = logging.getLogger(__name__)

#: The six rated emotions, in the ratings table's column order (the label order).
RATING_COLUMNS = ("HAP", "SAD", "SUR", "ANG", "DIS", "FEA")
#: Class names attnlib reports, one per entry of :data:`RATING_COLUMNS`.
LABEL_NAMES = ("happiness", "sadness", "surprise", "anger", "disgust", "fear")
#: The header line of the first ratings table, split into tokens.
RATINGS_HEADER = ("#", *RATING_COLUMNS, "PIC")
SUBJECTS = ("KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM")
#: Posed expressions: anger, disgust, fear, happiness, neutral, sadness, surprise.
POSES = ("AN", "DI", "FE", "HA", "NE", "SA", "SU")
#: Image file names: ``<SUBJ>.<POSE><n>.<idx>.tiff``.
NAME_PATTERN = r"^(?P<subject>[A-Z]{2})\.(?P<pose>[A-Z]{2})(?P<n>\d+)\.(?P<index>\d+)\.tiff?$"
_KEY = re.compile(r"^[A-Z]{2}-[A-Z]{2}\d+$")
_TIFF_SUFFIXES = (".tif", ".tiff")
#: The image folder of re-distributions that unpack the README beside it.
IMAGE_SUBFOLDER = "jaffe"


class JAFFEFormatError(ValueError):
    """A file of the JAFFE layout is missing or does not have the expected content."""


def _is_header(line: str) -> bool:
    text = line.strip()
    return text.startswith("#") and text[1:].split() == list(RATINGS_HEADER[1:])


def _tiffs(folder: Path) -> list[Path]:
    """The TIFF files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _TIFF_SUFFIXES)


def image_folder(root: str | Path) -> Path:
    """The folder of the TIFFs: ``root`` when it holds a TIFF, else its ``jaffe/`` subfolder when there is
    one (:data:`IMAGE_SUBFOLDER`), else ``root``."""
    root = Path(root).expanduser()
    sub = root / IMAGE_SUBFOLDER
    if not root.is_dir() or _tiffs(root) or not sub.is_dir():
        return root
    return sub


def find_ratings_readme(folder: str | Path) -> Path:
    """The first ``README*`` file (by name) that holds the ratings header, in ``folder`` (the TIFFs') and
    then in its parent.

    Raises :class:`JAFFEFormatError` naming ``folder`` and the files looked at when none does.
    """
    folder = Path(folder).expanduser().absolute()
    candidates = [
        path
        for where in dict.fromkeys((folder, folder.parent))
        for path in sorted(where.glob("[Rr][Ee][Aa][Dd][Mm][Ee]*"))
        if path.is_file()
    ]
    for path in candidates:
        if any(_is_header(line) for line in path.read_text(encoding="utf-8", errors="replace").splitlines()):
            return path
    raise JAFFEFormatError(
        f"{folder}: no README* file here or in the parent folder holds the ratings header "
        f"{' '.join(RATINGS_HEADER)!r} (looked at {[str(p.relative_to(folder.parent)) for p in candidates]})"
    )


def read_ratings(readme_path: str | Path) -> pd.DataFrame:
    """The first semantic-ratings table of the JAFFE README: columns ``row``, HAP..FEA, ``PIC``.

    Text before the header ``# HAP SAD SUR ANG DIS FEA PIC`` and blank lines are skipped. The table
    ends at the first non-blank line that does not start with a digit (the "Fear Excluded" table's
    title or header, or trailing text), so the second table is never read. A row starting with a
    digit must be ``<row> <six ratings in [1, 5]> <SUBJ>-<POSE><n>`` with a key not seen before;
    otherwise :class:`JAFFEFormatError` names the file and the line number.
    """
    path = Path(readme_path)
    if not path.is_file():
        raise JAFFEFormatError(f"{path}: ratings README not found")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    start = next((i for i, line in enumerate(lines) if _is_header(line)), None)
    if start is None:
        raise JAFFEFormatError(f"{path}: no ratings header {' '.join(RATINGS_HEADER)!r}")
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines[start + 1 :], start=start + 2):
        text = line.strip()
        if not text:
            continue
        if not text[0].isdigit():
            break
        tokens = text.split()
        where = f"{path}: line {lineno}"
        if len(tokens) != len(RATINGS_HEADER):
            raise JAFFEFormatError(f"{where}: expected {len(RATINGS_HEADER)} fields, got {len(tokens)}")
        try:
            row = int(tokens[0])
            values = [float(t) for t in tokens[1:-1]]
        except ValueError as err:
            raise JAFFEFormatError(f"{where}: not a ratings row ({err})") from err
        key = tokens[-1]
        if not _KEY.match(key):
            raise JAFFEFormatError(f"{where}: {key!r} is not a key like 'KM-NE1'")
        if not all(1.0 <= v <= 5.0 for v in values):
            raise JAFFEFormatError(f"{where}: ratings {values} outside [1, 5]")
        if key in seen:
            raise JAFFEFormatError(f"{where}: {key} repeats the row on line {seen[key]}")
        seen[key] = lineno
        rows.append({"row": row, **dict(zip(RATING_COLUMNS, values, strict=True)), "PIC": key})
    if not rows:
        raise JAFFEFormatError(f"{path}: the ratings table below line {start + 1} has no rows")
    return pd.DataFrame(rows, columns=["row", *RATING_COLUMNS, "PIC"])


def scan_images(root: str | Path, pattern: str = NAME_PATTERN) -> tuple[pd.DataFrame, list[Path]]:
    """The TIFFs directly in ``root``, parsed by name; and the TIFFs whose names do not match ``pattern``.

    Columns: ``id`` (the name without suffix), ``file``, ``subject``, ``pose``, ``n``, ``index`` and
    ``key`` (``<SUBJ>-<POSE><n>``, the ratings' PIC), sorted by file name. Other files are not looked at.
    """
    regex = re.compile(pattern)
    root = Path(root)
    if not root.is_dir():
        raise JAFFEFormatError(f"{root}: JAFFE folder not found")
    rows, unmatched = [], []
    for path in _tiffs(root):
        match = regex.match(path.name)
        if match is None:
            unmatched.append(path)
            continue
        parts = match.groupdict()
        rows.append(
            {
                "id": path.name.rsplit(".", 1)[0],
                "file": path.name,
                "subject": parts["subject"],
                "pose": parts["pose"],
                "n": int(parts["n"]),
                "index": int(parts["index"]),
                "key": f"{parts['subject']}-{parts['pose']}{parts['n']}",
            }
        )
    return pd.DataFrame(rows, columns=["id", "file", "subject", "pose", "n", "index", "key"]), unmatched


def read_tiff(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A grayscale TIFF as float32 H x W in [0, 1] (8-bit / 255, 16-bit / 65535), optionally resized.

    ``size`` = (H, W), bilinear. Colour or palette files are converted to grayscale. Raises
    :class:`JAFFEFormatError` naming the file when it is missing, unreadable or of another pixel type.
    """
    path = Path(path)
    if not path.is_file():
        raise JAFFEFormatError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I;16"):
                img = np.asarray(im).astype(np.float32) / 65535.0
            elif im.mode in ("L", "1", "P", "LA", "RGB", "RGBA"):
                img = np.asarray(im.convert("L")).astype(np.float32) / 255.0
            else:
                raise JAFFEFormatError(f"{path}: unsupported TIFF pixel mode {im.mode!r}")
    except (OSError, SyntaxError) as err:
        raise JAFFEFormatError(f"{path}: unreadable TIFF ({err})") from err
    if size is not None and img.shape != tuple(size):
        img = np.array(Image.fromarray(img, mode="F").resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return img


@dataclass(frozen=True)
class JAFFESettings:
    """How images are prepared; part of the cache key and the data fingerprint.

    ``image_size`` = (H, W) resizes (bilinear; None keeps 256 x 256). ``channels=3`` replicates the
    gray channel for ImageNet backbones.
    """

    image_size: tuple[int, int] | None = None
    channels: Literal[1, 3] = 1

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels!r}")
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise ValueError(f"image_size must be (H, W) with positive sides, got {self.image_size!r}")


@dataclass(eq=False)
class JAFFE(LabelledDataset):
    """JAFFE faces labelled by their semantic ratings, in attnlib's dataset contract.

    Lyons et al., "Coding facial expressions with Gabor wavelets", FG 1998; get the data from Zenodo
    (DOI 10.5281/zenodo.3451524) under the distribution's terms. ``root`` is the folder of the TIFFs or
    its parent holding them in ``jaffe/`` (:func:`image_folder`; :attr:`root` becomes the TIFFs' folder);
    with ``readme`` None the README is found in that folder or its parent (:func:`find_ratings_readme`).
    Each image joins the first ratings table by ``<SUBJ>-<POSE><n>``; the label is the emotion with the
    largest mean rating (index into :data:`LABEL_NAMES`, which follows the header order HAP SAD SUR ANG
    DIS FEA; a tie goes to the first in that order). The posed expression is kept apart in
    ``metadata["pose"]`` (it may differ from the label, and NE has no rating column). TIFFs without
    ratings are skipped and TIFFs named otherwise ignored, both counted in one log line. Items:
    ``idx, id`` (e.g. ``KA.AN1.39``), ``img`` (C x H x W float32 in [0, 1]), ``lab``.
    """

    root: Path
    settings: JAFFESettings = field(default_factory=JAFFESettings)
    readme: Path | None = None
    cache: ArrayCache | None = field(default_factory=ArrayCache)
    label_names: list[str] = field(default_factory=lambda: list(LABEL_NAMES))

    def __post_init__(self) -> None:
        self.root = image_folder(self.root)
        self.readme = Path(self.readme) if self.readme is not None else find_ratings_readme(self.root)
        ratings = read_ratings(self.readme)
        images, unmatched = scan_images(self.root)
        rated = images["key"].isin(ratings["PIC"])
        skipped = images.loc[~rated, "file"].tolist()
        meta = images[rated].merge(ratings, left_on="key", right_on="PIC").drop(columns="PIC")
        meta["label"] = meta[list(RATING_COLUMNS)].to_numpy().argmax(axis=1)
        self.metadata = meta.sort_values("file").reset_index(drop=True)
        self.labels = self.metadata["label"].to_numpy(dtype=np.int64)
        log.info(
            "%s: %d TIFFs named <SUBJ>.<POSE><n>.<idx>.tiff; skipped %d without ratings in %s %s; "
            "ignored %d TIFFs named otherwise %s; kept %d images",
            self.root, len(images), len(skipped), self.readme.name, skipped[:3],
            len(unmatched), [p.name for p in unmatched[:3]], len(self.metadata),
        )
        if self.metadata.empty:
            raise JAFFEFormatError(f"{self.root}: no TIFF matches a row of the ratings in {self.readme}")


    def image_path(self, i: int) -> Path:
        return self.root / self.metadata.at[i, "file"]

    def image(self, i: int) -> np.ndarray:
        """The preprocessed image (H x W, float32 in [0, 1]), from the cache after the first read."""
        path, size = self.image_path(i), self.settings.image_size
        if self.cache is None:
            return read_tiff(path, size)
        params = {"jaffe_tiff": list(size) if size else None}
        return self.cache.get_or_compute(path, params, lambda: read_tiff(path, size))

    def __getitem__(self, i: int) -> dict[str, object]:
        img = torch.from_numpy(self.image(i))[None]
        return {
            "idx": i,
            "id": self.metadata.at[i, "id"],
            "img": img.expand(self.settings.channels, -1, -1).contiguous(),
            "lab": int(self.labels[i]),
        }

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the data a model sees: the kept images and labels, the settings and the README."""
        digest = hashlib.sha256()
        digest.update(self.metadata[["id", "label"]].to_csv(index=False).encode())
        digest.update(json.dumps(asdict(self.settings), sort_keys=True, default=list).encode())
        digest.update(self.readme.read_bytes())
        return digest.hexdigest()[:12]


def verify_jaffe(
    root: str | Path,
    *,
    deep: bool = False,
    readme: str | Path | None = None,
    manifest: dict[str, Any] | None = None,
) -> list[Problem]:
    """Check a local JAFFE copy against ``data_manifests/jaffe.yaml``; every problem found (empty = clean).

    ``root`` and ``readme`` as for :class:`JAFFE`. Checks the image count (none is an error), file names,
    subject and pose codes, that the README holds a ratings table that parses, and that every image has
    ratings. With ``deep``, every image is decoded and its size compared with the manifest's; without it
    a note counts the images not decoded.
    """
    manifest = manifest or load_manifest("jaffe")
    spec = manifest["files"]["images"]
    root = Path(root).expanduser()
    if not root.is_dir():
        return [Problem("error", root, "JAFFE folder not found: nothing else can be checked")]
    folder = image_folder(root)
    images, unmatched = scan_images(folder, spec["name_pattern"])
    ignored = "name is not <SUBJ>.<POSE><n>.<idx>.tiff; the loader ignores it"
    problems = [Problem("warning", p, ignored) for p in unmatched]
    expected = manifest["expected_counts"]["images"]
    if images.empty:
        message = (f"no images named <SUBJ>.<POSE><n>.<idx>.tiff (the release has {expected}); give the "
                   f"folder of the TIFFs or its parent holding them in {IMAGE_SUBFOLDER}/")
        problems.append(Problem("error", folder, message))
    elif len(images) != expected:
        problems.append(Problem("warning", folder, f"{len(images)} images, the release has {expected}"))
    for row in images.itertuples():
        if row.subject not in spec["subjects"]:
            problems.append(Problem("error", folder / row.file, f"unknown subject {row.subject!r}"))
        if row.pose not in spec["poses"]:
            problems.append(Problem("error", folder / row.file, f"unknown pose {row.pose!r}"))
    try:
        ratings = read_ratings(Path(readme) if readme is not None else find_ratings_readme(folder))
    except JAFFEFormatError as err:
        path, _, message = str(err).partition(": ")
        problems.append(Problem("error", Path(path), message))
    else:
        for row in images[~images["key"].isin(ratings["PIC"])].itertuples():
            problems.append(Problem("error", folder / row.file, f"no ratings row for {row.key}"))
    if not deep:
        return problems + not_decoded(folder, len(images), "images")
    height, width = spec["size"]
    for name in images["file"]:
        try:
            img = read_tiff(folder / name)
        except JAFFEFormatError as err:
            problems.append(Problem("error", folder / name, str(err).removeprefix(f"{folder / name}: ")))
            continue
        if img.shape != (height, width):
            found = f"{img.shape[0]}x{img.shape[1]}"
            problems.append(Problem("error", folder / name, f"image is {found}, expected {height}x{width}"))
    return problems
