"""Run store: every finished (study, config, profile, data, code, seed) run exactly once, on disk.

Layout: ``<root>/<study>/<key>/seed<seed>/`` with ``spec.json``, ``history.csv``, ``metrics.json``,
``predictions_<name>.csv``, ``weights_<name>.pt``, ``timing.json`` and, written last, ``manifest.json`` (each file's
size and sha256). A run folder appears in one ``os.rename`` of a fully written temporary folder, and
every read checks every file against the manifest first: a damaged run (a file missing, truncated or
changed, or no manifest, as in folders of older code) is named in a warning and counts as unfinished;
``run`` moves it aside to ``seed<seed>.damaged-<UTC time>`` and trains again. Files not in the
manifest are never read. While a run trains it works in ``seed<seed>.work/`` (kept after a crash so
the trainer can resume, removed once the run is stored); ``seed<seed>.lock`` keeps two processes from
running the same spec at once and is deleted after use.
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
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import attnlib
from attnlib.core import paths
from attnlib.core.io import atomic_write_json, atomic_write_text, exclusive_lock
from attnlib.core.provenance import code_fingerprint, package_fingerprint
from attnlib.core.seeding import run_threads

log = logging.getLogger(__name__)

RunFn = Callable[[Path], Mapping[str, Any]]
_Checked = tuple[frozenset[str], dict[str, Any], dict[str, Any]]  # a run's file names, spec and metrics
MANIFEST = "manifest.json"
TIMING = "timing.json"
_SEED_DIR = re.compile(r"seed(\d+)")
_REQUIRED = ("spec.json", "history.csv", "metrics.json")


def study_code(study: str) -> str:
    """The code fingerprint of ``study``'s runs: of ``attnlib.papers.<study>`` and all it imports
    when that module exists, else of the whole ``attnlib`` package."""
    try:
        return code_fingerprint(f"attnlib.papers.{study}")
    except ModuleNotFoundError:
        return package_fingerprint()


@dataclass(frozen=True)
class RunSpec:
    """Identity of one run. ``config`` must be JSON-able (nested mappings and lists are fine).

    ``config`` is stored as its JSON form (tuples become lists, numpy scalars numbers), so later
    changes to the caller's dict do not change the spec. ``code`` defaults to ``study_code(study)``.
    """

    study: str
    config: Mapping[str, Any]
    seed: int
    profile: str
    data_fingerprint: str
    code: str | None = None

    def __post_init__(self) -> None:
        if not self.study or Path(self.study).name != self.study or self.study.startswith("."):
            raise ValueError(f"study must be a plain folder name, got {self.study!r}")
        try:
            config = json.loads(_canonical_json(self.config))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"run config of study {self.study!r} is not JSON-able: {exc}") from exc
        object.__setattr__(self, "config", config)
        if self.code is None:
            object.__setattr__(self, "code", study_code(self.study))

    @property
    def key(self) -> str:
        """12 hex digits of sha256 over canonical JSON of config, profile, data and code fingerprints."""
        identity = {
            "config": self.config,
            "profile": self.profile,
            "data_fingerprint": self.data_fingerprint,
            "code": self.code,
        }
        return hashlib.sha256(_canonical_json(identity).encode("utf-8")).hexdigest()[:12]

    def to_json(self) -> dict[str, Any]:
        """The spec as written to ``spec.json`` (with its key)."""
        return {
            "study": self.study,
            "key": self.key,
            "seed": self.seed,
            "profile": self.profile,
            "data_fingerprint": self.data_fingerprint,
            "code": self.code,
            "config": self.config,
        }


@dataclass(frozen=True)
class RunResult:
    """A stored run: its spec, folder, per-epoch history, metrics, predictions by name and the names
    of its files that were checked against the manifest."""

    spec: RunSpec
    path: Path
    history: pd.DataFrame
    metrics: dict[str, Any]
    predictions: dict[str, pd.DataFrame]
    files: frozenset[str]

    @property
    def timing(self) -> dict[str, Any]:
        """Where the run's time went (``timing.json``: ``seconds``, ``finished`` and the executor's phases);
        empty for runs stored without one."""
        return _read_json(self.path / TIMING) if TIMING in self.files else {}

    def state_dict(self, name: str = "best") -> dict[str, torch.Tensor]:
        """The stored weights ``name`` (``"best"``/``"last"``); FileNotFoundError if not kept."""
        file = f"weights_{name}.pt"
        if file not in self.files:
            raise FileNotFoundError(
                f"{self.path / file}: no stored weights {name!r} (run stored with keep_weights=False?)"
            )
        return torch.load(self.path / file, map_location="cpu", weights_only=True)


@dataclass(frozen=True)
class DamagedRun:
    """A run folder that fails its check: the first file found wrong and what is wrong with it."""

    study: str
    key: str
    seed: int
    path: Path
    file: str
    problem: str

    def __str__(self) -> str:
        return f"run {self.study}/{self.key}/seed{self.seed} is damaged: {self.file}: {self.problem}"


class RunStore:
    """Stores runs under ``root`` (default ``attnlib.core.paths.runs_dir()/"store"``)."""

    def __init__(self, root: Path | None = None, keep_weights: bool = True) -> None:
        self.root = Path(root) if root is not None else paths.runs_dir() / "store"
        self.keep_weights = keep_weights

    def path(self, spec: RunSpec) -> Path:
        """The final folder of ``spec``'s run."""
        return self.root / spec.study / spec.key / f"seed{spec.seed}"

    def run(self, spec: RunSpec, fn: RunFn) -> RunResult:
        """The stored result of ``spec``, computing it with ``fn(workdir)`` only when missing or damaged.

        ``fn`` returns ``history`` (DataFrame), ``metrics`` (JSON-able dict), ``predictions``
        (name -> DataFrame) and optionally ``states`` (name -> state_dict of tensors) and ``timing`` (seconds
        by phase, JSON-able; stored in ``timing.json`` with the whole call's ``seconds`` and the UTC time it
        ``finished``, informative, never part of the run's identity). ``workdir``
        survives a crash, so a trainer checkpoint in it lets the next call resume. A damaged run is
        moved aside (``seed<seed>.damaged-<UTC time>``) with a warning before it is computed again.
        """
        final = self.path(spec)
        found = self._find(spec)
        if isinstance(found, RunResult):
            log.info("run %s/%s/seed%d already stored; not recomputing", spec.study, spec.key, spec.seed)
            return found
        final.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(final.with_name(final.name + ".lock")):
            found = self._find(spec)  # another process may have stored it, or set it aside, meanwhile
            if isinstance(found, DamagedRun):
                stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
                aside = final.with_name(f"{final.name}.damaged-{stamp}")
                os.rename(final, aside)
                log.warning("%s; moved it aside to %s and computing it again", found, aside.name)
            if not isinstance(found, RunResult):
                for tmp in final.parent.glob(f".{final.name}.*.tmp"):
                    shutil.rmtree(tmp)  # left by a commit that was killed
                workdir = final.with_name(final.name + ".work")
                workdir.mkdir(exist_ok=True)
                start = time.perf_counter()
                output = dict(fn(workdir))
                output["timing"] = {**output.get("timing", {}), "seconds": round(time.perf_counter() - start, 3),
                                    "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                self._commit(spec, output, final)
                shutil.rmtree(workdir)
                found = self._find(spec)
        if isinstance(found, RunResult):
            return found
        raise RuntimeError(f"{final}: run missing or damaged right after it was stored ({found})")

    def load(self, spec: RunSpec) -> RunResult | None:
        """The stored result of ``spec``; None when the run has not finished or is damaged (with a warning)."""
        found = self._find(spec)
        if isinstance(found, DamagedRun):
            log.warning("%s; treating it as unfinished", found)
            return None
        return found

    def results(
        self, study: str, profile: str | None = None, keys: Collection[str] | None = None
    ) -> pd.DataFrame:
        """One row per stored run of ``study``: spec (with ``code``), ``config.*``, ``metrics.*``.

        ``profile`` and ``keys`` (``RunSpec.key`` values, e.g. of the runs just made) narrow the rows.
        Damaged runs (see ``damaged``) are left out, each with a warning. ``stale_code`` says whether
        the rows were made by the current code.
        """
        records = []
        for folder, checked in self._checked(study, keys):
            if isinstance(checked, _Damage):
                log.warning("%s; left out of the results", _damaged(folder, checked))
            elif profile is None or checked[1]["profile"] == profile:
                records.append({**checked[1], "metrics": checked[2]})
        columns = ["study", "key", "seed", "profile", "data_fingerprint", "code"]
        if not records:
            return pd.DataFrame(columns=columns)
        frame = pd.json_normalize(records, sep=".")
        return frame[columns + [c for c in frame.columns if c not in columns]]

    def damaged(self, study: str) -> list[DamagedRun]:
        """Every run folder of ``study`` that fails its check, i.e. that ``results`` leaves out."""
        return [_damaged(folder, c) for folder, c in self._checked(study) if isinstance(c, _Damage)]

    def _checked(
        self, study: str, keys: Collection[str] | None = None
    ) -> list[tuple[Path, _Checked | _Damage]]:
        """Every ``<key>/seed<N>`` folder of ``study`` (of ``keys`` only, if given), whatever it holds,
        with what ``_check`` makes of it; folders are checked in threads (hashlib releases the GIL)."""
        folders = sorted(
            f
            for f in (self.root / study).glob("*/seed*")
            if f.is_dir() and _SEED_DIR.fullmatch(f.name) and (keys is None or f.parent.name in keys)
        )
        with ThreadPoolExecutor() as pool:
            return list(zip(folders, pool.map(_check_or_damage, folders)))

    def _find(self, spec: RunSpec) -> RunResult | DamagedRun | None:
        """``spec``'s checked and parsed run, what is wrong with its folder, or None when there is none."""
        folder = self.path(spec)
        if not folder.exists():
            return None
        try:
            files, _, metrics = _check(folder)
            history = _parse(folder, "history.csv", pd.read_csv)
            predictions = {
                name[len("predictions_") : -len(".csv")]: _parse(folder, name, _read_predictions)
                for name in sorted(files)
                if name.startswith("predictions_") and name.endswith(".csv")
            }
        except _Damage as damage:
            return _damaged(folder, damage)
        return RunResult(spec, folder, history, metrics, predictions, files)

    def _commit(self, spec: RunSpec, output: Mapping[str, Any], final: Path) -> None:
        """Write ``output`` into a temporary sibling folder, then rename it to ``final`` in one step."""
        missing = {"history", "metrics", "predictions"} - output.keys()
        if missing:
            raise KeyError(f"run function of {final} returned no {sorted(missing)}")
        for name, state in output.get("states", {}).items():
            other = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
            if other:
                raise TypeError(
                    f"run function of {final} returned states[{name!r}] with non-tensor entries {other[:3]}: "
                    "a stored run keeps weights only (optimizer state stays in the work folder's checkpoint)"
                )
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
        if "timing" in output:
            atomic_write_json(folder / TIMING, _builtin(output["timing"]))
        files = {f.name: {"size": f.stat().st_size, "sha256": _sha256(f)} for f in sorted(folder.iterdir())}
        atomic_write_json(folder / MANIFEST, {"files": files})  # last: only a complete folder has one


def stale_code(frame: pd.DataFrame, study: str) -> list[str]:
    """One line per code fingerprint in a ``results`` frame that is not ``study_code(study)``: runs made
    by code that has changed since. Empty when every row is current."""
    current = study_code(study)
    counts = frame.loc[frame["code"] != current, "code"].value_counts()
    return [
        f"{n} run(s) of {study} were made by other code ({code}) than the current one ({current})"
        for code, n in sorted(counts.items())
    ]


class _Damage(Exception):
    """A run folder's ``file`` fails its check; ``problem`` says how."""

    def __init__(self, file: str, problem: str) -> None:
        super().__init__(file, problem)
        self.file, self.problem = file, problem


def _damaged(folder: Path, damage: _Damage) -> DamagedRun:
    """``damage`` of the run folder ``<study>/<key>/seed<seed>``."""
    study, key, seed = folder.parent.parent.name, folder.parent.name, int(folder.name.removeprefix("seed"))
    return DamagedRun(study, key, seed, folder, damage.file, damage.problem)


def _check_or_damage(folder: Path) -> _Checked | _Damage:
    try:
        return _check(folder)
    except _Damage as damage:
        return damage


def _check(folder: Path) -> _Checked:
    """The manifest's file names, the spec and the metrics of run folder ``folder``; _Damage when a file
    is missing, has another size or sha256 than in the manifest, does not parse or names another run."""
    files = _verify(folder)
    spec = _parse(folder, "spec.json", _read_json)
    folder_run = (folder.parent.parent.name, folder.parent.name, folder.name)
    if (spec["study"], spec["key"], f"seed{spec['seed']}") != folder_run:
        raise _Damage("spec.json", f"describes run {spec['study']}/{spec['key']}/seed{spec['seed']}")
    return files, spec, _parse(folder, "metrics.json", _read_json)


def _verify(folder: Path) -> frozenset[str]:
    """The files in ``folder``'s manifest, each checked for its size and then its sha256."""
    try:
        listed = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
        expected = {name: (int(entry["size"]), str(entry["sha256"])) for name, entry in listed.items()}
    except FileNotFoundError:
        raise _Damage(MANIFEST, "missing (a run folder of older code, or a damaged one)") from None
    except (OSError, ValueError, LookupError, TypeError, AttributeError) as exc:
        raise _Damage(MANIFEST, f"unreadable ({exc!r})") from exc
    for name in _REQUIRED:
        if name not in expected:
            raise _Damage(name, "not in the manifest")
    try:
        for name, (size, _) in expected.items():
            actual = (folder / name).stat().st_size
            if actual != size:
                raise _Damage(name, f"{actual} bytes, the manifest says {size} (truncated or overwritten)")
        for name, (_, digest) in expected.items():
            if _sha256(folder / name) != digest:
                raise _Damage(name, "content differs from the manifest (sha256 mismatch)")
    except FileNotFoundError:
        raise _Damage(name, "missing") from None
    except OSError as exc:
        raise _Damage(name, f"unreadable ({exc})") from exc
    return frozenset(expected)


def _parse(folder: Path, name: str, reader: Callable[[Path], Any]) -> Any:
    """``reader(folder / name)``; _Damage naming the file when it cannot be read or parsed."""
    try:
        return reader(folder / name)
    except (OSError, ValueError) as exc:  # JSON, CSV and UTF-8 errors are ValueErrors
        raise _Damage(name, f"unreadable ({exc})") from exc


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _read_predictions(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"id": str})


def _sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1-MiB blocks (``hashlib.file_digest`` needs Python 3.11)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _canonical_json(obj: Any) -> str:
    """Key-sorted, compact JSON of ``obj`` (numpy values as numbers); NaN/inf are refused."""
    return json.dumps(_builtin(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _environment() -> dict[str, Any]:
    """Versions and the torch thread count that produced a run (informative; not part of its key)."""
    return {
        "threads": run_threads(),
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
