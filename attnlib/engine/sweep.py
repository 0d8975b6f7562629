"""Run parameterized notebooks headless with papermill: once per seed, then one report pass.

A notebook that trains models says so in its metadata, ``metadata["attnlib"] = {"sweep": true}``; its
cell tagged ``parameters`` assigns ``profile`` and ``seeds`` (and usually ``data_root`` and ``device``).
:func:`sweep` executes it once per seed (``seeds=[s]``, seeds in parallel processes) and, when every seed
succeeded, once more with all the seeds into the report: the notebook then finds every seed's run in the
run store and only renders. :func:`attnlib.engine.reproduce.reproduce_all` does this for a folder of
notebooks (others run once).

Checks before any kernel starts, each an :class:`attnlib.UsageError`: the notebook exists, the profile
is one of ``attnlib/core/profiles/*.yaml``, every parameter name is assigned by the notebook's ``parameters``
cell (read with :mod:`ast`, see :func:`attnlib.engine.notebook_params.declared_parameters`; papermill's own
reader fails on lines with trailing comments and then warns "Passed unknown parameter" about correct names,
so that warning is silenced), and the kernel exists.

Layout: a notebook's executions go into ``<root>/notebooks/<stem>/<profile>-<hash>/``, the hash over the
parameters other than ``seeds`` (written to ``parameters.json`` there; a parameter given with the literal
default of the notebook does not count): ``seed_<s>.ipynb`` per seed, the report
``report_seeds-<seeds>.ipynb`` (e.g. ``report_seeds-0-4.ipynb``), a run-once notebook
``<stem>_seeds-<seeds>.ipynb``. Each execution writes ``<name>.running.ipynb``, which replaces
``<name>.ipynb`` only when it succeeded and is then marked done by ``<name>.done.json`` (notebook hash and
parameters; a rerun skips seeds marked done); a failed one is kept as ``<name>.failed.ipynb`` and the
earlier good one stays. The report pass (and a run-once notebook) may record its claims in ``claims.json``
there (:func:`attnlib.reporting.digest.save_claims`); a sweep removes the file first, so it always comes
from the latest report pass.

Kernel environment: every kernel computes with ``threads`` threads (default 1), set through
``$ATTNLIB_THREADS`` (applied by :func:`attnlib.core.seeding.seed_everything`) and the OMP/MKL/OpenBLAS
variables, whatever ``jobs`` is: ``jobs`` is parallelism across runs only. CPU sums depend on the thread
count, so this keeps a seed's numbers (and data fingerprints) the same under any ``jobs``, and the report
pass finds the seeds' runs. ``$ATTNLIB_PROFILE`` is the sweep's profile; ``$ATTNLIB_OUTPUT_DIR`` is the
output folder in the report pass (and a run-once execution) and unset in the seed passes. Kernels also get
text progress bars (:mod:`attnlib.core.progress`) and a log filter (:class:`attnlib.KernelLogFilter`).

Kernels: the notebooks' ``python3`` kernel is ipykernel's spec installed in the venv, whose command is
plain ``python``, which jupyter_client replaces by ``sys.executable``, so kernels run in the caller's
Python even from a shell where the venv is not activated. :func:`run_notebook` warns when the kernel it
resolves lives elsewhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nbformat
import papermill
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from attnlib import UsageError
from attnlib.core.io import atomic_write_json
from attnlib.core.profiles import DEFAULT as DEFAULT_PROFILE
from attnlib.core.profiles import ENV_VAR as PROFILE_ENV
from attnlib.core.profiles import check_profile
from attnlib.core.progress import TEXT_ENV
from attnlib.engine.launch import ClusterConfig, element_error, in_flight, load_cluster_config, run_elements
from attnlib.engine.notebook_params import (
    IMPLICIT,
    check_parameters,
    declared_parameters,
    jsonable,
    non_default,
    notebook_out_dir,
    notebook_sha256,
    parse_parameters,
    seeds_label,
    without_seeds,
)
from attnlib.reporting.digest import CLAIMS_FILE, OUTPUT_DIR_ENV

log = logging.getLogger(__name__)

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

_PLAIN_PYTHON = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}


class KernelStartError(RuntimeError):
    """The notebook's kernel did not start, retries included."""


