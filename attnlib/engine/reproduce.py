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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

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
    attempt,
    check_counts,
    cluster_from_args,
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
    """Run every ``notebooks_dir/*.ipynb`` in name order: sweep notebooks through :func:`sweep`, others once.

    A name in ``parameters`` must be assigned by the parameters cell of at least one notebook (else
    :class:`attnlib.UsageError`, before anything runs); each notebook gets the names its cell assigns and
    no others (``profile`` and ``seeds`` included); every kernel gets ``$ATTNLIB_PROFILE``, and a report pass
    or run-once execution ``$ATTNLIB_OUTPUT_DIR``. Executed notebooks go under
    ``<out_root or runs_dir()>/notebooks/`` as :func:`notebook_out_dir` says (a run-once notebook into
    ``<stem>_seeds-<seeds>.ipynb``). A failure does not stop the other notebooks. ``out_root/summary.md``
    and ``summary.csv`` are rewritten after each notebook from what is on disk, ``summary.md`` headed by
    ``digest(rows, out_root)`` when given (a failing digest is reported there, the table still written);
    returns the summary (columns notebook, kind, status, folder, executed, report, wall_s, errors: status
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
    rows: list[dict[str, Any]] = []
    for notebook in notebooks:
        run = _Reproduction(notebook, profile, list(seeds), passed, jobs, threads, out_root, progress, cluster)
        rows.append(run.row(declared[notebook]))
        summary = pd.DataFrame(rows)
        _write_summary(out_root, summary, profile, list(seeds), threads, digest, store_root)
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
    cluster: ClusterConfig | None = None

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
                       parameters=without_seeds(params), profile=self.profile, root=self.out_root,
                       progress=self.progress, cluster=self.cluster)
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

    def _once(self, declared: DeclaredParameters, params: dict[str, Any]) -> dict[str, Any]:
        params = non_default(declared, params)
        kernel, _ = kernel_for(self.notebook, None)
        out_dir = notebook_out_dir(self.notebook, self.profile, params, self.out_root)
        reserve_out_dir(out_dir, self.notebook, self.profile, params)
        (out_dir / CLAIMS_FILE).unlink(missing_ok=True)  # from an earlier execution
        name = self.notebook.stem + (f"_seeds-{seeds_label(self.seeds)}" if "seeds" in params else "")
        digest = notebook_sha256(self.notebook)
        options = {"kernel_name": kernel, "execution_timeout": None, "start_retries": 2,
                   "threads": self.threads, "env": kernel_env(self.profile, out_dir)}
        outcome = attempt(Job(self.notebook, out_dir / f"{name}.ipynb", params, digest, options))
        ok = outcome.error is None and is_done(out_dir / f"{name}.ipynb", params, digest)
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
