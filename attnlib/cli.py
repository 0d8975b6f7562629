"""The ``attnlib`` command line: every sub-command's options, and the dispatch to its handler.

``attnlib data generate | verify | split`` (handlers in :mod:`attnlib.data.commands`), ``attnlib sweep``
(:mod:`attnlib.engine.sweep`) and ``attnlib reproduce`` (:mod:`attnlib.engine.reproduce`, with the results
digest of :mod:`attnlib.reporting.digest`). This module imports only the standard library and
:class:`attnlib.UsageError` at module level; building the parser adds two modules that import only the
standard library (:mod:`attnlib.data.commands` for the dataset names, :mod:`attnlib.engine.notebook_params`
for the seeds), and a handler is imported when its command runs, so ``--help`` and argument errors are
instant (``tests/test_cli.py`` checks that nothing heavy is imported). The help texts are plain text: the
description is :data:`DESCRIPTION`, not this docstring.

A bad choice (unknown profile, notebook, parameter, kernel) is one line on stderr and exit code 2; so is
a bad option or value (argparse's usage line, then the error).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from attnlib import UsageError

DESCRIPTION = (
    "Human-attention supervision for CNNs, reproduced. 'attnlib data' generates, verifies and splits "
    "datasets; 'attnlib sweep' runs one notebook once per seed, then its report; 'attnlib reproduce' runs "
    "every notebook of a folder and writes summary.md (results digest first) and summary.csv; 'attnlib train' "
    "trains a study's runs without notebooks (locally, on Slurm through submitit, or under torchrun)."
)
_PROFILES_DIR = Path(__file__).parent / "core" / "profiles"


def _profiles() -> str:
    """The profile names (the YAML files beside attnlib.core.profiles), read without importing it."""
    return " | ".join(sorted(path.stem for path in _PROFILES_DIR.glob("*.yaml"))) or "see attnlib/core/profiles"


def _seeds_arg(text: str) -> list[int]:
    from attnlib.engine.notebook_params import parse_seeds  # standard library only

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


def _results_digest(rows: Sequence[Mapping[str, Any]], root: Path) -> str:
    """The digest heading summary.md (:func:`attnlib.reporting.digest.summary_digest`, imported when used)."""
    from attnlib.reporting.digest import summary_digest

    return summary_digest(rows, root)


def _add_data(sub: argparse._SubParsersAction) -> None:
    from attnlib.data.commands import CUES, DATASETS, GENERATORS, VERIFIABLE  # standard library only

    data = sub.add_parser("data", help="generate, verify and split datasets",
                          description="Generate the synthetic default datasets, verify local copies of the "
                          "real ones against data_manifests/, and write split files.")
    cmds = data.add_subparsers(dest="data_command", required=True)

    gen = cmds.add_parser("generate", help="write the synthetic default dataset in the real layout",
                          description="Write a synthetic default dataset in the layout of the real one.")
    gen.add_argument("dataset", choices=GENERATORS)
    gen.add_argument("--profile", default=None, help=f"{_profiles()} (default: $ATTNLIB_PROFILE or quick)")
    gen.add_argument("--out", type=Path, default=None, help="parent folder (default: <home>/data/synthetic)")
    gen.add_argument("--n-images", type=int, default=None)
    gen.add_argument("--evidence-strength", type=float, default=None)
    gen.add_argument(
        "--cue", choices=sorted({c for cues in CUES.values() for c in cues}), default=None,
        help="egd-cxr: marker_presence | marker_position; structured: corner; finegrained: none (its distractor "
        "is a generator knob)",
    )
    gen.add_argument("--seed", type=int, default=None)
    gen.set_defaults(handler="attnlib.data.commands:generate_command")

    ver = cmds.add_parser("verify", help="check a local copy against data_manifests/ and list every problem",
                          description="Check a local copy of a dataset against data_manifests/ and list "
                          "every problem; exit 1 when there are errors.")
    ver.add_argument("dataset", choices=VERIFIABLE)
    ver.add_argument(
        "--root", type=Path, required=True,
        help="egd-cxr: the EGD-CXR folder or one with egd-cxr/ and mimic-cxr/; idrid, idrid-lesions: the "
        "unpacked IDRiD folder; jaffe: the TIFFs' folder or its parent (with jaffe/); cub: the folder with "
        "images/, lists/ and annotations-mat/; clickme: a folder of .npz or TFRecord files, or one TFRecord "
        "file",
    )
    ver.add_argument(
        "--mimic-root", type=Path, default=None, help="egd-cxr: MIMIC-CXR root (default: <root>/mimic-cxr)"
    )
    ver.add_argument(
        "--bubbles", type=Path, default=None, help="cub: a bubbles CSV (image,worker,x,y,radius) to check"
    )
    ver.add_argument(
        "--readme", type=Path, default=None,
        help="jaffe: the README with the ratings (default: a README* in the TIFFs' folder or its parent)",
    )
    ver.add_argument(
        "--deep", action="store_true",
        help="also decode every image (and compare mask sizes; clickme: read and decode every record)",
    )
    ver.set_defaults(handler="attnlib.data.commands:verify_command")

    spl = cmds.add_parser("split", help="write a label-balanced 70/10/20 split file",
                          description="Write a label-balanced 70/10/20 split file.")
    spl.add_argument("dataset", choices=DATASETS)
    spl.add_argument("--root", type=Path, required=True)
    spl.add_argument("--seed", type=int, default=0)
    spl.add_argument(
        "--out", type=Path, default=None, help="default: data_manifests/splits/egd_cxr_seed<seed>.csv"
    )
    spl.set_defaults(handler="attnlib.data.commands:split_command")


def _add_common(parser: argparse.ArgumentParser, default_seeds: str) -> None:
    """Options of both sweep and reproduce."""
    parser.add_argument("--profile", default=None,
                        help=f"{_profiles()}: the notebooks' profile parameter and the kernels' "
                        "$ATTNLIB_PROFILE (default: $ATTNLIB_PROFILE or quick)")
    parser.add_argument("--seeds", type=_seeds_arg, default=default_seeds,
                        help="seeds: 0-4, 0,2,5, 3 or 0-2,7 (default %(default)s)")
    parser.add_argument("--jobs", "-j", type=_count_arg, default=1,
                        help="runs in parallel processes (default 1); results do not depend on it")
    parser.add_argument("--threads", type=_count_arg, default=1,
                        help="threads of every run's kernel (default 1); a seed's numbers depend on it, so "
                        "runs meant to be compared use the same value")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], dest="parameters",
                        metavar=("NAME", "VALUE"), help="notebook parameter, value read as YAML (repeatable)")
    _add_cluster(parser)


def _add_cluster(parser: argparse.ArgumentParser) -> None:
    """Where the elements (one per notebook and seed, or study cell and seed) run: local processes or a cluster."""
    from attnlib.engine.launch import EXECUTORS  # standard library only

    group = parser.add_argument_group(
        "cluster", "Send each element to Slurm through submitit (run store and output folders on a shared "
        "file system). Options override those of --cluster-config.")
    group.add_argument("--executor", choices=EXECUTORS, default=None,
                       help="local: --jobs processes here (default); slurm: one job array; submitit-local: "
                       "submitit's local executor (every element a process here at once, to try the cluster path)")
    group.add_argument("--cluster-config", type=Path, default=None, metavar="YAML",
                       help="a YAML mapping of executor, partition, time_min, gpus, cpus, mem_gb, "
                       "array_parallelism, slurm (further #SBATCH options), setup (shell lines), wait")
    group.add_argument("--partition", default=None, help="Slurm partition")
    group.add_argument("--time-min", type=_count_arg, default=None, help="wall-clock limit of each element, minutes")
    group.add_argument("--gpus", type=int, default=None, help="GPUs of each element")
    group.add_argument("--cpus", type=_count_arg, default=None, help="CPUs of each element")
    group.add_argument("--mem-gb", type=float, default=None, help="memory of each element, GB")
    group.add_argument("--no-wait", action="store_true",
                       help="submit and return; the same command later collects the finished elements")


def _add_notebooks(sub: argparse._SubParsersAction) -> None:
    from attnlib.engine.notebook_params import DEFAULT_SEEDS  # standard library only

    run = sub.add_parser("sweep", help="run a notebook once per seed, then its report",
                         description="Run NOTEBOOK once per seed (skipping seeds already done), then once "
                         "with all seeds to render the report. The profile may also come as -p profile NAME.")
    run.add_argument("notebook", type=Path)
    _add_common(run, DEFAULT_SEEDS)
    run.add_argument("--out", type=Path, default=None,
                     help="output folder (default: runs/notebooks/<stem>/<profile>-<parameters hash>)")
    run.add_argument("--kernel", default=None, help="Jupyter kernel (default: the notebook's)")
    run.add_argument("--timeout", type=int, default=None, help="per-cell execution time-out in seconds")
    run.set_defaults(handler="attnlib.engine.sweep:sweep_command")

    every = sub.add_parser("reproduce", help="run every notebook of a folder (sweeps and run-once)",
                           description="Run every notebook of a folder in name order and write summary.md "
                           "(a results digest: each paper's claims against this run, then every notebook's "
                           "status, files and times) and summary.csv. A -p parameter goes to the notebooks "
                           "that have it.")
    every.add_argument("--notebooks", type=Path, default=Path("notebooks"),
                       help="folder of notebooks (default %(default)s)")
    _add_common(every, DEFAULT_SEEDS)
    every.add_argument("--out", type=Path, default=None, help="root folder (default: runs/)")
    every.set_defaults(handler="attnlib.engine.reproduce:reproduce_command", digest=_results_digest)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from attnlib.engine.notebook_params import DEFAULT_SEEDS  # standard library only
    from attnlib.papers import STUDIES  # a dict of names, no imports

    train = sub.add_parser(
        "train", help="train a study's runs without notebooks, one element per (scenario, seed)",
        description="Train STUDY's runs into the run store, one element per (scenario, seed), locally or on "
        "Slurm; cells already done are skipped. The notebook's sweep then finds every run stored and only "
        "renders. Under torchrun each run trains with DistributedDataParallel across the ranks.")
    train.add_argument("study", choices=sorted(STUDIES))
    train.add_argument("--profile", default=None, help=f"{_profiles()} (default: $ATTNLIB_PROFILE or quick)")
    train.add_argument("--seeds", type=_seeds_arg, default=DEFAULT_SEEDS,
                       help="seeds: 0-4, 0,2,5, 3 or 0-2,7 (default %(default)s)")
    train.add_argument("--scenario", action="append", default=None, dest="scenarios",
                       help="a scenario to train, e.g. finegrained/decoy (repeatable; default: all of the profile)")
    train.add_argument("--arm", action="append", default=None, dest="arms",
                       help="an arm to train (repeatable; default: all of the profile)")
    train.add_argument("--jobs", "-j", type=_count_arg, default=1,
                       help="local executor: elements in parallel processes (default 1)")
    train.add_argument("--threads", type=_count_arg, default=1,
                       help="torch threads of every element (default 1); numbers depend on it")
    train.add_argument("--results-folder", type=Path, default=None, help="run store (default: runs/store)")
    train.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when present)")
    train.add_argument("-p", "--option", nargs=2, action="append", default=[], dest="options",
                       metavar=("NAME", "VALUE"), help="option of the study, as its notebook passes it (e.g. "
                       "data_root PATH, dataset NAME), value read as YAML (repeatable)")
    _add_cluster(train)
    train.set_defaults(handler="attnlib.engine.cells:train_command", studies=STUDIES)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; each command's ``handler`` is ``"module:function"``, imported by
    :func:`main` when the command runs."""
    parser = argparse.ArgumentParser(prog="attnlib", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data(sub)
    _add_notebooks(sub)
    _add_train(sub)
    return parser


def _handler(spec: str) -> Callable[[argparse.Namespace], int | None]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``attnlib`` console script; returns the process exit code (2: usage error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(_handler(args.handler)(args) or 0)
    except UsageError as err:
        print(f"attnlib: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