@dataclass
class SweepResult:
    """What :func:`sweep` did.

    ``parameters``: those of every execution but ``seeds``; ``executed``: seeds run now -> notebook;
    ``skipped``: seeds already done; ``failures``: seed -> (the failed execution's notebook, None when the
    kernel never ran, error text); ``report``: the report notebook, or None when a seed failed or the
    report pass failed (then ``report_error`` says why, like ``failures``); ``submitted``: seeds sent to a
    cluster without waiting; ``in_flight``: seed -> Slurm job id of seeds still in the queue from before.
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
    submitted: list[int] = field(default_factory=list)
    in_flight: dict[int, str] = field(default_factory=dict)

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
        return all(is_done(path, {**self.parameters, "seeds": seeds}, digest) for path, seeds in finished)


def resolve_profile(parameters: Mapping[str, Any] | None = None) -> str:
    """The profile: ``parameters["profile"]``, else ``$ATTNLIB_PROFILE``, else ``"quick"`` (not checked)."""
    if parameters and parameters.get("profile"):
        return str(parameters["profile"])
    return os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE


def kernel_env(profile: str, out_dir: Path | None = None) -> dict[str, str | None]:
    """The environment a kernel gets beyond the thread counts: the profile, and the output folder in a
    report pass (None: unset, so a seed pass never writes the report's files)."""
    return {PROFILE_ENV: profile, OUTPUT_DIR_ENV: None if out_dir is None else str(out_dir)}


def _existing_notebook(notebook: Path) -> Path:
    notebook = Path(notebook).resolve()
    if not notebook.is_file():
        raise UsageError(f"{notebook}: no such notebook")
    return notebook


def reserve_out_dir(out_dir: Path, notebook: Path, profile: str, parameters: Mapping[str, Any]) -> None:
    """Write ``out_dir/parameters.json``; UsageError when it exists and describes other parameters."""
    record = {"notebook": notebook.name, "profile": profile, "parameters": without_seeds(parameters)}
    path = out_dir / "parameters.json"
    if path.is_file():
        if json.loads(path.read_text(encoding="utf-8")) != record:
            raise UsageError(
                f"{out_dir} holds executions of other parameters (see {path}); choose another folder")
        return
    atomic_write_json(path, record)


def kernel_for(notebook: Path, kernel_name: str | None) -> tuple[str, KernelSpec]:
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
def _kernel_setup(threads: int, env: Mapping[str, str | None] | None = None) -> Iterator[None]:
    """Environment of the kernels started inside (thread counts, text progress bars, then ``env``, a None
    value unsetting its variable), papermill's parameter warnings silenced; all undone on exit (own code:
    ``mock.patch.dict`` empties and refills os.environ)."""
    from attnlib.core.seeding import THREADS_ENV  # imports torch: only once a kernel starts

    wanted = {var: str(threads) for var in (THREADS_ENV, *THREAD_ENV_VARS)} | {TEXT_ENV: "1"}
    wanted |= dict(env or {})
    saved = {var: os.environ.get(var) for var in wanted}
    loggers = [logging.getLogger("papermill"), logging.getLogger("papermill.translators")]
    for var, value in wanted.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
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
    env: Mapping[str, str | None] | None = None,
) -> Path:
    """Execute ``notebook`` once with papermill into ``out_path``, working directory the notebook's folder.

    Every parameter name must be assigned by the notebook's parameters cell (else
    :class:`attnlib.UsageError`). The kernel computes with ``threads`` threads (see the module docstring)
    and gets ``env`` on top of this process's environment (a None value unsets the variable).
    A failure before the kernel is ready (kernel died before replying to kernel_info, port race, start
    time-out) is retried up to ``start_retries`` times; past that it raises :class:`KernelStartError`. A
    failing cell raises ``papermill.PapermillExecutionError`` at once (papermill has written the executed
    notebook, error included, to ``out_path``); so does any failure once the kernel is up.
    """
    notebook = _existing_notebook(notebook)
    out_path = Path(out_path)
    check_parameters(notebook, declared_parameters(notebook), parameters)
    name, spec = kernel_for(notebook, kernel_name)
    ipykernel = _runs_this_python(spec) and any("ipykernel" in arg for arg in spec.argv)
    options = {"extra_arguments": [KERNEL_LOG_OPTION]} if ipykernel else {}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tries = 0
    while True:
        started = threading.Event()
        try:
            with _kernel_setup(threads, env):
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
            tries += 1
            if tries > start_retries:
                raise KernelStartError(
                    f"{notebook}: kernel {name!r} did not start in {tries} attempts: {_error_text(err)}"
                ) from err
            delay = START_BACKOFF_S * tries
            log.warning(
                "%s -> %s: kernel start failed (%s: %s); retry %d of %d in %.1f s",
                notebook.name, out_path.name, type(err).__name__, err, tries, start_retries, delay,
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


def is_done(final: Path, parameters: Mapping[str, Any], digest: str) -> bool:
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
class Job:
    notebook: Path
    final: Path
    parameters: dict[str, Any]
    notebook_sha256: str
    options: dict[str, Any]
    seed: int | None = None


@dataclass(frozen=True)
class Outcome:
    seed: int | None
    path: Path | None
    error: str | None
    wall_s: float = 0.0


def attempt(job: Job) -> Outcome:
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
            return Outcome(job.seed, None, error, time.perf_counter() - start)
        os.replace(running, failed)
        return Outcome(job.seed, failed, error, time.perf_counter() - start)
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
    return Outcome(job.seed, job.final, None, time.perf_counter() - start)


def execute_jobs(jobs: Sequence[Job], workers: int, cluster: ClusterConfig | None, folder: Path,
                 name: str) -> Iterator[tuple[Job, Outcome]]:
    """Run the jobs through :func:`attnlib.engine.launch.run_elements` (local processes or submitit); yields
    each job with its outcome as it finishes. An element that died (killed, out of memory, out of time)
    becomes a failed :class:`Outcome`."""
    keys = [_element_key(job) for job in jobs]
    for index, value in run_elements(attempt, jobs, cluster=cluster, jobs=workers, folder=folder, name=name,
                                     keys=keys):
        if isinstance(value, BaseException):
            value = Outcome(jobs[index].seed, None, f"element failed: {element_error(value)}")
        yield jobs[index], value


def _element_key(job: Job) -> str:
    return job.final.name


def check_counts(jobs: int, threads: int) -> None:
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
    profile: str | None = None,
    out_dir: Path | None = None,
    root: Path | None = None,
    kernel_name: str | None = None,
    execution_timeout: int | None = None,
    start_retries: int = 2,
    progress: bool = True,
    cluster: ClusterConfig | None = None,
) -> SweepResult:
    """Execute ``notebook`` once per seed into ``out_dir/seed_<s>.ipynb``, then the report pass.

    ``parameters`` go to every execution with ``seeds=[s]``; each name must be assigned by the notebook's
    parameters cell, which must assign ``profile`` and ``seeds``. The profile is ``profile``, else
    ``parameters["profile"]`` (both given, they must agree), else ``$ATTNLIB_PROFILE``, else quick; it is
    passed as the ``profile`` parameter and as ``$ATTNLIB_PROFILE`` to every kernel. ``out_dir`` defaults
    to :func:`notebook_out_dir` under ``root``; a folder that holds executions of other parameters is
    refused, and its ``claims.json`` is removed (the report pass writes it again). Seeds already done with
    the same parameters and notebook are skipped; up to ``jobs`` seeds run in parallel processes, each
    kernel with ``threads`` threads. When every seed succeeded, ``out_dir/report_seeds-<seeds>.ipynb`` is
    executed with all the seeds and ``$ATTNLIB_OUTPUT_DIR`` set to ``out_dir``. Bad choices raise
    :class:`attnlib.UsageError` before any kernel starts.

    ``cluster`` (:mod:`attnlib.engine.launch`): with a submitit executor every seed is one element of a job
    array (``jobs`` unused), submitit's files and logs in ``out_dir/submitit/``; seeds whose earlier Slurm
    element is still queued or running are not submitted again; the report pass runs here once every seed
    is done. With ``cluster.wait`` False the seeds are submitted and the sweep returns
    (``SweepResult.submitted``); the same call later skips the finished seeds and renders the report.
    """
    check_counts(jobs, threads)
    plan = plan_sweep(notebook, seeds, threads=threads, parameters=parameters, profile=profile, out_dir=out_dir,
                      root=root, kernel_name=kernel_name, execution_timeout=execution_timeout,
                      start_retries=start_retries)
    result, pending = plan.result, list(plan.pending)
    log.info("%s: %d seeds to run, %d done, %d jobs x %d threads, into %s", result.notebook.name, len(pending),
             len(result.skipped), jobs, threads, result.out_dir)
    cluster = cluster or ClusterConfig()
    logs = result.out_dir / "submitit"
    if cluster.executor == "slurm" and pending:
        queued = in_flight(logs, [_element_key(job) for job in pending])
        for job in [job for job in pending if _element_key(job) in queued]:
            log.info("%s seed %s: still queued or running as Slurm job %s, not submitted again",
                     result.notebook.name, job.seed, queued[_element_key(job)])
            result.in_flight[job.seed] = queued[_element_key(job)]
        pending = [job for job in pending if _element_key(job) not in queued]
    if not cluster.submitit:
        warn_oversubscribed(min(jobs, len(pending)), threads)
    if not cluster.wait or result.in_flight:
        list(execute_jobs(pending, jobs, cluster, logs, result.notebook.stem))
        result.submitted = [job.seed for job in pending if job.seed is not None]
        log.info("%s: seeds %s submitted, %s in the queue; run the same command once they finished for the "
                 "report", result.notebook.name, result.submitted, sorted(result.in_flight))
        return result
    with logging_redirect_tqdm(), tqdm(
        total=len(result.seeds), initial=len(result.skipped), desc=result.notebook.stem, unit="seed",
        disable=not progress,
    ) as bar:
        for _, outcome in execute_jobs(pending, jobs, cluster, logs, result.notebook.stem):
            plan.record(outcome)
            bar.update()
    if result.failures:
        log.error("%s: seeds %s failed; no report", result.notebook.name, sorted(result.failures))
        return result
    plan.record(attempt(plan.report_job()))
    return result


