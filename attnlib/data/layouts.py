"""Which dataset a folder holds, told from its layout, so that a notebook needs only ``data_root``.

Each real layout is recognised by the files its loader opens first (``datasets.md`` lists them):
EGD-CXR by ``master_sheet.csv``, IDRiD by its ``A. Segmentation`` / ``B. Disease Grading`` folders,
CUB-200-2010 by ``lists/train.txt`` beside ``images/``, JAFFE by TIFFs named like ``KA.AN1.39.tiff``
(in the folder or its ``jaffe/`` sub-folder), ClickMe by ``.npz`` or TFRecord files; a folder written by
one of the synthetic generators by its ``synthetic_config.json``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from attnlib.data.real.clickme import is_tfrecord_name
from attnlib.data.real.idrid import GRADING_DIR
from attnlib.data.real.idrid_lesions import SEGMENTATION_DIR
from attnlib.data.real.images import is_hidden
from attnlib.data.real.jaffe import NAME_PATTERN, image_folder
from attnlib.data.synthetic.generated import CONFIG_FILE

log = logging.getLogger(__name__)

Layout = Literal["egd-cxr", "idrid", "cub", "jaffe", "clickme", "synthetic"]

def _is_egd_cxr(root: Path) -> bool:
    return (root / "master_sheet.csv").is_file() or (root / "egd-cxr" / "master_sheet.csv").is_file()


def _is_idrid(root: Path) -> bool:
    parts = any((root / name).is_dir() for name in (SEGMENTATION_DIR, GRADING_DIR))
    return parts or ((root / "1. Original Images").is_dir() and (root / "2. Groundtruths").is_dir())


def _is_cub(root: Path) -> bool:
    return (root / "lists" / "train.txt").is_file() and (root / "images").is_dir()


def _is_jaffe(root: Path) -> bool:
    folder = image_folder(root)
    return folder.is_dir() and any(re.match(NAME_PATTERN, p.name) for p in folder.iterdir())


def _is_clickme_file(name: str) -> bool:
    return name.endswith(".npz") or is_tfrecord_name(name)


def _is_clickme(root: Path) -> bool:
    if root.is_file():
        return _is_clickme_file(root.name)
    return any(
        _is_clickme_file(p.name) and not is_hidden(p.relative_to(root).as_posix()) for p in root.rglob("*")
    )


#: Checked in this order: cheap markers first, the recursive ClickMe search last.
_MARKERS = (
    ("egd-cxr", _is_egd_cxr, "master_sheet.csv"),
    ("idrid", _is_idrid, "'A. Segmentation' or 'B. Disease Grading'"),
    ("cub", _is_cub, "lists/train.txt and images/"),
    ("jaffe", _is_jaffe, "TIFFs named like KA.AN1.39.tiff (here or in jaffe/)"),
    ("synthetic", lambda root: (root / CONFIG_FILE).is_file(), CONFIG_FILE),
    ("clickme", _is_clickme, ".npz or TFRecord files"),
)


def detect_layout(root: str | Path) -> Layout:
    """The layout of the dataset folder ``root``; ``ValueError`` naming the folder and the markers looked for."""
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"{root}: data_root not found")
    for layout, matches, _ in _MARKERS:
        if matches(root):
            return layout  # type: ignore[return-value]
    looked = "; ".join(f"{layout}: {marker}" for layout, _, marker in _MARKERS)
    raise ValueError(f"{root}: no known dataset layout (looked for {looked}); set `dataset` explicitly")


def resolve_dataset(
    dataset: str | None, data_root: str | Path | None, by_layout: Mapping[str, str], study: str
) -> str:
    """The ``dataset`` a study runs: as given, else ``synthetic`` without ``data_root``, else the study's
    dataset for the layout of ``data_root`` (``by_layout``: layout -> dataset name; a layout the study
    cannot use raises ``ValueError`` naming ``dataset`` and its choices)."""
    if dataset is not None:
        return dataset
    if data_root is None:
        return "synthetic"
    layout = detect_layout(data_root)
    if layout not in by_layout:
        raise ValueError(
            f"{data_root}: holds {layout} data, which the {study} study does not use; "
            f"set `dataset` to one of {sorted(set(by_layout.values()))}"
        )
    log.info("%s: %s layout, dataset %r", data_root, layout, by_layout[layout])
    return by_layout[layout]
