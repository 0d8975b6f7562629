"""On-disk store of edited attention maps with their provenance.

Layout under ``root`` (format version 1)::

    <root>/<dataset>/<sample_id>.json                   record: provenance + which map file
    <root>/<dataset>/<sample_id>.<sha12>.npz            the edited map: array "map", float32, grid H x W

The record (JSON, key-sorted) holds ``format_version`` (1), ``dataset``, ``sample_id``,
``map_file`` (the npz name), ``map_sha256`` (sha256 of the map's float32 C-order bytes; ``sha12``
is its first 12 hex digits), ``grid_size`` [H, W] of the map (the original map's grid),
``image_size`` [H, W] the strokes refer to or null, ``source`` ("editor", "bubbles",
"segmentation" or "simulated"), ``strokes`` (``attnlib.data.maps.editing.Stroke.to_dict`` forms, in the
order applied), ``editor`` (name or null), ``created_utc`` (ISO 8601), ``model_key`` and
``checkpoint`` (the model/run and weights the map was edited against, or null).

A sample is stored when its record exists. ``save`` writes the map file first, then the record,
each atomically (temporary file + ``os.replace``), then deletes the sample's other map files. A
crash before the record is written therefore leaves the previous record and its own map intact (or
no record for a new sample); the unreferenced new map file is ignored and removed by the next save
of that sample. Saves of one sample hold ``.<sample_id>.lock`` (:func:`attnlib.core.io.exclusive_lock`, removed after
use), so two editors saving it at
once cannot leave a record whose map file the other one deleted; the last save wins. Sample ids and dataset names are plain file names: no path separators, no leading
dot, not ``..``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from attnlib.core.io import atomic_write_bytes, atomic_write_json, exclusive_lock
from attnlib.data.maps.editing import Stroke

FORMAT_VERSION = 1
SOURCES = ("editor", "bubbles", "segmentation", "simulated")


def _utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Provenance:
    """Where an edited map came from; see the module docstring for the stored fields."""

    source: str
    grid_size: tuple[int, int]
    image_size: tuple[int, int] | None = None
    strokes: Sequence[Stroke] = ()
    editor: str | None = None
    model_key: str | None = None
    checkpoint: str | None = None
    created_utc: str = field(default_factory=_utc_now)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"provenance source must be one of {SOURCES}, got {self.source!r}")
        object.__setattr__(self, "grid_size", _pair("grid_size", self.grid_size))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", _pair("image_size", self.image_size))
        strokes = tuple(self.strokes)
        if not all(isinstance(s, Stroke) for s in strokes):
            raise ValueError("provenance strokes must be attnlib.data.maps.editing.Stroke objects")
        if strokes and self.image_size is None:
            raise ValueError("provenance with strokes needs the image_size they were painted at")
        for stroke in strokes:
            stroke.check_inside(self.image_size)
        object.__setattr__(self, "strokes", strokes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (as stored in the record)."""
        return {
            "source": self.source,
            "grid_size": list(self.grid_size),
            "image_size": list(self.image_size) if self.image_size is not None else None,
            "strokes": [s.to_dict() for s in self.strokes],
            "editor": self.editor,
            "model_key": self.model_key,
            "checkpoint": self.checkpoint,
            "created_utc": self.created_utc,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Provenance:
        """The provenance of a ``to_dict`` result (extra record keys are ignored)."""
        return cls(
            source=data["source"],
            grid_size=tuple(data["grid_size"]),
            image_size=tuple(data["image_size"]) if data["image_size"] is not None else None,
            strokes=[Stroke.from_dict(s) for s in data["strokes"]],
            editor=data["editor"],
            model_key=data["model_key"],
            checkpoint=data["checkpoint"],
            created_utc=data["created_utc"],
        )


@dataclass(frozen=True)
class EditedMap:
    """A stored edited map (float32, grid H x W) and its provenance."""

    map: np.ndarray
    provenance: Provenance


class EditedMapStore:
    """Edited maps under ``root``, one folder per dataset (format in the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def save(self, dataset: str, sample_id: str, edited_map: np.ndarray, provenance: Provenance) -> Path:
        """Store ``edited_map`` for ``sample_id``, replacing any earlier one; returns the record path."""
        folder = self.root / _name("dataset", dataset)
        record_path = folder / f"{_name('sample id', sample_id)}.json"
        array = np.ascontiguousarray(edited_map, dtype=np.float32)
        if array.shape != provenance.grid_size:
            raise ValueError(
                f"edited map of {dataset}/{sample_id} has shape {array.shape}, "
                f"provenance grid_size is {provenance.grid_size}"
            )
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError(f"edited map of {dataset}/{sample_id} must be finite and within [0, 1]")
        digest = _digest(array)
        map_file = f"{sample_id}.{digest[:12]}.npz"
        buffer = io.BytesIO()
        np.savez(buffer, map=array)
        record = {
            "format_version": FORMAT_VERSION,
            "dataset": dataset,
            "sample_id": sample_id,
            "map_file": map_file,
            "map_sha256": digest,
            **provenance.to_dict(),
        }
        folder.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(folder / f".{sample_id}.lock"):
            atomic_write_bytes(folder / map_file, buffer.getvalue())
            atomic_write_json(record_path, record)
            for stale in _map_files(folder, sample_id):
                if stale.name != map_file:
                    stale.unlink(missing_ok=True)
        return record_path

    def load(self, dataset: str, sample_id: str) -> EditedMap:
        """The stored map of ``sample_id``; FileNotFoundError / ValueError naming the bad file."""
        folder = self.root / _name("dataset", dataset)
        record_path = folder / f"{_name('sample id', sample_id)}.json"
        if not record_path.is_file():
            raise FileNotFoundError(f"{record_path}: no edited map stored for {dataset}/{sample_id}")
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if record["format_version"] != FORMAT_VERSION:
                raise ValueError(f"format_version {record['format_version']!r}, expected {FORMAT_VERSION}")
            provenance = Provenance.from_dict(record)
            map_path = folder / _name("map file", record["map_file"])
            digest = record["map_sha256"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{record_path}: corrupt edited-map record: {exc}") from exc
        if not map_path.is_file():
            raise FileNotFoundError(f"{map_path}: map file named by {record_path} is missing")
        try:
            with np.load(map_path, allow_pickle=False) as npz:
                array = npz["map"]
        except (ValueError, KeyError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"{map_path}: corrupt edited-map file: {exc}") from exc
        if array.dtype != np.float32 or array.shape != provenance.grid_size or _digest(array) != digest:
            raise ValueError(
                f"{map_path}: map does not match its record {record_path} (dtype, shape or sha256)"
            )
        return EditedMap(map=array, provenance=provenance)

    def ids(self, dataset: str) -> list[str]:
        """Sorted sample ids with a stored map in ``dataset`` (empty when the dataset has none)."""
        folder = self.root / _name("dataset", dataset)
        return sorted(p.stem for p in folder.glob("*.json") if not p.name.startswith("."))

    def load_all(self, dataset: str) -> dict[str, EditedMap]:
        """Every stored map of ``dataset`` by sample id."""
        return {sample_id: self.load(dataset, sample_id) for sample_id in self.ids(dataset)}


def _map_files(folder: Path, sample_id: str) -> list[Path]:
    """The map files of ``sample_id`` in ``folder`` (current and stale)."""
    pattern = re.compile(re.escape(sample_id) + r"\.[0-9a-f]{12}\.npz")
    return [p for p in folder.glob("*.npz") if pattern.fullmatch(p.name)]


def _digest(array: np.ndarray) -> str:
    """sha256 hex of ``array``'s float32 C-order bytes."""
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def _name(kind: str, name: str) -> str:
    """``name`` if it is a plain file name; ValueError otherwise."""
    if (
        not isinstance(name, str)
        or not name
        or name.startswith(".")
        or any(ch in name for ch in ("/", "\\", "\0"))
        or Path(name).name != name
    ):
        raise ValueError(f"{kind} must be a plain file name (no separators, no leading dot), got {name!r}")
    return name


def _pair(name: str, size: Sequence[int]) -> tuple[int, int]:
    """``size`` as (H, W) positive ints; ValueError otherwise."""
    values = tuple(size)
    if len(values) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in values
    ):
        raise ValueError(f"provenance {name} must be two positive ints, got {size!r}")
    return int(values[0]), int(values[1])