@dataclass
class SweepPlan:
    """A checked sweep before it runs: its :class:`SweepResult` (seeds done before listed as skipped), the
    seed executions still to run, and what the report pass needs. :func:`sweep` runs one;
    :func:`attnlib.engine.reproduce.reproduce_all` runs the seeds of several in one pool of processes."""

    result: SweepResult
    pending: list[Job]
    options: dict[str, Any]
    digest: str
    profile: str

    def record(self, outcome: Outcome) -> None:
        """Note a finished execution: a seed's (seed set) or the report's (seed None)."""
        result = self.result
        ok = outcome.error is None and outcome.path is not None
        if outcome.seed is None:
            if ok:
                result.report = outcome.path
                log.info("%s: report %s", result.notebook.name, outcome.path)
            else:
                result.report_error = (outcome.path, outcome.error or "")
        elif ok:
            result.executed[outcome.seed] = outcome.path
        else:
            result.failures[outcome.seed] = (outcome.path, outcome.error or "")

    def report_job(self) -> Job:
        """The report pass: every seed, ``$ATTNLIB_OUTPUT_DIR`` set to the output folder."""
        result = self.result
        options = {**self.options, "env": kernel_env(self.profile, result.out_dir)}
        return Job(result.notebook, result.report_path, {**result.parameters, "seeds": result.seeds}, self.digest,
                   options)


