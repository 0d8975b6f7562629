"""Run parameterized notebooks headless with papermill: once per seed, then one report pass.

A notebook that trains models says so in its metadata, ``metadata["attnlib"] = {"sweep": true}``; its
cell tagged ``parameters`` declares ``profile``, ``data_root``, ``seeds`` and ``device``. :func:`sweep`
executes it once per seed (``seeds=[s]``, seeds in parallel processes), marks each finished seed with
``seed_<s>.done.json`` so that a rerun skips it, and when every seed succeeded executes it once more with
all the seeds into ``report.ipynb``: the notebook then finds every seed's run in the run store and only
renders. :func:`reproduce_all` does this for a folder of notebooks (other notebooks run once).

Kernels: the notebooks' ``python3`` kernel is ipykernel's spec installed in the venv, whose command is
plain ``python``, which jupyter_client replaces by ``sys.executable``, so kernels run in the caller's
Python even from a shell where the venv is not activated. :func:`run_notebook` warns when the kernel it
resolves lives elsewhere.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import papermill
import yaml
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from attnlib._io import atomic_write_json, atomic_write_text
from attnlib.paths import runs_dir

log = logging.getLogger(__name__)

DEFAULT_PROFILE = "quick"
DEFAULT_SEEDS = "0-4"
START_BACKOFF_S = 1.0
"""Seconds before the first kernel-start retry; the n-th retry waits n times as long."""

_SEED_PART = re.compile(r"(\d+)(?:-(\d+))?")
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_PLAIN_PYTHON = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}


class KernelStartError(RuntimeError):
    """The notebook's kernel did not start, retries included."""


@dataclass
class SweepResult:
    """What :func:`sweep` did.

    ``executed``: seeds run now -> executed notebook; ``skipped``: seeds already done; ``failures``:
    seed -> (executed notebook holding the error, error text); ``report``: the report notebook, or None
    when a seed failed or the report pass failed (then ``report_error`` says why, like ``failures``).
    """

    out_dir: Path
    executed: dict[int, Path] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    failures: dict[int, tuple[Path, str]] = field(default_factory=dict)
    report: Path | None = None
    report_error: tuple[Path, str] | None = None

    @property
    def ok(self) -> bool:
        """Every seed succeeded and the report was rendered."""
        return not self.failures and self.report is not None

    @property
    def notebooks(self) -> dict[int, Path]:
        """Every seed's executed notebook: run now, done before, or failed."""
        paths = {seed: self.out_dir / f"seed_{seed}.ipynb" for seed in self.skipped}
        paths.update(self.executed)
        paths.update({seed: path for seed, (path, _) in self.failures.items()})
        return dict(sorted(paths.items()))


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
    """The profile: ``parameters["profile"]``, else ``$ATTNLIB_PROFILE``, else ``"quick"``."""
    if parameters and parameters.get("profile"):
        return str(parameters["profile"])
    return os.environ.get("ATTNLIB_PROFILE") or DEFAULT_PROFILE


def notebook_out_dir(notebook: Path, profile: str, root: Path | None = None) -> Path:
    """Where a notebook's executions go: ``<root or runs_dir()>/notebooks/<stem>/<profile>``."""
    return (root if root is not None else runs_dir()) / "notebooks" / Path(notebook).stem / profile


def is_sweep_notebook(notebook: Path) -> bool:
    """Whether the notebook declares ``metadata["attnlib"]["sweep"]`` true (it trains one run per seed)."""
    nb = nbformat.read(Path(notebook), as_version=4)
    return bool(nb.metadata.get("attnlib", {}).get("sweep", False))


def notebook_sha256(notebook: Path) -> str:
    """SHA-256 of the notebook file's bytes."""
    return hashlib.sha256(Path(notebook).read_bytes()).hexdigest()


def _kernel_for(notebook: Path, kernel_name: str | None) -> str:
    """The kernel that will run ``notebook``; unknown kernels fail here, without start retries."""
    name = kernel_name or nbformat.read(notebook, as_version=4).metadata.get("kernelspec", {}).get("name")
    if not name:
        raise ValueError(f"{notebook}: no kernelspec in the notebook metadata and no kernel name given")
    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel as err:
        raise ValueError(f"{notebook}: no Jupyter kernel named {name!r} (`jupyter kernelspec list`)") from err
    command = spec.argv[0] if spec.argv else ""
    if (
        spec.language.lower() == "python"
        and command not in _PLAIN_PYTHON
        and Path(command).parent != Path(sys.executable).parent
    ):
        log.warning(
            "%s: kernel %r (%s) runs %s, not this Python (%s); install ipykernel's spec into this "
            "environment (`%s -m ipykernel install --sys-prefix`) or pass a kernel name",
            notebook.name, name, spec.resource_dir, command, sys.executable, sys.executable,
        )
    return name


