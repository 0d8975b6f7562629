"""Study cells: a study's runs split into elements of one scenario and one seed, trained without a notebook.

A notebook's seed pass trains every arm of every scenario of its study for one seed in one kernel (for the
benchmark, 108 runs in the quick profile). :func:`train_cells` instead sends one element per
``(scenario, seed)`` through :func:`attnlib.engine.launch.run_elements` (local processes or a Slurm array),
each element training that scenario's arms into the run store; the notebook's sweep then finds every run
stored and only renders (``attnlib train benchmark ...`` then ``attnlib sweep notebooks/06_...``).

A finished cell leaves ``<run store>/_cells/<study>/<profile>/<scenario>/seed<s>.done.json`` naming the
study's code fingerprint, its arms and options; a later call skips the cells marked done for the same code,
arms and options, and trains the others (their finished runs are loaded from the store, not retrained).

Under ``torchrun`` (``$WORLD_SIZE`` above 1) the cells run one after the other in every rank, each run
trained with DistributedDataParallel across the ranks (:mod:`attnlib.engine.distributed`); rank 0 writes
the markers.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnlib import UsageError
from attnlib.core.io import atomic_write_json
from attnlib.engine.launch import ClusterConfig, element_error, in_flight, run_elements

log = logging.getLogger(__name__)

CELLS_DIR = "_cells"


@dataclass(frozen=True)
class StudyCell:
    """One element: every chosen arm of ``study`` in ``scenario`` for ``seed``.

    ``study``: ``"module:Class"`` of a :class:`~attnlib.engine.study.Study`; ``options``: keyword options of
    its ``create`` (e.g. ``data_root``); ``arms``: None for the profile's arms; ``threads``: torch threads of
    the element (its numbers depend on it, as in a sweep).
    """

    study: str
    profile: str
    scenario: str
    seed: int
    arms: tuple[str, ...] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    results_folder: str | None = None
    device: str | None = None
    threads: int = 1

    @property
    def key(self) -> str:
        """The element's name in logs and in submitit's record."""
        return f"{_slug(self.scenario)}-seed{self.seed}"


@dataclass(frozen=True)
class CellOutcome:
    """A finished cell: how many arm runs it holds and its wall time."""

    cell: StudyCell
    runs: int
    wall_s: float


@dataclass
class CellsResult:
    """What :func:`train_cells` did: cells trained now, skipped (marked done), failed (key -> error),
    submitted without waiting, and still queued from an earlier submission (key -> Slurm job id)."""

    trained: list[CellOutcome] = field(default_factory=list)
    skipped: list[StudyCell] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    submitted: list[StudyCell] = field(default_factory=list)
    in_flight: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every cell is done (trained now or before)."""
        return not (self.failures or self.submitted or self.in_flight)


def study_class(path: str) -> type:
    """The class named by ``"module:Class"``; a UsageError when it does not exist."""
    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise UsageError(f"no study {path!r} ({err})") from err


def create_study(cell: StudyCell) -> Any:
    """The cell's study, created as a notebook creates it (profile, run store, device, options)."""
    return study_class(cell.study).create(cell.profile, cell.results_folder, cell.device, **dict(cell.options))


def run_cell(cell: StudyCell) -> CellOutcome:
    """Train (or load) the cell's runs with ``cell.threads`` torch threads; mark it done (rank 0)."""
    from attnlib.core.seeding import THREADS_ENV, apply_threads
    from attnlib.engine.distributed import is_main

    os.environ[THREADS_ENV] = str(cell.threads)
    apply_threads()
    start = time.perf_counter()
    study = create_study(cell)
    study.run([cell.seed], arms=cell.arms, scenarios=[cell.scenario])
    outcome = CellOutcome(cell, len(study.runs), round(time.perf_counter() - start, 3))
    if is_main():
        atomic_write_json(marker_path(study, cell), _marker(study, cell) | {"runs": outcome.runs,
                                                                           "wall_s": outcome.wall_s})
    return outcome


def cells_dir(study: Any, profile: str) -> Path:
    """The folder of a study's cell markers (and of submitit's files) in its run store, for one profile."""
    return Path(study.context.store.root) / CELLS_DIR / study.name / profile


def marker_path(study: Any, cell: StudyCell) -> Path:
    """Where the cell's done marker lives in the study's run store."""
    return cells_dir(study, cell.profile) / _slug(cell.scenario) / f"seed{cell.seed}.done.json"


def _marker(study: Any, cell: StudyCell) -> dict[str, Any]:
    from attnlib.engine.runstore import study_code

    return {"study": cell.study, "code": study_code(study.name), "arms": sorted(cell.arms or study.arms()),
            "options": {k: str(v) for k, v in sorted(cell.options.items())}, "threads": cell.threads}


