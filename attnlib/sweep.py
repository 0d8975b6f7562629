"""Run parameterized notebooks headless with papermill: once per seed, then one report pass.

A notebook that trains models says so in its metadata, ``metadata["attnlib"] = {"sweep": true}``; its
cell tagged ``parameters`` assigns ``profile`` and ``seeds`` (and usually ``data_root`` and ``device``).
:func:`sweep` executes it once per seed (``seeds=[s]``, seeds in parallel processes) and, when every seed
succeeded, once more with all the seeds into the report: the notebook then finds every seed's run in the
run store and only renders. :func:`reproduce_all` does this for a folder of notebooks (others run once).

Checks before any kernel starts, each an :class:`attnlib.UsageError`: the notebook exists, the profile
is one of ``attnlib/profiles/*.yaml``, every parameter name is assigned by the notebook's ``parameters``
cell (read with :mod:`ast`, see :func:`declared_parameters`; papermill's own reader fails on lines with
trailing comments and then warns "Passed unknown parameter" about correct names, so that warning is
silenced), and the kernel exists.

Layout: a notebook's executions go into ``<root>/notebooks/<stem>/<profile>-<hash>/``, the hash over the
parameters other than ``seeds`` (written to ``parameters.json`` there; a parameter given with the literal
default of the notebook does not count): ``seed_<s>.ipynb`` per seed, the report
``report_seeds-<seeds>.ipynb`` (e.g. ``report_seeds-0-4.ipynb``), a run-once notebook
``<stem>_seeds-<seeds>.ipynb``. Each execution writes ``<name>.running.ipynb``, which replaces
``<name>.ipynb`` only when it succeeded and is then marked done by ``<name>.done.json`` (notebook hash and
parameters; a rerun skips seeds marked done); a failed one is kept as ``<name>.failed.ipynb`` and the
earlier good one stays.

Determinism: every kernel computes with ``threads`` threads (default 1), set through
``$ATTNLIB_THREADS`` (applied by :func:`attnlib.seeding.seed_everything`) and the OMP/MKL/OpenBLAS
variables, whatever ``jobs`` is: ``jobs`` is parallelism across runs only. CPU sums depend on the thread
count, so this keeps a seed's numbers (and data fingerprints) the same under any ``jobs``, and the report
pass finds the seeds' runs. Kernels also get text progress bars (:mod:`attnlib.progress`) and a log filter
(:class:`attnlib.KernelLogFilter`).

Kernels: the notebooks' ``python3`` kernel is ipykernel's spec installed in the venv, whose command is
plain ``python``, which jupyter_client replaces by ``sys.executable``, so kernels run in the caller's
Python even from a shell where the venv is not activated. :func:`run_notebook` warns when the kernel it
resolves lives elsewhere.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures as cf
import difflib
import hashlib
import json
import logging
import logging.handlers
import multiprocessing
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import papermill
import yaml
from IPython.core.inputtransformer2 import TransformerManager
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from attnlib import UsageError
from attnlib._io import atomic_write_json, atomic_write_text
from attnlib.paths import runs_dir
from attnlib.profiles import DEFAULT as DEFAULT_PROFILE
from attnlib.profiles import check_profile
from attnlib.progress import TEXT_ENV
from attnlib.seeding import THREADS_ENV

log = logging.getLogger(__name__)

DEFAULT_SEEDS = "0-4"
START_BACKOFF_S = 1.0
"""Seconds before the first kernel-start retry; the n-th retry waits n times as long."""
#: Thread-pool sizes a kernel's libraries read at start; the sweep sets them (and ``$ATTNLIB_THREADS``).
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: papermill's warnings about parameters it could not read: :func:`declared_parameters` reads them.
PAPERMILL_NOISE = ("Passed unknown parameter", "Unable to parse line")
#: ipykernel's command-line option that installs :class:`attnlib.KernelLogFilter` on its log handler.
KERNEL_LOG_OPTION = "--IPKernelApp.logging_config=" + json.dumps(
    {"filters": {"attnlib": {"()": "attnlib.KernelLogFilter"}},
     "handlers": {"console": {"filters": ["attnlib"]}}}
)

_SEED_PART = re.compile(r"(\d+)(?:-(\d+))?")
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_PLAIN_PYTHON = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
_IMPLICIT = ("profile", "seeds")


class KernelStartError(RuntimeError):
    """The notebook's kernel did not start, retries included."""