def map_identity(edited: np.ndarray | EditedMap) -> bytes:
    """What identifies a map in a run's data fingerprint.

    A ``simulated`` map made against a stored network (``model_key`` set) is identified by its provenance
    (network, checkpoint, simulator and grid, not the creation time): its values come from that network's
    forward pass, whose last float bits depend on the thread count, and a run's identity must not. Any
    other map (painted, bubbles, lesions, or given as an array) is identified by its float32 values.
    """
    if isinstance(edited, EditedMap) and edited.provenance.source == "simulated" and edited.provenance.model_key:
        made_by = {k: v for k, v in edited.provenance.to_dict().items() if k not in ("created_utc", "strokes")}
        return json.dumps(made_by, sort_keys=True).encode()
    values = edited.map if isinstance(edited, EditedMap) else edited
    return np.ascontiguousarray(values, dtype=np.float32).tobytes()


class EditedMapDataset(Dataset):
    """The items of ``base`` whose id has a map in ``maps``, each with ``edited_map`` (1 x h x w float32).

    ``maps`` maps sample ids to grid arrays or :class:`EditedMap` (e.g. ``EditedMapStore.load_all``);
    ``ids`` fixes the items and their order (default: ``base``'s order). An id without a map, or absent
    from ``base``, raises ``KeyError`` naming it. ``fingerprint`` covers the base, the ids and the maps: a
    map simulated against a stored network (:func:`map_identity`) by what made it, any other by its values.
    """

    def __init__(
        self, base: Any, maps: Mapping[str, np.ndarray | EditedMap], ids: Sequence[str] | None = None
    ) -> None:
        self.base = base
        self.label_names = base.label_names
        base_ids = base.ids if hasattr(base, "ids") else [base[i]["id"] for i in range(len(base))]
        position = {str(sample_id): i for i, sample_id in enumerate(base_ids)}
        chosen = [str(i) for i in ids] if ids is not None else [i for i in position if i in maps]
        unknown = [i for i in chosen if i not in position]
        unmapped = [i for i in chosen if i not in maps]
        if unknown or unmapped:
            raise KeyError(
                f"ids not in the dataset: {unknown[:5]}; ids without an edited map: {unmapped[:5]}"
            )
        self.ids = chosen
        self._index = [position[i] for i in chosen]
        arrays = [
            m.map if isinstance(m, EditedMap) else np.asarray(m, dtype=np.float32)
            for m in (maps[i] for i in chosen)
        ]
        self._maps = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None] for a in arrays]
        digest = hashlib.sha256(f"{base.fingerprint}:{','.join(chosen)}".encode())
        for sample_id in chosen:
            digest.update(map_identity(maps[sample_id]))
        self.fingerprint = digest.hexdigest()[:12]

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.base[self._index[i]])
        item["edited_map"] = self._maps[i]
        return item