def run_notebook(
    notebook: Path,
    out_path: Path,
    parameters: Mapping[str, Any],
    *,
    kernel_name: str | None = None,
    execution_timeout: int | None = None,
    start_retries: int = 2,
) -> Path:
    """Execute ``notebook`` once with papermill into ``out_path``, working directory the notebook's folder.

    A failure before the kernel is ready (kernel died before replying to kernel_info, port race, start
    time-out) is retried up to ``start_retries`` times; past that it raises :class:`KernelStartError`.
    A failing cell raises ``papermill.PapermillExecutionError`` at once (papermill has written the
    executed notebook, error included, to ``out_path``); so does any failure once the kernel is up.
    """
    notebook = Path(notebook).resolve()
    out_path = Path(out_path)
    if not notebook.is_file():
        raise FileNotFoundError(f"{notebook}: notebook not found")
    name = _kernel_for(notebook, kernel_name)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    attempt = 0
    while True:
        started = threading.Event()
        try:
            papermill.execute_notebook(
                notebook,
                out_path,
                parameters=dict(parameters),
                kernel_name=name,
                cwd=notebook.parent,
                execution_timeout=execution_timeout,
                progress_bar=False,
                on_notebook_start=lambda **_: started.set(),
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


def _try_run(notebook: Path, out_path: Path, parameters: Mapping[str, Any], **options: Any) -> str | None:
    """:func:`run_notebook`, returning the error text instead of raising (None on success)."""
    try:
        run_notebook(notebook, out_path, parameters, **options)
    except Exception as err:  # any failure of one execution is recorded; the sweep goes on
        log.error("%s -> %s failed: %s", notebook.name, out_path, _error_text(err))
        return _error_text(err)
    return None


@dataclass(frozen=True)
class _SeedJob:
    notebook: Path
    seed: int
    out_path: Path
    marker: Path
    parameters: dict[str, Any]
    notebook_sha256: str
    options: dict[str, Any]


@dataclass(frozen=True)
class _SeedOutcome:
    seed: int
    path: Path
    error: str | None


def _is_done(job: _SeedJob) -> bool:
    """The seed finished before with the same parameters and the same notebook."""
    if not (job.marker.is_file() and job.out_path.is_file()):
        return False
    try:
        marker = json.loads(job.marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("%s: unreadable done marker (%s); running the seed again", job.marker, err)
        return False
    return marker.get("notebook_sha256") == job.notebook_sha256 and marker.get("parameters") == job.parameters


def _run_seed(job: _SeedJob) -> _SeedOutcome:
    """Execute one seed and mark it done (runs in a worker process when jobs > 1)."""
    job.marker.unlink(missing_ok=True)
    start = time.perf_counter()
    error = _try_run(job.notebook, job.out_path, job.parameters, **job.options)
    if error is None:
        atomic_write_json(
            job.marker,
            {
                "notebook": str(job.notebook),
                "notebook_sha256": job.notebook_sha256,
                "seed": job.seed,
                "parameters": job.parameters,
                "executed": str(job.out_path),
                "wall_s": round(time.perf_counter() - start, 3),
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )
    return _SeedOutcome(job.seed, job.out_path, error)


class _Relay(logging.Handler):
    """Hands records logged in worker processes to this process's loggers."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


#: Thread-pool sizes a kernel inherits; parallel kernels that each spin up one thread per core
#: oversubscribe the CPU (measured: a 0.5 s ResNet-18 epoch took 20 s with two kernels on 2 cores).
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _init_worker(queue: Any, level: int, threads: int) -> None:
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(queue)]
    root.setLevel(level)
    for var in THREAD_ENV_VARS:
        os.environ.setdefault(var, str(threads))


def _execute(jobs: Sequence[_SeedJob], workers: int) -> Iterator[_SeedOutcome]:
    """Run the seeds, in this process when one worker suffices, else in ``workers`` spawned processes."""
    workers = min(workers, len(jobs))
    if workers <= 1:
        yield from map(_run_seed, jobs)
        return
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    listener = logging.handlers.QueueListener(queue, _Relay())
    listener.start()
    try:
        with cf.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker,
            initargs=(queue, logging.getLogger().getEffectiveLevel(), max(1, (os.cpu_count() or 1) // workers)),
        ) as pool:
            futures = {pool.submit(_run_seed, job): job for job in jobs}
            for future in cf.as_completed(futures):
                job = futures[future]
                try:
                    yield future.result()
                except Exception as err:  # the worker process itself died (killed, out of memory)
                    yield _SeedOutcome(job.seed, job.out_path, f"worker process failed: {_error_text(err)}")
    finally:
        listener.stop()


def _jsonable(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as the notebook and the done marker see them (paths as text, tuples as lists)."""
    return json.loads(json.dumps(dict(parameters), default=str))


def sweep(
    notebook: Path,
    seeds: Sequence[int],
    *,
    jobs: int = 1,
    parameters: Mapping[str, Any] | None = None,
    out_dir: Path | None = None,
    kernel_name: str | None = None,
    execution_timeout: int | None = None,
    start_retries: int = 2,
    progress: bool = True,
) -> SweepResult:
    """Execute ``notebook`` once per seed into ``out_dir/seed_<s>.ipynb``, then the report pass.

    ``parameters`` go to every execution with ``seeds=[s]`` (``profile`` defaults as in
    :func:`resolve_profile`); ``out_dir`` defaults to :func:`notebook_out_dir`. Seeds already done with
    the same parameters and notebook are skipped; up to ``jobs`` seeds run in parallel processes. When
    every seed succeeded, ``out_dir/report.ipynb`` is executed with all the seeds.
    """
    notebook = Path(notebook).resolve()
    if not notebook.is_file():
        raise FileNotFoundError(f"{notebook}: notebook not found")
    seeds = list(dict.fromkeys(int(seed) for seed in seeds))
    if not seeds:
        raise ValueError(f"{notebook}: no seeds to run")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    params = _jsonable({**(parameters or {}), "profile": resolve_profile(parameters)})
    out_dir = Path(out_dir) if out_dir is not None else notebook_out_dir(notebook, params["profile"])
    options = {"kernel_name": kernel_name, "execution_timeout": execution_timeout,
               "start_retries": start_retries}
    digest = notebook_sha256(notebook)
    result = SweepResult(out_dir=out_dir)
    pending = []
    for seed in seeds:
        job = _SeedJob(
            notebook, seed, out_dir / f"seed_{seed}.ipynb", out_dir / f"seed_{seed}.done.json",
            {**params, "seeds": [seed]}, digest, options,
        )
        if _is_done(job):
            log.info("%s seed %d: done before (%s), skipped", notebook.name, seed, job.marker)
            result.skipped.append(seed)
        else:
            pending.append(job)
    log.info("%s: %d seeds to run, %d done, %d jobs, into %s", notebook.name, len(pending),
             len(result.skipped), jobs, out_dir)
    with logging_redirect_tqdm(), tqdm(
        total=len(seeds), initial=len(result.skipped), desc=notebook.stem, unit="seed", disable=not progress
    ) as bar:
        for outcome in _execute(pending, jobs):
            if outcome.error is None:
                result.executed[outcome.seed] = outcome.path
            else:
                result.failures[outcome.seed] = (outcome.path, outcome.error)
            bar.update()
    if result.failures:
        log.error("%s: seeds %s failed; no report", notebook.name, sorted(result.failures))
        return result
    report = out_dir / "report.ipynb"
    error = _try_run(notebook, report, {**params, "seeds": seeds}, **options)
    if error is None:
        result.report = report
        log.info("%s: report %s", notebook.name, report)
    else:
        result.report_error = (report, error)
    return result


def reproduce_all(
    notebooks_dir: Path,
    *,
    profile: str,
    seeds: Sequence[int],
    jobs: int = 1,
    out_root: Path | None = None,
    parameters: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run every ``notebooks_dir/*.ipynb`` in name order: sweep notebooks through :func:`sweep`, others once.

    Executed notebooks go under ``<out_root or runs_dir()>/notebooks/<stem>/<profile>/`` (a run-once
    notebook into ``<stem>.ipynb``, with all ``seeds``). A failure does not stop the other notebooks.
    ``out_root/summary.md`` and ``summary.csv`` are rewritten after each notebook; returns the summary
    (columns notebook, kind, status, executed, report, wall_s, errors; status "ok" or "failed").
    """
    notebooks = sorted(Path(notebooks_dir).glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"{notebooks_dir}: no notebooks (*.ipynb)")
    out_root = Path(out_root) if out_root is not None else runs_dir()
    params = {**(parameters or {}), "profile": profile}
    seeds = list(seeds)
    rows: list[dict[str, Any]] = []
    for notebook in notebooks:
        out_dir = notebook_out_dir(notebook, profile, out_root)
        rows.append(_reproduce_one(notebook, out_dir, params, seeds, jobs, progress))
        summary = pd.DataFrame(rows)
        _write_summary(out_root, summary, profile, seeds)
    return summary


def _reproduce_one(
    notebook: Path, out_dir: Path, params: dict[str, Any], seeds: list[int], jobs: int, progress: bool
) -> dict[str, Any]:
    start = time.perf_counter()
    row: dict[str, Any] = {"notebook": notebook.name, "kind": "", "status": "failed", "executed": "",
                           "report": "", "wall_s": 0.0, "errors": ""}
    try:
        row["kind"] = "sweep" if is_sweep_notebook(notebook) else "once"
    except (OSError, ValueError) as err:
        row["errors"] = f"{notebook}: not a readable notebook: {err}"
    if row["kind"] == "sweep":
        result = sweep(notebook, seeds, jobs=jobs, parameters=params, out_dir=out_dir, progress=progress)
        row["executed"] = "; ".join(str(path) for path in result.notebooks.values())
        row["report"] = str(result.report or "")
        errors = [f"seed {seed}: {error} ({path})" for seed, (path, error) in sorted(result.failures.items())]
        if result.report_error is not None:
            errors.append(f"report: {result.report_error[1]} ({result.report_error[0]})")
        row["status"] = "ok" if result.ok else "failed"
        row["errors"] = "; ".join(errors)
    elif row["kind"] == "once":
        executed = out_dir / f"{notebook.stem}.ipynb"
        error = _try_run(notebook, executed, {**params, "seeds": seeds})
        row["executed"] = str(executed)
        row["status"] = "ok" if error is None else "failed"
        row["errors"] = "" if error is None else f"{error} ({executed})"
    row["wall_s"] = round(time.perf_counter() - start, 1)
    return row


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _write_summary(out_root: Path, summary: pd.DataFrame, profile: str, seeds: list[int]) -> None:
    atomic_write_text(out_root / "summary.csv", summary.to_csv(index=False))
    title = f"# attnlib reproduce: profile {profile}, seeds {seeds}\n\n"
    atomic_write_text(out_root / "summary.md", title + _markdown_table(summary))


def _seeds_arg(text: str) -> list[int]:
    try:
        return parse_seeds(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _jobs_arg(text: str) -> int:
    jobs = int(text)
    if jobs < 1:
        raise argparse.ArgumentTypeError(f"jobs must be at least 1, got {jobs}")
    return jobs


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=_seeds_arg, default=DEFAULT_SEEDS,
                        help="seeds: 0-4, 0,2,5, 3 or 0-2,7 (default %(default)s)")
    parser.add_argument("--jobs", "-j", type=_jobs_arg, default=1, help="seeds run in parallel (default 1)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], dest="parameters",
                        metavar=("NAME", "VALUE"), help="notebook parameter, value read as YAML (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: under the run store)")


def _parameters(pairs: Sequence[Sequence[str]]) -> dict[str, Any]:
    return {name: parse_parameter(value) for name, value in pairs}


def _sweep_command(args: argparse.Namespace) -> int:
    result = sweep(args.notebook, args.seeds, jobs=args.jobs, parameters=_parameters(args.parameters),
                   out_dir=args.out, kernel_name=args.kernel, execution_timeout=args.timeout)
    if result.ok:
        print(result.report)
        return 0
    for seed, (path, error) in sorted(result.failures.items()):
        print(f"seed {seed} failed: {error}\n  executed notebook: {path}", file=sys.stderr)
    if result.report_error is not None:
        path, error = result.report_error
        print(f"report failed: {error}\n  executed notebook: {path}", file=sys.stderr)
    return 1


def _reproduce_command(args: argparse.Namespace) -> int:
    out_root = args.out if args.out is not None else runs_dir()
    summary = reproduce_all(args.notebooks, profile=args.profile, seeds=args.seeds, jobs=args.jobs,
                            out_root=out_root, parameters=_parameters(args.parameters))
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
    run.add_argument("--kernel", default=None, help="Jupyter kernel (default: the notebook's)")
    run.add_argument("--timeout", type=int, default=None, help="per-cell execution time-out in seconds")
    run.set_defaults(handler=_sweep_command)

    every = subparsers.add_parser("reproduce", help="run every notebook of a folder (sweeps and run-once)",
                                  description="Run every notebook of a folder in name order and write "
                                  "summary.md / summary.csv.")
    every.add_argument("--notebooks", type=Path, default=Path("notebooks"),
                       help="folder of notebooks (default %(default)s)")
    every.add_argument("--profile", default=os.environ.get("ATTNLIB_PROFILE") or DEFAULT_PROFILE,
                       help="profile (default $ATTNLIB_PROFILE or quick)")
    _add_common(every)
    every.set_defaults(handler=_reproduce_command)