@dataclass(frozen=True)
class DeclaredParameters:
    """What a notebook's ``parameters`` cell assigns: the names in order, and the literal defaults."""

    names: tuple[str, ...]
    defaults: Mapping[str, Any]

    def is_default(self, name: str, value: Any) -> bool:
        """Whether ``value`` is ``name``'s literal default (compared as JSON: ``1`` is not ``True``)."""
        return name in self.defaults and _canonical(self.defaults[name]) == _canonical(value)


@dataclass
class SweepResult:
    """What :func:`sweep` did.

    ``parameters``: those of every execution but ``seeds``; ``executed``: seeds run now -> notebook;
    ``skipped``: seeds already done; ``failures``: seed -> (the failed execution's notebook, None when the
    kernel never ran, error text); ``report``: the report notebook, or None when a seed failed or the
    report pass failed (then ``report_error`` says why, like ``failures``).
    """

    notebook: Path
    out_dir: Path
    parameters: dict[str, Any]
    seeds: list[int]
    executed: dict[int, Path] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    failures: dict[int, tuple[Path | None, str]] = field(default_factory=dict)
    report: Path | None = None
    report_error: tuple[Path | None, str] | None = None

    @property
    def ok(self) -> bool:
        """Every seed succeeded and the report was rendered."""
        return not self.failures and self.report is not None

    @property
    def report_path(self) -> Path:
        """Where the report of these seeds goes."""
        return self.out_dir / f"report_seeds-{seeds_label(self.seeds)}.ipynb"

    def seed_path(self, seed: int) -> Path:
        """Where seed ``seed``'s executed notebook goes."""
        return self.out_dir / f"seed_{seed}.ipynb"

    def done_on_disk(self) -> bool:
        """Every seed's notebook and the report are on disk, marked done for this notebook and these
        parameters."""
        digest = notebook_sha256(self.notebook)
        finished = [(self.seed_path(seed), [seed]) for seed in self.seeds] + [(self.report_path, self.seeds)]
        return all(_is_done(path, {**self.parameters, "seeds": seeds}, digest) for path, seeds in finished)


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``"0-4"``, ``"0,2,5"``, ``"3"`` or mixes like ``"0-2,7"`` (order kept, repeats dropped)."""
    seeds: list[int] = []
    for part in text.split(","):
        match = _SEED_PART.fullmatch(part.strip())
        if match is None:
            raise ValueError(f"seeds {text!r}: {part.strip()!r} is not N or N-M")
        low = int(match[1])
        high = int(match[2]) if match[2] is not None else low
        if high < low:
            raise ValueError(f"seeds {text!r}: range {part.strip()!r} is empty")
        seeds.extend(range(low, high + 1))
    return list(dict.fromkeys(seeds))


def seeds_label(seeds: Sequence[int]) -> str:
    """Seeds for a file name, order kept: ``[0, 1, 2, 3, 4]`` -> ``0-4``, ``[0, 2, 5]`` -> ``0_2_5``,
    ``[0, 1, 2, 7]`` -> ``0-2_7``."""
    parts, start = [], 0
    for end in range(1, len(seeds) + 1):
        if end == len(seeds) or seeds[end] != seeds[end - 1] + 1:
            parts.append(str(seeds[start]) if end - start == 1 else f"{seeds[start]}-{seeds[end - 1]}")
            start = end
    return "_".join(parts)


def parse_parameter(text: str) -> Any:
    """A ``-p NAME VALUE`` value, read as YAML (papermill -y): ``null``, ``true``, ``0.001``, ``[1]``.

    Also ``None`` (papermill's ``-p`` spelling) is None and ``1e-3`` (a string in YAML 1.1) is a float;
    values YAML reads as other types (dates) stay text.
    """
    if text == "None":
        return None
    try:
        value = yaml.safe_load(text)
        json.dumps(value)
    except (yaml.YAMLError, TypeError, ValueError):
        return text
    if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(text):
        return float(text)
    return value


def resolve_profile(parameters: Mapping[str, Any] | None = None) -> str:
    """The profile: ``parameters["profile"]``, else ``$ATTNLIB_PROFILE``, else ``"quick"`` (not checked)."""
    if parameters and parameters.get("profile"):
        return str(parameters["profile"])
    return os.environ.get("ATTNLIB_PROFILE") or DEFAULT_PROFILE


def declared_parameters(notebook: Path) -> DeclaredParameters:
    """The names assigned at the top level of the notebook's first cell tagged ``parameters`` (none
    without one), with the defaults that ``ast.literal_eval`` reads; other values (``os.environ.get(...)``)
    give a name without a default. IPython magics are allowed in the cell."""
    nb = nbformat.read(Path(notebook), as_version=4)
    cell = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        return DeclaredParameters((), {})
    try:
        tree = ast.parse(TransformerManager().transform_cell(cell.source))
    except SyntaxError as err:
        raise UsageError(f"{notebook}: parameters cell line {err.lineno}: {err.msg}") from err
    names: dict[str, None] = {}
    defaults: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                names[target.id] = None
                try:
                    defaults[target.id] = ast.literal_eval(value)
                except (ValueError, TypeError):
                    defaults.pop(target.id, None)  # a later non-literal assignment wins
            elif isinstance(target, (ast.Tuple, ast.List)):
                names.update((elt.id, None) for elt in target.elts if isinstance(elt, ast.Name))
    return DeclaredParameters(tuple(names), defaults)


def check_parameters(notebook: Path, declared: DeclaredParameters, names: Iterable[str]) -> None:
    """:class:`attnlib.UsageError` when a name is not assigned by ``notebook``'s parameters cell: one line
    with the unknown names, the closest known name and the known names."""
    unknown = [name for name in names if name not in declared.names]
    if unknown:
        raise UsageError(
            f"{Path(notebook).name}: unknown parameter {', '.join(map(repr, unknown))}"
            f"{_did_you_mean(unknown[0], declared.names)}; "
            f"its parameters: {', '.join(declared.names) or 'none'}"
        )


def notebook_out_dir(
    notebook: Path, profile: str, parameters: Mapping[str, Any], root: Path | None = None
) -> Path:
    """Where a notebook's executions with ``parameters`` go: ``<root or runs_dir()>/notebooks/<stem>/
    <profile>-<hash>``, the hash (8 hex digits) over ``parameters`` without ``seeds``."""
    digest = hashlib.sha256(_canonical(_without_seeds(parameters)).encode()).hexdigest()[:8]
    root = root if root is not None else runs_dir()
    return root / "notebooks" / Path(notebook).stem / f"{profile}-{digest}"


def is_sweep_notebook(notebook: Path) -> bool:
    """Whether the notebook declares ``metadata["attnlib"]["sweep"]`` true (it trains one run per seed)."""
    nb = nbformat.read(Path(notebook), as_version=4)
    return bool(nb.metadata.get("attnlib", {}).get("sweep", False))


def notebook_sha256(notebook: Path) -> str:
    """SHA-256 of the notebook file's bytes."""
    return hashlib.sha256(Path(notebook).read_bytes()).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _jsonable(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as the notebook and the done marker see them (paths as text, tuples as lists)."""
    return json.loads(json.dumps(dict(parameters), default=str))


def _without_seeds(parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in parameters.items() if name != "seeds"}


def _did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _existing_notebook(notebook: Path) -> Path:
    notebook = Path(notebook).resolve()
    if not notebook.is_file():
        raise UsageError(f"{notebook}: no such notebook")
    return notebook


def _non_default(declared: DeclaredParameters, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``parameters`` less those given with their literal default (they change nothing), ``profile`` and
    ``seeds`` always kept."""
    return {k: v for k, v in parameters.items() if k in _IMPLICIT or not declared.is_default(k, v)}


def _claim(out_dir: Path, notebook: Path, profile: str, parameters: Mapping[str, Any]) -> None:
    """Write ``out_dir/parameters.json``; UsageError when it exists and describes other parameters."""
    record = {"notebook": notebook.name, "profile": profile, "parameters": _without_seeds(parameters)}
    path = out_dir / "parameters.json"
    if path.is_file():
        if json.loads(path.read_text(encoding="utf-8")) != record:
            raise UsageError(
                f"{out_dir} holds executions of other parameters (see {path}); choose another folder")
        return
    atomic_write_json(path, record)


def _kernel_for(notebook: Path, kernel_name: str | None) -> tuple[str, KernelSpec]:
    """The kernel that will run ``notebook`` and its spec; an unknown kernel is a UsageError (no retries)."""
    name = kernel_name or nbformat.read(notebook, as_version=4).metadata.get("kernelspec", {}).get("name")
    if not name:
        raise UsageError(f"{notebook}: no kernelspec in the notebook metadata and no kernel name given")
    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel as err:
        raise UsageError(f"{notebook}: no Jupyter kernel named {name!r} (`jupyter kernelspec list`)") from err
    if spec.language.lower() == "python" and not _runs_this_python(spec):
        log.warning(
            "%s: kernel %r (%s) runs %s, not this Python (%s); install ipykernel's spec into this "
            "environment (`%s -m ipykernel install --sys-prefix`) or pass a kernel name",
            notebook.name, name, spec.resource_dir, spec.argv[0] if spec.argv else "", sys.executable,
            sys.executable,
        )
    return name, spec


def _runs_this_python(spec: KernelSpec) -> bool:
    command = spec.argv[0] if spec.argv else ""
    return command in _PLAIN_PYTHON or Path(command).parent == Path(sys.executable).parent


def _papermill_noise(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(PAPERMILL_NOISE)


@contextmanager
def _kernel_setup(threads: int) -> Iterator[None]:
    """Environment of the kernels started inside (thread counts, text progress bars), papermill's parameter
    warnings silenced; all undone on exit (own code: ``mock.patch.dict`` empties and refills os.environ)."""
    env = {var: str(threads) for var in (THREADS_ENV, *THREAD_ENV_VARS)} | {TEXT_ENV: "1"}
    saved = {var: os.environ.get(var) for var in env}
    loggers = [logging.getLogger("papermill"), logging.getLogger("papermill.translators")]
    os.environ.update(env)
    for logger in loggers:
        logger.addFilter(_papermill_noise)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(_papermill_noise)
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def run_notebook(
    notebook: Path,
    out_path: Path,
    parameters: Mapping[str, Any],
    *,
    kernel_name: str | None = None,
    execution_timeout: int | None = None,
    start_retries: int = 2,
    threads: int = 1,
) -> Path:
    """Execute ``notebook`` once with papermill into ``out_path``, working directory the notebook's folder.

    Every parameter name must be assigned by the notebook's parameters cell (else
    :class:`attnlib.UsageError`). The kernel computes with ``threads`` threads (see the module docstring).
    A failure before the kernel is ready (kernel died before replying to kernel_info, port race, start
    time-out) is retried up to ``start_retries`` times; past that it raises :class:`KernelStartError`. A
    failing cell raises ``papermill.PapermillExecutionError`` at once (papermill has written the executed
    notebook, error included, to ``out_path``); so does any failure once the kernel is up.
    """
    notebook = _existing_notebook(notebook)
    out_path = Path(out_path)
    check_parameters(notebook, declared_parameters(notebook), parameters)
    name, spec = _kernel_for(notebook, kernel_name)
    ipykernel = _runs_this_python(spec) and any("ipykernel" in arg for arg in spec.argv)
    options = {"extra_arguments": [KERNEL_LOG_OPTION]} if ipykernel else {}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    attempt = 0
    while True:
        started = threading.Event()
        try:
            with _kernel_setup(threads):
                papermill.execute_notebook(
                    notebook,
                    out_path,
                    parameters=dict(parameters),
                    kernel_name=name,
                    cwd=notebook.parent,
                    execution_timeout=execution_timeout,
                    progress_bar=False,
                    on_notebook_start=lambda **_: started.set(),
                    **options,
                )
            return out_path
        except papermill.PapermillExecutionError:
            raise
        except Exception as err:
            if started.is_set():
                raise
            attempt += 1
            if attempt > start_retries:
                raise KernelStartError(
                    f"{notebook}: kernel {name!r} did not start in {attempt} attempts: {_error_text(err)}"
                ) from err
            delay = START_BACKOFF_S * attempt
            log.warning(
                "%s -> %s: kernel start failed (%s: %s); retry %d of %d in %.1f s",
                notebook.name, out_path.name, type(err).__name__, err, attempt, start_retries, delay,
            )
            time.sleep(delay)


def _error_text(err: Exception) -> str:
    """One line for a failed execution: the cell's exception name and message, or the exception."""
    if isinstance(err, papermill.PapermillExecutionError):
        return f"{err.ename}: {err.evalue} (cell In [{err.exec_count}])"
    return f"{type(err).__name__}: {err}"


def _sibling(final: Path, tag: str) -> Path:
    """``<name>.<tag>.ipynb`` beside ``<name>.ipynb``."""
    return final.with_name(f"{final.stem}.{tag}.ipynb")


def _marker(final: Path) -> Path:
    return final.with_name(f"{final.stem}.done.json")


def _is_done(final: Path, parameters: Mapping[str, Any], digest: str) -> bool:
    """``final`` exists and its done marker names this notebook hash and these parameters."""
    marker = _marker(final)
    if not (marker.is_file() and final.is_file()):
        return False
    try:
        found = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("%s: unreadable done marker (%s); not done", marker, err)
        return False
    return found.get("notebook_sha256") == digest and found.get("parameters") == parameters


@dataclass(frozen=True)
class _Job:
    notebook: Path
    final: Path
    parameters: dict[str, Any]
    notebook_sha256: str
    options: dict[str, Any]
    seed: int | None = None


@dataclass(frozen=True)
class _Outcome:
    seed: int | None
    path: Path | None
    error: str | None


def _attempt(job: _Job) -> _Outcome:
    """Execute into ``<name>.running.ipynb``; on success rename it over ``job.final`` and mark that done,
    on failure rename it to ``<name>.failed.ipynb`` (runs in a worker process when jobs > 1)."""
    running, failed = _sibling(job.final, "running"), _sibling(job.final, "failed")
    start = time.perf_counter()
    try:
        run_notebook(job.notebook, running, job.parameters, **job.options)
    except Exception as err:  # any failure of one execution is recorded; the sweep goes on
        error = _error_text(err)
        log.error("%s -> %s failed: %s", job.notebook.name, job.final, error)
        failed.unlink(missing_ok=True)
        if not running.exists():
            return _Outcome(job.seed, None, error)
        os.replace(running, failed)
        return _Outcome(job.seed, failed, error)
    marker = _marker(job.final)
    marker.unlink(missing_ok=True)
    os.replace(running, job.final)
    failed.unlink(missing_ok=True)
    atomic_write_json(
        marker,
        {
            "notebook": str(job.notebook),
            "notebook_sha256": job.notebook_sha256,
            "parameters": job.parameters,
            "threads": job.options["threads"],
            "wall_s": round(time.perf_counter() - start, 3),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )
    return _Outcome(job.seed, job.final, None)


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


def _execute(jobs: Sequence[_Job], workers: int) -> Iterator[_Outcome]:
    """Run the jobs, in this process when one worker suffices, else in ``workers`` spawned processes."""
    workers = min(workers, len(jobs))
    if workers <= 1:
        yield from map(_attempt, jobs)
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
            futures = {pool.submit(_attempt, job): job for job in jobs}
            for future in cf.as_completed(futures):
                job = futures[future]
                try:
                    yield future.result()
                except Exception as err:  # the worker process itself died (killed, out of memory)
                    yield _Outcome(job.seed, None, f"worker process failed: {_error_text(err)}")
    finally:
        listener.stop()


def _check_counts(jobs: int, threads: int) -> None:
    for name, value in (("jobs", jobs), ("threads", threads)):
        if value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")


def sweep(
    notebook: Path,
    seeds: Sequence[int],
    *,
    jobs: int = 1,
    threads: int = 1,
    parameters: Mapping[str, Any] | None = None,
    out_dir: Path | None = None,
    root: Path | None = None,
    kernel_name: str | None = None,
    execution_timeout: int | None = None,
    start_retries: int = 2,
    progress: bool = True,
) -> SweepResult:
    """Execute ``notebook`` once per seed into ``out_dir/seed_<s>.ipynb``, then the report pass.

    ``parameters`` go to every execution with ``seeds=[s]`` (``profile`` defaults as in
    :func:`resolve_profile`); each name must be assigned by the notebook's parameters cell, which must
    assign ``profile`` and ``seeds``. ``out_dir`` defaults to :func:`notebook_out_dir` under ``root``; a
    folder that holds executions of other parameters is refused. Seeds already done with the same
    parameters and notebook are skipped; up to ``jobs`` seeds run in parallel processes, each kernel with
    ``threads`` threads. When every seed succeeded, ``out_dir/report_seeds-<seeds>.ipynb`` is executed
    with all the seeds. Bad choices raise :class:`attnlib.UsageError` before any kernel starts.
    """
    notebook = _existing_notebook(notebook)
    seeds = list(dict.fromkeys(int(seed) for seed in seeds))
    if not seeds:
        raise UsageError(f"{notebook}: no seeds to run")
    _check_counts(jobs, threads)
    declared = declared_parameters(notebook)
    missing = [name for name in _IMPLICIT if name not in declared.names]
    if missing:
        raise UsageError(
            f"{notebook.name}: its parameters cell does not assign {', '.join(missing)}, which a sweep sets; "
            f"its parameters: {', '.join(declared.names) or 'none'}"
        )
    passed = _jsonable(parameters or {})
    if "seeds" in passed:
        raise UsageError(f"{notebook.name}: give the seeds with --seeds, not as a parameter")
    check_parameters(notebook, declared, passed)
    profile = check_profile(resolve_profile(passed))
    params = _non_default(declared, {**passed, "profile": profile})
    kernel, _ = _kernel_for(notebook, kernel_name)
    out_dir = Path(out_dir) if out_dir is not None else notebook_out_dir(notebook, profile, params, root)
    _claim(out_dir, notebook, profile, params)

    options = {"kernel_name": kernel, "execution_timeout": execution_timeout, "start_retries": start_retries,
               "threads": threads}
    digest = notebook_sha256(notebook)
    result = SweepResult(notebook=notebook, out_dir=out_dir, parameters=params, seeds=seeds)
    pending = []
    for seed in seeds:
        job = _Job(notebook, result.seed_path(seed), {**params, "seeds": [seed]}, digest, options, seed)
        if _is_done(job.final, job.parameters, digest):
            log.info("%s seed %d: done before (%s), skipped", notebook.name, seed, job.final)
            result.skipped.append(seed)
        else:
            pending.append(job)
    log.info("%s: %d seeds to run, %d done, %d jobs x %d threads, into %s", notebook.name, len(pending),
             len(result.skipped), jobs, threads, out_dir)
    cores = os.cpu_count() or 1
    if min(jobs, len(pending)) * threads > cores:
        log.warning("%d jobs x %d threads exceed the %d cores: runs share cores", jobs, threads, cores)
    with logging_redirect_tqdm(), tqdm(
        total=len(seeds), initial=len(result.skipped), desc=notebook.stem, unit="seed", disable=not progress
    ) as bar:
        for outcome in _execute(pending, jobs):
            assert outcome.seed is not None
            if outcome.error is None and outcome.path is not None:
                result.executed[outcome.seed] = outcome.path
            else:
                result.failures[outcome.seed] = (outcome.path, outcome.error or "")
            bar.update()
    if result.failures:
        log.error("%s: seeds %s failed; no report", notebook.name, sorted(result.failures))
        return result
    report = _attempt(_Job(notebook, result.report_path, {**params, "seeds": seeds}, digest, options))
    if report.error is None:
        result.report = report.path
        log.info("%s: report %s", notebook.name, report.path)
    else:
        result.report_error = (report.path, report.error)
    return result


def reproduce_all(
    notebooks_dir: Path,
    *,
    profile: str,
    seeds: Sequence[int],
    jobs: int = 1,
    threads: int = 1,
    out_root: Path | None = None,
    parameters: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run every ``notebooks_dir/*.ipynb`` in name order: sweep notebooks through :func:`sweep`, others once.

    A name in ``parameters`` must be assigned by the parameters cell of at least one notebook (else
    :class:`attnlib.UsageError`, before anything runs); each notebook gets the names its cell assigns and
    no others (``profile`` and ``seeds`` included). Executed notebooks go under
    ``<out_root or runs_dir()>/notebooks/`` as :func:`notebook_out_dir` says (a run-once notebook into
    ``<stem>_seeds-<seeds>.ipynb``). A failure does not stop the other notebooks. ``out_root/summary.md``
    and ``summary.csv`` are rewritten after each notebook from what is on disk; returns the summary (columns
    notebook, kind, status, folder, executed, report, wall_s, errors: status "ok" when this pass had no
    error and every notebook it names is marked done, else "failed"; executed and report name files of
    folder that exist).
    """
    check_profile(profile)
    folder = Path(notebooks_dir)
    notebooks = sorted(folder.glob("*.ipynb"))
    if not notebooks:
        raise UsageError(f"{folder}: no notebooks (*.ipynb)")
    _check_counts(jobs, threads)
    passed = _jsonable(parameters or {})
    implicit = [name for name in _IMPLICIT if name in passed]
    if implicit:
        options = " and ".join(f"{name} with --{name}" for name in implicit)
        raise UsageError(f"give {options}, not as parameters")
    declared: dict[Path, DeclaredParameters | str] = {}
    for notebook in notebooks:
        try:
            declared[notebook] = declared_parameters(notebook)
        except (OSError, ValueError) as err:  # nbformat's errors are ValueErrors; so is a UsageError
            declared[notebook] = f"{notebook}: not a readable notebook: {err}"
    known = sorted({name for d in declared.values() if isinstance(d, DeclaredParameters) for name in d.names})
    unknown = [name for name in passed if name not in known]
    if unknown:
        raise UsageError(
            f"{folder}: no notebook has the parameter {', '.join(map(repr, unknown))}"
            f"{_did_you_mean(unknown[0], known)}; their parameters: {', '.join(known)}"
        )
    out_root = Path(out_root) if out_root is not None else runs_dir()
    rows: list[dict[str, Any]] = []
    for notebook in notebooks:
        run = _Reproduction(notebook, profile, list(seeds), passed, jobs, threads, out_root, progress)
        rows.append(run.row(declared[notebook]))
        summary = pd.DataFrame(rows)
        _write_summary(out_root, summary, profile, list(seeds), threads)
    return summary


@dataclass(frozen=True)
class _Reproduction:
    """One notebook of :func:`reproduce_all`."""

    notebook: Path
    profile: str
    seeds: list[int]
    passed: dict[str, Any]
    jobs: int
    threads: int
    out_root: Path
    progress: bool

    def row(self, declared: DeclaredParameters | str) -> dict[str, Any]:
        """Run the notebook; its summary row."""
        start = time.perf_counter()
        row: dict[str, Any] = {"notebook": self.notebook.name, "kind": "", "status": "failed", "folder": "",
                               "executed": "", "report": "", "wall_s": 0.0, "errors": ""}
        if isinstance(declared, str):
            row["errors"] = declared
            return row
        given = {**self.passed, "profile": self.profile, "seeds": self.seeds}
        params = {name: value for name, value in given.items() if name in declared.names}
        left_out = sorted(set(self.passed) - set(params))
        if left_out:
            log.info("%s: not passing %s (not in its parameters cell)", self.notebook.name,
                     ", ".join(left_out))
        try:
            row["kind"] = "sweep" if is_sweep_notebook(self.notebook) else "once"
            row.update(self._sweep(params) if row["kind"] == "sweep" else self._once(declared, params))
        except UsageError as err:  # e.g. a sweep notebook without seeds, an unknown kernel
            row["errors"] = str(err)
        row["wall_s"] = round(time.perf_counter() - start, 1)
        return row

    def _sweep(self, params: dict[str, Any]) -> dict[str, Any]:
        result = sweep(self.notebook, self.seeds, jobs=self.jobs, threads=self.threads,
                       parameters=_without_seeds(params), root=self.out_root, progress=self.progress)
        failed = [(f"seed {seed}", *failure) for seed, failure in sorted(result.failures.items())]
        if result.report_error is not None:
            failed.append(("report", *result.report_error))
        errors = [f"{what}: {_failure(path, error)}" for what, path, error in failed]
        finals = [result.seed_path(seed) for seed in self.seeds]
        return {
            "status": "ok" if not errors and result.done_on_disk() else "failed",
            "folder": str(result.out_dir),
            "executed": _existing_names(finals),
            "report": _existing_names([result.report_path]),
            "errors": "; ".join(errors),
        }

    def _once(self, declared: DeclaredParameters, params: dict[str, Any]) -> dict[str, Any]:
        params = _non_default(declared, params)
        kernel, _ = _kernel_for(self.notebook, None)
        out_dir = notebook_out_dir(self.notebook, self.profile, params, self.out_root)
        _claim(out_dir, self.notebook, self.profile, params)
        name = self.notebook.stem + (f"_seeds-{seeds_label(self.seeds)}" if "seeds" in params else "")
        digest = notebook_sha256(self.notebook)
        options = {"kernel_name": kernel, "execution_timeout": None, "start_retries": 2,
                   "threads": self.threads}
        outcome = _attempt(_Job(self.notebook, out_dir / f"{name}.ipynb", params, digest, options))
        ok = outcome.error is None and _is_done(out_dir / f"{name}.ipynb", params, digest)
        return {
            "status": "ok" if ok else "failed",
            "folder": str(out_dir),
            "executed": _existing_names([out_dir / f"{name}.ipynb"]),
            "errors": "" if outcome.error is None else _failure(outcome.path, outcome.error),
        }


def _failure(path: Path | None, error: str) -> str:
    return error if path is None else f"{error} ({path})"


def _existing_names(paths: Iterable[Path]) -> str:
    return "; ".join(path.name for path in paths if path.is_file())


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _write_summary(
    out_root: Path, summary: pd.DataFrame, profile: str, seeds: list[int], threads: int
) -> None:
    atomic_write_text(out_root / "summary.csv", summary.to_csv(index=False))
    title = f"# attnlib reproduce: profile {profile}, seeds {seeds}, {threads} threads per run\n\n"
    atomic_write_text(out_root / "summary.md", title + _markdown_table(summary))


def _seeds_arg(text: str) -> list[int]:
    try:
        return parse_seeds(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _count_arg(text: str) -> int:
    try:
        count = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from err
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {count}")
    return count


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=_seeds_arg, default=DEFAULT_SEEDS,
                        help="seeds: 0-4, 0,2,5, 3 or 0-2,7 (default %(default)s)")
    parser.add_argument("--jobs", "-j", type=_count_arg, default=1,
                        help="runs in parallel processes (default 1); results do not depend on it")
    parser.add_argument("--threads", type=_count_arg, default=1,
                        help="threads of every run's kernel (default 1); a seed's numbers depend on it, so "
                        "runs meant to be compared use the same value")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], dest="parameters",
                        metavar=("NAME", "VALUE"), help="notebook parameter, value read as YAML (repeatable)")


def _parameters(pairs: Sequence[Sequence[str]]) -> dict[str, Any]:
    return {name: parse_parameter(value) for name, value in pairs}


def _sweep_command(args: argparse.Namespace) -> int:
    result = sweep(args.notebook, args.seeds, jobs=args.jobs, threads=args.threads,
                   parameters=_parameters(args.parameters), out_dir=args.out, kernel_name=args.kernel,
                   execution_timeout=args.timeout)
    if result.ok:
        print(result.report)
        return 0
    failed = [(f"seed {seed}", path, error) for seed, (path, error) in sorted(result.failures.items())]
    if result.report_error is not None:
        failed.append(("report", *result.report_error))
    for what, path, error in failed:
        where = path if path is not None else "none (the kernel did not run)"
        print(f"{what} failed: {error}\n  executed notebook: {where}", file=sys.stderr)
    return 1


def _reproduce_command(args: argparse.Namespace) -> int:
    out_root = args.out if args.out is not None else runs_dir()
    summary = reproduce_all(args.notebooks, profile=args.profile, seeds=args.seeds, jobs=args.jobs,
                            threads=args.threads, out_root=out_root, parameters=_parameters(args.parameters))
    failed = summary[summary["status"] != "ok"]
    for row in failed.itertuples(index=False):
        print(f"{row.notebook} failed: {row.errors}", file=sys.stderr)
    print(out_root / "summary.md")
    return 1 if len(failed) else 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` and ``reproduce`` sub-commands (each sets ``handler``, returning the exit code)."""
    run = subparsers.add_parser("sweep", help="run a notebook once per seed, then its report",
                                description="Run NOTEBOOK once per seed (skipping seeds already done), "
                                "then once with all seeds to render the report.")
    run.add_argument("notebook", type=Path)
    _add_common(run)
    run.add_argument("--out", type=Path, default=None,
                     help="output folder (default: runs/notebooks/<stem>/<profile>-<parameters hash>)")
    run.add_argument("--kernel", default=None, help="Jupyter kernel (default: the notebook's)")
    run.add_argument("--timeout", type=int, default=None, help="per-cell execution time-out in seconds")
    run.set_defaults(handler=_sweep_command)

    every = subparsers.add_parser("reproduce", help="run every notebook of a folder (sweeps and run-once)",
                                  description="Run every notebook of a folder in name order and write "
                                  "summary.md / summary.csv. A -p parameter goes to the notebooks that "
                                  "have it.")
    every.add_argument("--notebooks", type=Path, default=Path("notebooks"),
                       help="folder of notebooks (default %(default)s)")
    every.add_argument("--profile", default=os.environ.get("ATTNLIB_PROFILE") or DEFAULT_PROFILE,
                       help="profile (default $ATTNLIB_PROFILE or quick)")
    _add_common(every)
    every.add_argument("--out", type=Path, default=None, help="root folder (default: runs/)")
    every.set_defaults(handler=_reproduce_command)