def plan_sweep(
    notebook: Path,
    seeds: Sequence[int],
    *,
    threads: int = 1,
    parameters: Mapping[str, Any] | None = None,
    profile: str | None = None,
    out_dir: Path | None = None,
    root: Path | None = None,
    kernel_name: str | None = None,
    execution_timeout: int | None = None,
    start_retries: int = 2,
) -> SweepPlan:
    """Check a sweep and reserve its output folder (as :func:`sweep` describes); nothing runs yet."""
    notebook = _existing_notebook(notebook)
    seeds = list(dict.fromkeys(int(seed) for seed in seeds))
    if not seeds:
        raise UsageError(f"{notebook}: no seeds to run")
    check_counts(1, threads)
    declared = declared_parameters(notebook)
    missing = [name for name in IMPLICIT if name not in declared.names]
    if missing:
        raise UsageError(
            f"{notebook.name}: its parameters cell does not assign {', '.join(missing)}, which a sweep sets; "
            f"its parameters: {', '.join(declared.names) or 'none'}"
        )
    passed = jsonable(parameters or {})
    if "seeds" in passed:
        raise UsageError(f"{notebook.name}: give the seeds with --seeds, not as a parameter")
    check_parameters(notebook, declared, passed)
    if profile and passed.get("profile") and passed["profile"] != profile:
        raise UsageError(f"{notebook.name}: two profiles, {profile!r} and the parameter "
                         f"{passed['profile']!r}; give one")
    profile = check_profile(profile or resolve_profile(passed))
    params = non_default(declared, {**passed, "profile": profile})
    kernel, _ = kernel_for(notebook, kernel_name)
    out_dir = Path(out_dir) if out_dir is not None else notebook_out_dir(notebook, profile, params, root)
    reserve_out_dir(out_dir, notebook, profile, params)
    (out_dir / CLAIMS_FILE).unlink(missing_ok=True)  # from an earlier report pass

    options = {"kernel_name": kernel, "execution_timeout": execution_timeout, "start_retries": start_retries,
               "threads": threads, "env": kernel_env(profile)}
    digest = notebook_sha256(notebook)
    result = SweepResult(notebook=notebook, out_dir=out_dir, parameters=params, seeds=seeds)
    pending = []
    for seed in seeds:
        job = Job(notebook, result.seed_path(seed), {**params, "seeds": [seed]}, digest, options, seed)
        if is_done(job.final, job.parameters, digest):
            log.info("%s seed %d: done before (%s), skipped", notebook.name, seed, job.final)
            result.skipped.append(seed)
        else:
            pending.append(job)
    return SweepPlan(result, pending, options, digest, profile)