def is_cell_done(study: Any, cell: StudyCell) -> bool:
    """The cell's marker exists and names the study's current code, the same arms, options and threads."""
    import json

    path = marker_path(study, cell)
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as err:
        log.warning("%s: unreadable cell marker (%s); not done", path, err)
        return False
    return all(found.get(k) == v for k, v in _marker(study, cell).items())


def train_cells(
    study: str,
    seeds: Sequence[int],
    *,
    profile: str,
    scenarios: Sequence[str] | None = None,
    arms: Sequence[str] | None = None,
    options: Mapping[str, Any] | None = None,
    results_folder: str | Path | None = None,
    device: str | None = None,
    threads: int = 1,
    jobs: int = 1,
    cluster: ClusterConfig | None = None,
    logs: Path | None = None,
) -> CellsResult:
    """Train ``study``'s cells (module docstring) for ``seeds``: every scenario (or ``scenarios``) x seed not
    marked done, through ``cluster`` (default: ``jobs`` local processes; submitit's files and logs in
    ``logs``, default ``<run store>/_cells/<study>/<profile>/submitit``). Unknown scenarios or arms are a
    UsageError before anything runs. A cell whose earlier Slurm element is still queued or running is not
    submitted again (``in_flight``); with ``cluster.wait`` False the cells are submitted and the call returns.
    """
    from attnlib.engine.distributed import world_size

    cluster = cluster or ClusterConfig()
    template = StudyCell(study, profile, "", 0, tuple(arms) if arms is not None else None, dict(options or {}),
                         None if results_folder is None else str(results_folder), device, threads)
    probe = create_study(template)
    where = list(scenarios) if scenarios is not None else probe.scenarios()
    unknown = sorted(set(where) - set(probe.scenarios())) + sorted(set(arms or ()) - set(probe.arms()))
    if unknown:
        raise UsageError(f"{probe.paper}: unknown scenario(s) or arm(s) {unknown}; this profile's scenarios "
                         f"{probe.scenarios()}, arms {probe.arms()}")
    result = CellsResult()
    pending = []
    for scenario in where:
        for seed in dict.fromkeys(int(s) for s in seeds):
            cell = StudyCell(**{**vars(template), "scenario": scenario, "seed": seed})
            (result.skipped if is_cell_done(probe, cell) else pending).append(cell)
    log.info("%s: %d cell(s) to train, %d done before", probe.name, len(pending), len(result.skipped))
    if world_size() > 1:  # under torchrun: every rank trains each cell's runs together
        for cell in pending:
            result.trained.append(run_cell(cell))
        return result
    logs = Path(logs) if logs is not None else cells_dir(probe, profile) / "submitit"
    if cluster.executor == "slurm" and pending:
        result.in_flight = in_flight(logs, [cell.key for cell in pending])
        pending = [cell for cell in pending if cell.key not in result.in_flight]
    if not cluster.wait or result.in_flight:
        list(run_elements(run_cell, pending, cluster=cluster, jobs=jobs, folder=logs, name=probe.name,
                          keys=[cell.key for cell in pending]))
        result.submitted = pending
        return result
    for index, value in run_elements(run_cell, pending, cluster=cluster, jobs=jobs, folder=logs, name=probe.name,
                                     keys=[cell.key for cell in pending]):
        if isinstance(value, BaseException):
            result.failures[pending[index].key] = element_error(value)
            log.error("%s %s failed: %s", probe.name, pending[index].key, result.failures[pending[index].key])
        else:
            result.trained.append(value)
    return result


def _slug(scenario: str) -> str:
    return scenario.replace("/", "__")


def train_command(args: Any) -> int:
    """``attnlib train``: train the cells (under torchrun, after joining the process group); print what was
    trained, skipped, submitted and failed (exit 1 when a cell failed)."""
    from attnlib.core.profiles import check_profile, profile_name
    from attnlib.engine.distributed import init_from_env, is_main
    from attnlib.engine.notebook_params import parse_parameters
    from attnlib.engine.sweep import cluster_from_args

    init_from_env()
    result = train_cells(
        args.studies[args.study], args.seeds, profile=check_profile(profile_name(args.profile)),
        scenarios=args.scenarios, arms=args.arms, options=parse_parameters(args.options),
        results_folder=args.results_folder, device=args.device, threads=args.threads, jobs=args.jobs,
        cluster=cluster_from_args(args),
    )
    if not is_main():
        return 0
    print(f"{args.study}: {len(result.trained)} cell(s) trained, {len(result.skipped)} done before, "
          f"{len(result.submitted)} submitted, {len(result.in_flight)} still queued, {len(result.failures)} failed")
    for key, error in sorted(result.failures.items()):
        print(f"{key} failed: {error}", file=sys.stderr)
    return 1 if result.failures else 0
