"""Dataset manifests (``data_manifests/*.yaml``) and the findings of checking a local copy against one
(each dataset's verifier lives beside its loader; EGD-CXR's in :mod:`attnlib.data.real.egd_cxr_verify`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

log = logging.getLogger(__name__)

#: The repository's manifest folder (attnlib is used from a checkout, installed editable).
MANIFEST_DIR = Path(__file__).resolve().parents[3] / "data_manifests"


@dataclass(frozen=True)
class Problem:
    """One finding of a verification: how bad, which file, what is wrong.

    ``note`` says what a check did not cover (e.g. files not decoded without ``--deep``); only errors fail.
    """

    severity: Literal["error", "warning", "note"]
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.severity.upper():7s} {self.path}: {self.message}"


def not_decoded(root: Path, n_files: int, what: str) -> list[Problem]:
    """The note a quick (not ``--deep``) verification ends with: ``n_files`` ``what`` were not decoded."""
    if not n_files:
        return []
    return [Problem("note", root, f"{n_files} {what} not decoded; run with --deep to check them")]


def load_manifest(name: str, folder: Path = MANIFEST_DIR) -> dict[str, Any]:
    """The manifest ``<folder>/<name>.yaml`` (``-`` and ``_`` are interchangeable in ``name``)."""
    path = folder / f"{name.replace('-', '_')}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise FileNotFoundError(f"{path}: no manifest named {name!r} (known: {known})")
    return yaml.safe_load(path.read_text(encoding="utf-8"))
