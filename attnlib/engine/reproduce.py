"""Run every notebook of a folder (sweep notebooks through :func:`attnlib.engine.sweep.sweep`, others
once) and write ``summary.md`` / ``summary.csv``.

``summary.md`` opens with a results digest when the caller passes one (``digest``: the command line passes
:func:`attnlib.reporting.digest.summary_digest`, which reads each notebook's ``claims.json``; this module
sits below reporting and does not import it), then the table of every notebook's status, files and times.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from attnlib import UsageError
from attnlib.core.io import atomic_write_text
from attnlib.core.paths import runs_dir
from attnlib.core.profiles import DEFAULT as DEFAULT_PROFILE
from attnlib.core.profiles import ENV_VAR as PROFILE_ENV
from attnlib.core.profiles import check_profile
from attnlib.engine.launch import ClusterConfig
from attnlib.engine.timings import WORDS as TIMING_WORDS
from attnlib.engine.timings import minutes_table, notebook_timings
from attnlib.engine.notebook_params import (
    IMPLICIT,
    DeclaredParameters,
    declared_parameters,
    did_you_mean,
    is_sweep_notebook,
    jsonable,
    non_default,
    notebook_out_dir,
    notebook_sha256,
    parse_parameters,
    seeds_label,
    without_seeds,
)
from attnlib.engine.sweep import (
    Job,
    Outcome,
    SweepPlan,
    SweepResult,
    attempt,
    check_counts,
    cluster_from_args,
    execute_jobs,
    plan_sweep,
    warn_oversubscribed,
    is_done,
    kernel_env,
    kernel_for,
    reserve_out_dir,
    sweep,
)
from attnlib.reporting.digest import CLAIMS_FILE

log = logging.getLogger(__name__)

#: Renders the digest at the top of ``summary.md`` from the summary rows (one dict per notebook, the
#: columns of :func:`reproduce_all`) and the folder of ``summary.md`` (for relative links).
Digest = Callable[[Sequence[Mapping[str, Any]], Path], str]


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
    digest: Digest | None = None,
    cluster: ClusterConfig | None = None,
) -> pd.DataFrame:
    """Run every ``notebooks_dir/*.ipynb``: sweep notebooks over the seeds then their report, others once.

    Locally, every notebook's seed passes and run-once executions share one pool of ``jobs`` processes (the
    next notebook's seeds start as soon as a process is free, so no core idles while a notebook's last seed
    runs), then the reports of the notebooks whose seeds all succeeded share it; numbers do not depend on
    the order. With a cluster executor the notebooks run one after the other through :func:`sweep`.

    A name in ``parameters`` must be assigned by the parameters cell of at least one notebook (else
    :class:`attnlib.UsageError`, before anything runs); each notebook gets the names its cell assigns and
    no others (``profile`` and ``seeds`` included); every kernel gets ``$ATTNLIB_PROFILE``, and a report pass
    or run-once execution ``$ATTNLIB_OUTPUT_DIR``. Executed notebooks go under
    ``<out_root or runs_dir()>/notebooks/`` as :func:`notebook_out_dir` says (a run-once notebook into
    ``<stem>_seeds-<seeds>.ipynb``). A failure does not stop the other notebooks. ``out_root/summary.md``
    and ``summary.csv`` are written at the end (after each notebook with a cluster executor), ``summary.md`` headed by
    ``digest(rows, out_root)`` when given (a failing digest is reported there, the table still written);
    returns the summary (columns notebook, kind, status, folder, executed, report, wall_s (the sum of the
    notebook's executions' wall times in this pass), errors: status
    "ok" when this pass had no error and every notebook it names is marked done, else "failed"; executed
    and report name files of folder that exist). ``cluster``: where the sweeps' seeds run
    (:func:`attnlib.engine.sweep.sweep`; run-once notebooks run here); a sweep whose seeds were submitted
    without waiting has status "submitted".
    """
    check_profile(profile)
    folder = Path(notebooks_dir)
    notebooks = sorted(folder.glob("*.ipynb"))
    if not notebooks:
        raise UsageError(f"{folder}: no notebooks (*.ipynb)")
    check_counts(jobs, threads)
    passed = jsonable(parameters or {})
    implicit = [name for name in IMPLICIT if name in passed]
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
            f"{did_you_mean(unknown[0], known)}; their parameters: {', '.join(known)}"
        )
    out_root = Path(out_root) if out_root is not None else runs_dir()
    store_root = Path(passed.get("results_folder") or runs_dir() / "store")
    runs = [_Reproduction(notebook, profile, list(seeds), passed, jobs, threads, out_root, progress, cluster)
            for notebook in notebooks]
    if cluster is not None and cluster.submitit:  # one array per notebook, its report when its seeds are done
        rows: list[dict[str, Any]] = []
        for run in runs:
            rows.append(run.row(declared[run.notebook]))
            _write_summary(out_root, pd.DataFrame(rows), profile, list(seeds), threads, digest, store_root)
        return pd.DataFrame(rows)
    for run in runs:
        run.plan(declared[run.notebook])
    _pool([(run, job) for run in runs for job in run.jobs()], jobs, threads, out_root, "executions", progress)
    _pool([(run, job) for run in runs if (job := run.report_job()) is not None], jobs, threads, out_root, "reports",
          progress)
    summary = pd.DataFrame([run.finish() for run in runs])
    _write_summary(out_root, summary, profile, list(seeds), threads, digest, store_root)
    return summary


def _pool(work: Sequence[tuple[_Reproduction, Job]], workers: int, threads: int, out_root: Path, what: str,
          progress: bool) -> None:
    """Run every notebook's executions in one pool of ``workers`` processes (the next notebook's seeds start as
    soon as a process is free; results do not depend on the order) and hand each outcome to its notebook."""
    owner = {id(job): run for run, job in work}
    jobs = [job for _, job in work]
    warn_oversubscribed(min(workers, len(jobs)), threads)
    with logging_redirect_tqdm(), tqdm(total=len(jobs), desc=what, unit="notebook", disable=not progress) as bar:
        for job, outcome in execute_jobs(jobs, workers, None, out_root, what):
            owner[id(job)].record(outcome)
            bar.update()


@dataclass
class _Reproduction:
    """One notebook of :func:`reproduce_all`: planned (:meth:`plan`), its executions run in the shared pool
    (:meth:`jobs`, :meth:`report_job`, :meth:`record`), then its summary row (:meth:`finish`); with a cluster
    executor, :meth:`row` runs it through :func:`sweep` alone."""

    notebook: Path
    profile: str
    seeds: list[int]
    passed: dict[str, Any]
    workers: int
    threads: int
    out_root: Path
    progress: bool
    cluster: ClusterConfig | None = None
    _row: dict[str, Any] = field(default_factory=dict)
    _sweep: SweepPlan | None = None
    _once: Job | None = None
    _outcomes: list[Outcome] = field(default_factory=list)

    def _params(self, declared: DeclaredParameters | str) -> dict[str, Any] | None:
        """The summary row's start, and the parameters this notebook gets (None when it cannot run)."""
        self._row = {"notebook": self.notebook.name, "kind": "", "status": "failed", "folder": "",
                     "executed": "", "report": "", "wall_s": 0.0, "errors": ""}
        if isinstance(declared, str):
            self._row["errors"] = declared
            return None
        given = {**self.passed, "profile": self.profile, "seeds": self.seeds}
        params = {name: value for name, value in given.items() if name in declared.names}
        left_out = sorted(set(self.passed) - set(params))
        if left_out:
            log.info("%s: not passing %s (not in its parameters cell)", self.notebook.name, ", ".join(left_out))
        self._row["kind"] = "sweep" if is_sweep_notebook(self.notebook) else "once"
        return params

    def plan(self, declared: DeclaredParameters | str) -> None:
        """Check the notebook and list its executions (a usage error becomes the row's error)."""
        params = self._params(declared)
        if params is None:
            return
        try:
            if self._row["kind"] == "sweep":
                self._sweep = plan_sweep(self.notebook, self.seeds, threads=self.threads,
                                         parameters=without_seeds(params), profile=self.profile, root=self.out_root)
            else:
                self._once = self._once_job(declared, params)
        except UsageError as err:  # e.g. a sweep notebook without seeds, an unknown kernel
            self._row["errors"] = str(err)

    def jobs(self) -> list[Job]:
        """The executions to run in the first pool: pending seeds, or the run-once execution."""
        if self._sweep is not None:
            return list(self._sweep.pending)
        return [self._once] if self._once is not None else []

    def report_job(self) -> Job | None:
        """The report pass, once every seed succeeded (None before, or for a run-once notebook)."""
        if self._sweep is None or self._sweep.result.failures:
            return None
        return self._sweep.report_job()

    def record(self, outcome: Outcome) -> None:
        self._outcomes.append(outcome)
        if self._sweep is not None:
            self._sweep.record(outcome)

    def finish(self) -> dict[str, Any]:
        """The summary row (wall_s: the sum of this pass's executions' wall times)."""
        row = dict(self._row)
        row["wall_s"] = round(sum(o.wall_s for o in self._outcomes), 1)
        if self._sweep is not None:
            row.update(self._sweep_row(self._sweep.result))
        elif self._once is not None:
            row.update(self._once_row(self._once, self._outcomes[-1] if self._outcomes else None))
        return row

    def row(self, declared: DeclaredParameters | str) -> dict[str, Any]:
        """Run the notebook alone through :func:`sweep` (cluster executors) or here (run-once); its row."""
        start = time.perf_counter()
        params = self._params(declared)
        row = dict(self._row)
        if params is None:
            return row
        try:
            if row["kind"] == "sweep":
                result = sweep(self.notebook, self.seeds, jobs=self.workers, threads=self.threads,
                               parameters=without_seeds(params), profile=self.profile, root=self.out_root,
                               progress=self.progress, cluster=self.cluster)
                row.update(self._sweep_row(result))
            else:
                job = self._once_job(declared, params)
                row.update(self._once_row(job, attempt(job)))
        except UsageError as err:
            row["errors"] = str(err)
        row["wall_s"] = round(time.perf_counter() - start, 1)
        return row

    def _sweep_row(self, result: SweepResult) -> dict[str, Any]:
        failed = [(f"seed {seed}", *failure) for seed, failure in sorted(result.failures.items())]
        if result.report_error is not None:
            failed.append(("report", *result.report_error))
        errors = [f"{what}: {_failure(path, error)}" for what, path, error in failed]
        finals = [result.seed_path(seed) for seed in self.seeds]
        waiting = not errors and (result.submitted or result.in_flight)
        return {
            "status": "submitted" if waiting else "ok" if not errors and result.done_on_disk() else "failed",
            "folder": str(result.out_dir),
            "executed": _existing_names(finals),
            "report": _existing_names([result.report_path]),
            "errors": "; ".join(errors),
        }

    def _once_job(self, declared: DeclaredParameters, params: dict[str, Any]) -> Job:
        params = non_default(declared, params)
        kernel, _ = kernel_for(self.notebook, None)
        out_dir = notebook_out_dir(self.notebook, self.profile, params, self.out_root)
        reserve_out_dir(out_dir, self.notebook, self.profile, params)
        (out_dir / CLAIMS_FILE).unlink(missing_ok=True)  # from an earlier execution
        name = self.notebook.stem + (f"_seeds-{seeds_label(self.seeds)}" if "seeds" in params else "")
        options = {"kernel_name": kernel, "execution_timeout": None, "start_retries": 2,
                   "threads": self.threads, "env": kernel_env(self.profile, out_dir)}
        return Job(self.notebook, out_dir / f"{name}.ipynb", params, notebook_sha256(self.notebook), options)

    @staticmethod
    def _once_row(job: Job, outcome: Outcome | None) -> dict[str, Any]:
        error = "the execution did not run" if outcome is None else outcome.error
        ok = error is None and is_done(job.final, job.parameters, job.notebook_sha256)
        return {
            "status": "ok" if ok else "failed",
            "folder": str(job.final.parent),
            "executed": _existing_names([job.final]),
            "errors": "" if error is None else _failure(outcome.path if outcome else None, error),
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


def _digest_text(digest: Digest, summary: pd.DataFrame, out_root: Path) -> str:
    """The digest's markdown; a failing digest becomes one line, so the table is still written."""
    try:
        return digest(summary.to_dict("records"), out_root).rstrip("\n") + "\n\n"
    except Exception as err:  # a bug in the digest must not cost the summary of a long run
        log.exception("results digest failed")
        return f"## Results\n\nno digest: {type(err).__name__}: {err}\n\n"


def _write_summary(
    out_root: Path, summary: pd.DataFrame, profile: str, seeds: list[int], threads: int,
    digest: Digest | None = None, store_root: Path | None = None,
) -> None:
    atomic_write_text(out_root / "summary.csv", summary.to_csv(index=False))
    title = f"# attnlib reproduce: profile {profile}, seeds {seeds}, {threads} threads per run\n\n"
    head = _digest_text(digest, summary, out_root) + "## Runs\n\n" if digest is not None else ""
    atomic_write_text(out_root / "summary.md", title + head + _markdown_table(summary) + _timings_text(
        out_root, store_root or runs_dir() / "store", summary["notebook"]))


def _timings_text(out_root: Path, store_root: Path, notebooks: pd.Series) -> str:
    """summary.md's "Where the time went" section (:mod:`attnlib.engine.timings`), also written to timings.csv."""
    frame = notebook_timings(out_root, store_root)
    frame = frame[frame["notebook"].isin({Path(name).stem for name in notebooks})]
    if frame.empty:
        return ""
    atomic_write_text(out_root / "timings.csv", frame.to_csv(index=False))
    words = "".join(f"- `{column}`: {text}\n" for column, text in TIMING_WORDS.items())
    return "\n## Where the time went\n\n" + _markdown_table(minutes_table(frame)) + "\n" + words


def reproduce_command(args: argparse.Namespace) -> int:
    """``attnlib reproduce``: run every notebook; print the failures and the summary's path (exit 1 when a
    notebook failed). ``args.digest``, when there, heads summary.md (see :func:`reproduce_all`)."""
    out_root = args.out if args.out is not None else runs_dir()
    profile = args.profile or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    summary = reproduce_all(args.notebooks, profile=profile, seeds=args.seeds, jobs=args.jobs,
                            threads=args.threads, out_root=out_root,
                            parameters=parse_parameters(args.parameters), digest=getattr(args, "digest", None),
                            cluster=cluster_from_args(args))
    failed = summary[~summary["status"].isin(["ok", "submitted"])]
    for row in failed.itertuples(index=False):
        print(f"{row.notebook} failed: {row.errors}", file=sys.stderr)
    print(out_root / "summary.md")
    return 1 if len(failed) else 0
