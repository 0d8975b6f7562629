"""Where a sweep's elements run: local processes (the default) or a cluster through submitit.

An *element* is one picklable call ``fn(item)``: one notebook execution for one seed (:mod:`attnlib.engine.sweep`)
or one study cell, a scenario for one seed (:mod:`attnlib.engine.cells`). :func:`run_elements` runs a list of
them and yields ``(index, value or the exception)`` as each finishes:

- ``executor="local"``: ``jobs`` processes of this machine (one element at a time in this process when
  ``jobs`` is 1);
- ``executor="slurm"``: one Slurm job array through submitit (one array element per item), partition, time,
  GPUs, CPUs and memory from :class:`ClusterConfig`; submitit's files and each element's stdout/stderr go to
  ``folder`` (the sweeps put it next to the executed notebooks);
- ``executor="submitit-local"``: the same submitit path with submitit's local executor, every element a
  process of this machine at once: how the cluster path is tested without Slurm.

submitit pickles ``fn`` and each item into ``folder`` and unpickles them on the compute node, which must
see the same files (repository, virtual environment, run store): the run store and the output folders
must be on a shared file system.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import logging.handlers
import multiprocessing
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from attnlib import UsageError
from attnlib.core.io import atomic_write_json

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
ExecutorName = Literal["local", "slurm", "submitit-local"]
EXECUTORS: tuple[str, ...] = ExecutorName.__args__
#: the record of submitted elements (key -> job id) in a submitit folder
SUBMITTED = "submitted.json"
#: Slurm job states of an element that is queued or running
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING"})
#: a traceback's last line: ``SomeError: message``
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)(: |$)")
#: submitit's name of each cluster executor
_SUBMITIT_CLUSTER = {"slurm": "slurm", "submitit-local": "local"}


@dataclass(frozen=True)
class ClusterConfig:
    """How elements are sent to a cluster (ignored by the local executor but for ``executor``).

    ``time_min``: each element's wall-clock limit; ``gpus``, ``cpus`` and ``mem_gb``: per element (one task);
    ``array_parallelism``: elements of one array running at once; ``slurm``: further ``#SBATCH`` options
    (e.g. ``{"account": "lab", "qos": "normal", "constraint": "a100"}``); ``setup``: shell lines run before
    each element (e.g. ``module load cuda``, ``source .venv/bin/activate``); ``wait``: stay until every
    element has finished (else submit and return; run the same command again later to collect).
    """

    executor: ExecutorName = "local"
    partition: str | None = None
    time_min: int = 240
    gpus: int = 0
    cpus: int = 1
    mem_gb: float | None = None
    array_parallelism: int = 64
    slurm: Mapping[str, str] = field(default_factory=dict)
    setup: Sequence[str] = ()
    wait: bool = True
    poll_s: float = 5.0

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise UsageError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        for name in ("time_min", "cpus", "array_parallelism"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"cluster option {name} must be at least 1, got {getattr(self, name)}")
        if not self.wait and self.executor == "local":
            raise UsageError("not waiting (--no-wait) needs a cluster executor (slurm or submitit-local)")
        if self.gpus < 0 or (self.mem_gb is not None and self.mem_gb <= 0) or self.poll_s <= 0:
            raise UsageError(f"cluster options gpus >= 0, mem_gb > 0 and poll_s > 0, got {self.gpus}, "
                             f"{self.mem_gb}, {self.poll_s}")

    @property
    def submitit(self) -> bool:
        """Elements go through submitit (slurm or its local executor)."""
        return self.executor != "local"

    def submitit_parameters(self, name: str) -> dict[str, Any]:
        """The parameters of ``submitit.AutoExecutor.update_parameters`` (``slurm_*`` ones are ignored by
        submitit's local executor)."""
        params: dict[str, Any] = {
            "name": name, "timeout_min": int(self.time_min), "gpus_per_node": int(self.gpus),
            "cpus_per_task": int(self.cpus), "tasks_per_node": 1, "nodes": 1,
            "slurm_array_parallelism": int(self.array_parallelism),
        }
        if self.mem_gb is not None:
            params["mem_gb"] = float(self.mem_gb)
        if self.executor == "slurm":
            if self.partition:
                params["slurm_partition"] = self.partition
            if self.slurm:
                params["slurm_additional_parameters"] = dict(self.slurm)
            if self.setup:
                params["slurm_setup"] = list(self.setup)
        return params


def load_cluster_config(path: Path | None = None, **overrides: Any) -> ClusterConfig:
    """A :class:`ClusterConfig` from a YAML mapping of its fields (``path``), then ``overrides`` (None values
    ignored: options not given on the command line). An unknown key or a bad value is a UsageError naming
    the file."""
    values: dict[str, Any] = {}
    if path is not None:
        import yaml

        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise UsageError(f"{path}: cannot read the cluster configuration: {err}") from err
        if not isinstance(loaded, dict):
            raise UsageError(f"{path}: the cluster configuration must be a mapping of options, got {type(loaded).__name__}")
        known = {f.name for f in fields(ClusterConfig)}
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise UsageError(f"{path}: unknown cluster option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ClusterConfig(**values)
    except (TypeError, ValueError) as err:  # UsageError is a ValueError
        raise UsageError(f"{path or 'cluster options'}: {err}") from err


def run_elements(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    cluster: ClusterConfig | None = None,
    jobs: int = 1,
    folder: Path | None = None,
    name: str = "attnlib",
    keys: Sequence[str] | None = None,
) -> Iterator[tuple[int, R | BaseException]]:
    """Run ``fn`` on every item (module docstring); yields ``(index, result)`` or ``(index, exception)`` in the
    order elements finish. ``jobs``: processes of the local executor; ``folder``: submitit's files and logs
    (required with a submitit executor); ``keys``: one name per item, recorded with its job id in
    ``folder/submitted.json`` (see :func:`in_flight`). With ``cluster.wait`` False the elements are submitted
    and nothing is yielded."""
    cluster = cluster or ClusterConfig()
    if not items:
        return
    if not cluster.submitit:
        yield from _run_local(fn, items, jobs)
        return
    if folder is None:
        raise ValueError("a submitit executor needs a folder for its files and logs")
    yield from _run_submitit(fn, items, cluster, Path(folder), name, keys)


class _Relay(logging.Handler):
    """Hands records logged in worker processes to this process's loggers."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def _init_worker(queue: Any, level: int) -> None:
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(queue)]
    root.setLevel(level)


def _run_local(fn: Callable[[T], R], items: Sequence[T], jobs: int) -> Iterator[tuple[int, R | BaseException]]:
    """In this process when one worker suffices, else in ``jobs`` spawned processes (logs relayed here)."""
    workers = min(jobs, len(items))
    if workers <= 1:
        for index, item in enumerate(items):
            try:
                yield index, fn(item)
            except Exception as err:  # one element's failure is reported; the others go on
                yield index, err
        return
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    listener = logging.handlers.QueueListener(queue, _Relay())
    listener.start()
    try:
        with cf.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker,
            initargs=(queue, logging.getLogger().getEffectiveLevel()),
        ) as pool:
            futures = {pool.submit(fn, item): index for index, item in enumerate(items)}
            for future in cf.as_completed(futures):
                try:
                    yield futures[future], future.result()
                except Exception as err:  # the element raised, or its worker process died
                    yield futures[future], err
    finally:
        listener.stop()


def _run_submitit(
    fn: Callable[[T], R], items: Sequence[T], cluster: ClusterConfig, folder: Path, name: str,
    keys: Sequence[str] | None,
) -> Iterator[tuple[int, R | BaseException]]:
    """One submitit job array; waits for the elements (polling) unless ``cluster.wait`` is False."""
    import submitit

    folder.mkdir(parents=True, exist_ok=True)
    executor = submitit.AutoExecutor(folder=folder, cluster=_SUBMITIT_CLUSTER[cluster.executor])
    executor.update_parameters(**cluster.submitit_parameters(name))
    submitted = executor.map_array(fn, list(items))
    if keys is not None:
        record = _submitted(folder) | {key: job.job_id for key, job in zip(keys, submitted, strict=True)}
        atomic_write_json(folder / SUBMITTED, record)
    ids = sorted({job.job_id.split("_")[0] for job in submitted})
    log.info("%s: %d element(s) submitted through submitit (%s, job %s); logs in %s",
             name, len(submitted), cluster.executor, ", ".join(ids), folder)
    if not cluster.wait:
        return
    pending = dict(enumerate(submitted))
    while pending:
        finished = [index for index, job in pending.items() if job.done()]
        for index in finished:
            job = pending.pop(index)
            try:
                yield index, job.result()
            except Exception as err:  # submitit's FailedJobError / UncompletedJobError name the logs
                yield index, err
        if pending and not finished:
            time.sleep(cluster.poll_s)


def _submitted(folder: Path) -> dict[str, str]:
    path = folder / SUBMITTED
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError) as err:
        log.warning("%s: unreadable record of submitted elements (%s); ignored", path, err)
        return {}


def in_flight(folder: Path, keys: Sequence[str]) -> dict[str, str]:
    """Of ``keys``, those whose last Slurm submission from ``folder`` is still queued or running (per
    ``sacct``/``squeue`` through submitit): key -> job id. A sweep run again while its array is in the queue
    waits for those elements instead of submitting them twice."""
    import submitit

    record = _submitted(Path(folder))
    active = {}
    for key in keys:
        if key in record:
            state = submitit.SlurmJob(folder=folder, job_id=record[key]).state
            if state.upper().split()[0] in ACTIVE_STATES:
                active[key] = record[key]
    return active


def element_error(error: BaseException) -> str:
    """One line for a failed element: the element's own exception line out of submitit's traceback text (else
    the error's last line) and, for submitit, where its logs are."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    raised = [line for line in lines if _EXCEPTION_LINE.match(line)]
    logs = [line[2:] for line in lines if line.startswith("- ") and line.endswith((".err", ".out"))]
    detail = raised[-1] if raised else (lines[-1] if lines else "")
    text = f"{type(error).__name__}: {detail}" if detail and not raised else detail or type(error).__name__
    return f"{text} (logs: {', '.join(logs)})" if logs else text
