"""Run store: every finished (study, config, profile, data, seed) run exactly once, on disk.

Layout: ``<root>/<study>/<key>/seed<seed>/`` with ``spec.json``, ``history.csv``, ``metrics.json``,
``predictions_<name>.csv`` and ``weights_<name>.pt``. A run folder appears in one ``os.rename`` of a
fully written temporary folder, so a folder that exists is complete. While a run trains it works in
``seed<seed>.work/`` (kept after a crash so the trainer can resume, removed once the run is
stored); ``seed<seed>.lock`` keeps two processes from running the same spec at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from filelock import FileLock

import attnlib
from attnlib import paths
from attnlib._io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

RunFn = Callable[[Path], Mapping[str, Any]]
_SEED_DIR = re.compile(r"seed(\d+)")


@dataclass(frozen=True)
class RunSpec:
    """Identity of one run. ``config`` must be JSON-able (nested mappings and lists are fine).

    ``config`` is stored as its JSON form (tuples become lists, numpy scalars numbers), so later
    changes to the caller's dict do not change the spec.
    """

    study: str
    config: Mapping[str, Any]
    seed: int
    profile: str
    data_fingerprint: str

    def __post_init__(self) -> None:
        if not self.study or Path(self.study).name != self.study or self.study.startswith("."):
            raise ValueError(f"study must be a plain folder name, got {self.study!r}")
        try:
            config = json.loads(_canonical_json(self.config))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"run config of study {self.study!r} is not JSON-able: {exc}") from exc
        object.__setattr__(self, "config", config)

    @property
    def key(self) -> str:
        """12 hex digits of sha256 over canonical JSON of config, profile and data fingerprint."""
        identity = {"config": self.config, "profile": self.profile, "data_fingerprint": self.data_fingerprint}
        return hashlib.sha256(_canonical_json(identity).encode("utf-8")).hexdigest()[:12]

    def to_json(self) -> dict[str, Any]:
        """The spec as written to ``spec.json`` (with its key)."""
        return {
            "study": self.study,
            "key": self.key,
            "seed": self.seed,
            "profile": self.profile,
            "data_fingerprint": self.data_fingerprint,
            "config": self.config,
        }


@dataclass(frozen=True)
class RunResult:
    """A stored run: its spec, folder, per-epoch history, metrics and predictions by name."""

    spec: RunSpec
    path: Path
    history: pd.DataFrame
    metrics: dict[str, Any]
    predictions: dict[str, pd.DataFrame]

    def state_dict(self, name: str = "best") -> dict[str, torch.Tensor]:
        """The stored weights ``name`` (``"best"``/``"last"``); FileNotFoundError if not kept."""
        path = self.path / f"weights_{name}.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no stored weights {name!r} (run stored with keep_weights=False?)"
            )
        return torch.load(path, map_location="cpu", weights_only=True)


class RunStore:
    """Stores runs under ``root`` (default ``attnlib.paths.runs_dir()/"store"``)."""

    def __init__(self, root: Path | None = None, keep_weights: bool = True) -> None:
        self.root = Path(root) if root is not None else paths.runs_dir() / "store"
        self.keep_weights = keep_weights

    def path(self, spec: RunSpec) -> Path:
        """The final folder of ``spec``'s run."""
        return self.root / spec.study / spec.key / f"seed{spec.seed}"

    def run(self, spec: RunSpec, fn: RunFn) -> RunResult:
        """The stored result of ``spec``, computing it with ``fn(workdir)`` only when missing.

        ``fn`` returns ``history`` (DataFrame), ``metrics`` (JSON-able dict), ``predictions``
        (name -> DataFrame) and optionally ``states`` (name -> state_dict). ``workdir`` survives a
        crash, so a trainer checkpoint in it lets the next call resume.
        """
        final = self.path(spec)
        stored = self.load(spec)
        if stored is not None:
            log.info("run %s/%s/seed%d already stored; not recomputing", spec.study, spec.key, spec.seed)
            return stored
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(final.with_name(final.name + ".lock")):
            if not final.is_dir():
                workdir = final.with_name(final.name + ".work")
                workdir.mkdir(exist_ok=True)
                self._commit(spec, fn(workdir), final)
                shutil.rmtree(workdir)
        result = self.load(spec)
        if result is None:
            raise RuntimeError(f"{final}: run folder missing right after it was stored")
        return result

    def load(self, spec: RunSpec) -> RunResult | None:
        """The stored result of ``spec``, or None when the run has not finished."""
        folder = self.path(spec)
        if not folder.is_dir():
            return None
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        predictions = {
            file.stem.removeprefix("predictions_"): pd.read_csv(file, dtype={"id": str})
            for file in sorted(folder.glob("predictions_*.csv"))
        }
        history = pd.read_csv(folder / "history.csv")
        return RunResult(spec=spec, path=folder, history=history, metrics=metrics, predictions=predictions)

    def results(
        self, study: str, profile: str | None = None, keys: Collection[str] | None = None
    ) -> pd.DataFrame:
        """One row per stored run of ``study``: spec, ``config.*``, ``metrics.*``.

        ``profile`` and ``keys`` (``RunSpec.key`` values, e.g. of the runs just made) narrow the rows.
        """
        records = []
        for spec_file in sorted((self.root / study).glob("*/seed*/spec.json")):
            if not _SEED_DIR.fullmatch(spec_file.parent.name):
                continue
            spec = json.loads(spec_file.read_text(encoding="utf-8"))
            if profile is not None and spec["profile"] != profile:
                continue
            if keys is not None and spec["key"] not in keys:
                continue
            metrics = json.loads((spec_file.parent / "metrics.json").read_text(encoding="utf-8"))
            records.append({**spec, "metrics": metrics})
        columns = ["study", "key", "seed", "profile", "data_fingerprint"]
        if not records:
            return pd.DataFrame(columns=columns)
        frame = pd.json_normalize(records, sep=".")
        return frame[columns + [c for c in frame.columns if c not in columns]]

    def _commit(self, spec: RunSpec, output: Mapping[str, Any], final: Path) -> None:
        """Write ``output`` into a temporary sibling folder, then rename it to ``final`` in one step."""
        missing = {"history", "metrics", "predictions"} - output.keys()
        if missing:
            raise KeyError(f"run function of {final} returned no {sorted(missing)}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        try:
            self._write(tmp, spec, output)
            os.rename(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not final.is_dir():
                raise
            log.info("%s was stored by another process first; keeping that one", final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _write(self, folder: Path, spec: RunSpec, output: Mapping[str, Any]) -> None:
        atomic_write_json(folder / "spec.json", {**spec.to_json(), "environment": _environment()})
        atomic_write_text(folder / "history.csv", output["history"].to_csv(index=False))
        for name, frame in output["predictions"].items():
            atomic_write_text(folder / f"predictions_{name}.csv", frame.to_csv(index=False))
        if self.keep_weights:
            for name, state in output.get("states", {}).items():
                torch.save(state, folder / f"weights_{name}.pt")
        atomic_write_json(folder / "metrics.json", _builtin(output["metrics"]))


def _canonical_json(obj: Any) -> str:
    """Key-sorted, compact JSON of ``obj`` (numpy values as numbers); NaN/inf are refused."""
    return json.dumps(_builtin(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _environment() -> dict[str, str]:
    """Versions that produced a run (informative; not part of its key)."""
    return {
        "python": platform.python_version(),
        "attnlib": attnlib.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }


def _builtin(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays, tuples and mappings turned into plain JSON types."""
    if isinstance(obj, Mapping):
        return {str(k): _builtin(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_builtin(v) for v in obj]
    if isinstance(obj, (np.generic, np.ndarray)):
        return _builtin(obj.tolist())
    return obj