def warn_oversubscribed(workers: int, threads: int) -> None:
    """Warn when ``workers`` processes of ``threads`` threads exceed this machine's cores."""
    cores = os.cpu_count() or 1
    if workers * threads > cores:
        log.warning("%d jobs x %d threads exceed the %d cores: runs share cores", workers, threads, cores)


def sweep_command(args: argparse.Namespace) -> int:
    """``attnlib sweep``: run the sweep; print the report's path (exit 0) or each failure (exit 1)."""
    result = sweep(args.notebook, args.seeds, jobs=args.jobs, threads=args.threads,
                   parameters=parse_parameters(args.parameters), profile=args.profile, out_dir=args.out,
                   kernel_name=args.kernel, execution_timeout=args.timeout, cluster=cluster_from_args(args))
    if result.ok:
        print(result.report)
        return 0
    if (result.submitted or result.in_flight) and not result.failures:
        print(f"submitted seeds {result.submitted or 'none'}; in the queue from before: "
              f"{sorted(result.in_flight) or 'none'}; logs in {result.out_dir / 'submitit'}. Run the same command "
              "again once they finished: done seeds are skipped and the report is rendered.")
        return 0
    failed = [(f"seed {seed}", path, error) for seed, (path, error) in sorted(result.failures.items())]
    if result.report_error is not None:
        failed.append(("report", *result.report_error))
    for what, path, error in failed:
        where = path if path is not None else "none (the kernel did not run)"
        print(f"{what} failed: {error}\n  executed notebook: {where}", file=sys.stderr)
    return 1


def cluster_from_args(args: argparse.Namespace) -> ClusterConfig:
    """The :class:`ClusterConfig` of the command line's executor options (``--cluster-config`` first, then the
    options given)."""
    return load_cluster_config(
        args.cluster_config, executor=args.executor, partition=args.partition, time_min=args.time_min,
        gpus=args.gpus, cpus=args.cpus, mem_gb=args.mem_gb, wait=False if args.no_wait else None,
    )
