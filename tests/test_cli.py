"""Tests of attnlib.cli: the parser imports nothing heavy (so --help and argument errors are instant), help
texts are plain text, handlers resolve, and the exit codes of usage errors."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from attnlib import UsageError, cli

#: Modules that take seconds to import; none may load before a command's handler runs.
HEAVY = ("torch", "numpy", "pandas", "matplotlib", "scipy", "papermill", "nbformat", "IPython", "yaml")

_PROBE = f"""
import contextlib, io, json, sys
import attnlib.cli

parser = attnlib.cli.build_parser()
for argv in (["sweep", "nb.ipynb", "--seeds", "0-2,7", "--profile", "smoke", "-p", "lr", "0.1", "-j", "2"],
             ["reproduce", "--seeds", "0,2", "--threads", "2"],
             ["data", "generate", "egd-cxr", "--cue", "marker_presence"],
             ["data", "verify", "cub", "--root", "x"], ["data", "split", "egd-cxr", "--root", "x"]):
    parser.parse_args(argv)
for argv in (["--help"], ["sweep", "--help"], ["reproduce", "--help"], ["data", "verify", "--help"],
             ["sweep", "nb.ipynb", "--bogus"], ["sweep", "nb.ipynb", "--seeds", "4-2"], ["data", "nope"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            attnlib.cli.main(argv)
        except SystemExit:
            pass
print(json.dumps(sorted(name for name in {list(HEAVY)!r} if name in sys.modules)))
"""


def test_parser_imports_nothing_heavy() -> None:
    """A fresh interpreter builds the parser, parses every command's arguments and prints help and
    argument errors without importing torch, pandas, matplotlib, papermill and the like."""
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _parsers(child)
    return found


def test_help_is_plain_text() -> None:
    """No reStructuredText (double backticks, :func: roles) in anything argparse prints."""
    parsers = _parsers(cli.build_parser())
    assert {p.prog for p in parsers} >= {"attnlib", "attnlib sweep", "attnlib reproduce", "attnlib data verify"}
    for parser in parsers:
        text = parser.format_help()
        assert "``" not in text and not re.search(r":\w+:`", text), parser.prog


def test_every_handler_resolves() -> None:
    handlers = {p.prog: p.get_default("handler") for p in _parsers(cli.build_parser()) if p.get_default("handler")}
    assert set(handlers) == {"attnlib data generate", "attnlib data verify", "attnlib data split", "attnlib sweep",
                             "attnlib reproduce", "attnlib train"}
    for spec in handlers.values():
        module, _, name = spec.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), spec


def test_arguments() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["sweep", "nb.ipynb", "--seeds", "0-2,7", "-p", "lr", "1e-3", "-p", "x", "a b"])
    assert args.seeds == [0, 1, 2, 7] and args.parameters == [["lr", "1e-3"], ["x", "a b"]]
    assert args.profile is None and args.jobs == 1 and args.threads == 1 and args.notebook == Path("nb.ipynb")
    args = parser.parse_args(["reproduce", "--profile", "smoke"])
    assert args.seeds == [0, 1, 2, 3, 4] and args.profile == "smoke" and args.notebooks == Path("notebooks")
    assert args.executor is None and args.cluster_config is None and not args.no_wait
    assert args.digest(  # the reproduce handler gets the results digest from here
        [{"notebook": "a.ipynb", "kind": "once", "status": "ok", "folder": "", "executed": "", "report": ""}],
        Path("."),
    ).startswith("## Results")
    args = parser.parse_args(["train", "benchmark", "--scenario", "cxr/decoy", "--scenario", "cxr/reference",
                              "--executor", "slurm", "--gpus", "1", "--time-min", "30", "-p", "data_root", "/d"])
    assert args.scenarios == ["cxr/decoy", "cxr/reference"] and args.arms is None and args.options == [["data_root", "/d"]]
    assert args.studies[args.study] == "attnlib.papers.benchmark:AttentionBenchmark"
    assert (args.executor, args.gpus, args.time_min, args.partition) == ("slurm", 1, 30, None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["sweep", "nb.ipynb", "--seeds", "4-2"], "argument --seeds: seeds '4-2': range '4-2' is empty"),
     (["reproduce", "--jobs", "0"], "argument --jobs/-j: must be at least 1, got 0"),
     (["sweep", "nb.ipynb", "--bogus"], "unrecognized arguments: --bogus"),
     (["data", "generate", "nope"], "argument dataset: invalid choice: 'nope'")],
)
def test_argument_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_usage_error_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise UsageError(f"unknown profile {args.profile!r}")

    monkeypatch.setattr(cli, "_handler", lambda spec: handler)
    assert cli.main(["sweep", "nb.ipynb", "--profile", "smok"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "attnlib: error: unknown profile 'smok'\n" and captured.out == ""
