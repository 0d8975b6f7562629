"""On-disk cache of arrays computed from a file and a set of parameters (e.g. preprocessed DICOMs)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from attnlib.core.io import atomic_write_bytes
from attnlib.core.paths import cache_dir

log = logging.getLogger(__name__)

#: Bumped when the entry layout or the key recipe changes, so that old entries are never read.
CACHE_FORMAT_VERSION = 1


class ArrayCache:
    """Arrays computed from ``(file, params)``, stored as ``.npy`` files under ``root``.

    The key is the SHA-256 of the JSON of: the resolved source path, its size and ``st_mtime_ns``,
    ``params`` (``json.dumps(..., sort_keys=True)``) and :data:`CACHE_FORMAT_VERSION`; so rewriting the
    source file or changing a parameter gives a new entry. The entry lives at
    ``root/<key[:2]>/<key>.npy``. Entries are written through a temporary file and ``os.replace``,
    so readers (and several processes writing the same key) only ever see complete files; an entry
    that cannot be loaded is logged, recomputed and overwritten. ``hits``/``misses`` count this
    instance's lookups only (each DataLoader worker has its own copy).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir() / "arrays"
        self.hits = 0
        self.misses = 0

    def key(self, path: str | os.PathLike[str], params: Mapping[str, Any]) -> str:
        """Hex SHA-256 key of ``path`` (as it is on disk now) and JSON-serialisable ``params``."""
        source = Path(path).resolve()
        stat = source.stat()
        try:
            params_json = json.dumps(dict(params), sort_keys=True)
        except TypeError as exc:
            raise TypeError(f"cache params must be JSON-serialisable: {exc}") from exc
        payload = json.dumps(
            {
                "path": str(source),
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "params": params_json,
                "version": CACHE_FORMAT_VERSION,
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def entry_path(self, key: str) -> Path:
        """Where the entry for ``key`` is stored."""
        return self.root / key[:2] / f"{key}.npy"

    def get_or_compute(
        self, path: str | os.PathLike[str], params: Mapping[str, Any], fn: Callable[[], np.ndarray]
    ) -> np.ndarray:
        """The cached array for ``(path, params)``, or ``fn()`` (then stored) when absent or unreadable.

        A failure to store the result is logged (a warning the first time for this cache folder, then at
        debug level) and the result is returned anyway.
        """
        entry = self.entry_path(self.key(path, params))
        if entry.is_file():
            try:
                arr = np.load(entry, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                log.warning("cache entry %s for %s is unreadable (%s); recomputing", entry, path, exc)
            else:
                self.hits += 1
                return arr
        self.misses += 1
        arr = np.asarray(fn())
        buffer = io.BytesIO()
        np.save(buffer, arr, allow_pickle=False)
        try:
            atomic_write_bytes(entry, buffer.getvalue())
        except OSError as exc:
            if self.root in _UNWRITABLE:
                log.debug("could not store cache entry %s for %s: %s", entry, path, exc)
            else:
                _UNWRITABLE.add(self.root)
                log.warning(
                    "could not store cache entry %s for %s: %s; computing without storing (said once per "
                    "cache folder)", entry, path, exc,
                )
        return arr


#: Cache folders a store already failed in, in this process: the warning is given once per folder.
_UNWRITABLE: set[Path] = set()
