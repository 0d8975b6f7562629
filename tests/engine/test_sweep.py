"""Tests of attnlib.engine.sweep, attnlib.engine.reproduce, attnlib.engine.notebook_params and their CLI: seeds,
parameters, usage errors, output layout, kernel environment, start retries (papermill faked) and real headless
sweeps of tests/engine/notebooks/sweep_probe.ipynb, which writes one JSON per seed into ``out_dir``
(trained.log counts trainings) and a summary.json in every pass and its claims in the report pass, and of
tests/engine/notebooks/threads_probe.ipynb, which trains a tiny CNN per seed through the run store."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest
import torch

import attnlib
from attnlib import UsageError
from attnlib.cli import main as cli_main
from attnlib.engine import notebook_params as nbp
from attnlib.engine import reproduce as rp
from attnlib.engine import sweep as sw

PROBE = Path(__file__).parent / "notebooks" / "sweep_probe.ipynb"
THREADS_PROBE = Path(__file__).parent / "notebooks" / "threads_probe.ipynb"
THREAD_VARS = ("ATTNLIB_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: What else the sweep sets in a kernel's environment.
KERNEL_VARS = ("ATTNLIB_TEXT_PROGRESS", "ATTNLIB_PROFILE", "ATTNLIB_OUTPUT_DIR")


def _trained(store: Path) -> list[str]:
    return (store / "trained.log").read_text().split()


def _error_outputs(path: Path) -> list[nbformat.NotebookNode]:
    nb = nbformat.read(path, as_version=4)
    return [out for cell in nb.cells for out in cell.get("outputs", []) if out.output_type == "error"]


def _usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI, expect exit 2 with one line on stderr and no traceback; return that line."""
    assert cli_main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnlib: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


@pytest.mark.parametrize(
    ("text", "seeds"),
    [("0-4", [0, 1, 2, 3, 4]), ("0,2,5", [0, 2, 5]), ("3", [3]), ("0-2,7", [0, 1, 2, 7]),
     (" 5 , 1-2 ", [5, 1, 2]), ("1,1-2", [1, 2]), ("10-11", [10, 11])],
)
def test_parse_seeds(text: str, seeds: list[int]) -> None:
    assert nbp.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a", "4-2", "-1", "1-", "1,,2", "0-4-5", "1.5"])
def test_parse_seeds_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="seeds"):
        nbp.parse_seeds(text)


@pytest.mark.parametrize(
    ("seeds", "label"),
    [([0, 1, 2, 3, 4], "0-4"), ([0, 2, 5], "0_2_5"), ([0, 1, 2, 7], "0-2_7"), ([3], "3"),
     ([5, 1, 2], "5_1-2")],
)
def test_seeds_label(seeds: list[int], label: str) -> None:
    assert nbp.seeds_label(seeds) == label


@pytest.mark.parametrize(
    ("text", "value"),
    [("smoke", "smoke"), ("0.001", 0.001), ("1e-3", 0.001), ("-2.5E+2", -250.0), ("3", 3), ("null", None),
     ("None", None), ("true", True), ("[1, 2]", [1, 2]), ("{lr: 0.1}", {"lr": 0.1}),
     ("2024-01-01", "2024-01-01"), ("/data/egd-cxr", "/data/egd-cxr"), ("a: b: c", "a: b: c")],
)
def test_parse_parameter(text: str, value: object) -> None:
    parsed = nbp.parse_parameter(text)
    assert parsed == value and type(parsed) is type(value)


def test_profile_and_out_dir_keyed_by_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTNLIB_HOME", str(tmp_path))
    monkeypatch.delenv("ATTNLIB_PROFILE", raising=False)
    assert sw.resolve_profile(None) == "quick"
    monkeypatch.setenv("ATTNLIB_PROFILE", "full")
    assert sw.resolve_profile({}) == "full"
    assert sw.resolve_profile({"profile": "smoke"}) == "smoke"
    base = nbp.notebook_out_dir(PROBE, "smoke", {"profile": "smoke"})
    assert base.parent == tmp_path / "runs" / "notebooks" / "sweep_probe"
    assert base.name.startswith("smoke-") and len(base.name) == len("smoke-") + 8
    assert nbp.notebook_out_dir(PROBE, "smoke", {"profile": "smoke", "seeds": [0]}) == base  # seeds: no key
    assert nbp.notebook_out_dir(PROBE, "smoke", {"profile": "smoke", "data_root": "/a"}) != base
    assert nbp.is_sweep_notebook(PROBE)


def _notebook(path: Path, params: str, code: str = "pass", sweep: bool = False) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["attnlib"] = {"sweep": sweep}
    nbformat.write(nb, path)
    return path


def test_declared_parameters_read_with_ast(tmp_path: Path) -> None:
    params = (
        "%matplotlib inline\n"
        "import os\n"
        'profile = os.environ.get("ATTNLIB_PROFILE", "quick")  # smoke | quick; None = "the profile\'s"\n'
        'data_root = None  # real data: a folder (or None = the synthetic default)\n'
        "seeds: list = [0, 1]  # (annotated)\n"
        "lr, momentum = 0.1, 0.9\n"
        "epochs = 3\n"
        "epochs = 2 * epochs  # a later non-literal value: no default\n"
        "if True:\n    nested = 1\n"
    )
    declared = nbp.declared_parameters(_notebook(tmp_path / "nb.ipynb", params))
    assert declared.names == ("profile", "data_root", "seeds", "lr", "momentum", "epochs")
    assert declared.defaults == {"data_root": None, "seeds": [0, 1]}
    assert declared.is_default("data_root", None) and not declared.is_default("data_root", "x")
    assert not declared.is_default("profile", "quick")  # not a literal: no default known
    assert nbp.declared_parameters(_notebook(tmp_path / "none.ipynb", "", "x = 1")).names == ()
    for notebook in sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb")):
        names = nbp.declared_parameters(notebook).names
        assert {"profile", "seeds", "data_root", "device"} <= set(names), notebook.name


class FakePapermill:
    """Stands in for papermill.execute_notebook and records its calls (with the variables of the environment
    a kernel would get that the sweep sets). Each call takes the next queued outcome: None succeeds, an
    exception is raised before the kernel is up, ("started", exception) writes the notebook like papermill
    and is raised after the kernel came up; with none queued the call succeeds."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.outcomes: list[object] = []

    def __call__(self, input_path: Path, output_path: Path, **kwargs: object) -> None:
        env = {var: os.environ.get(var) for var in (*THREAD_VARS, *KERNEL_VARS)}
        self.calls.append({"output": Path(output_path), "env": env, **kwargs})
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, BaseException):
            raise outcome
        kwargs["on_notebook_start"](notebook=None)
        nb = nbformat.v4.new_notebook()
        nb.metadata["call"] = len(self.calls)
        nbformat.write(nb, output_path)
        if outcome is not None:
            raise outcome[1]


@pytest.fixture
def fake_papermill(monkeypatch: pytest.MonkeyPatch) -> FakePapermill:
    fake = FakePapermill()
    monkeypatch.setattr(papermill, "execute_notebook", fake)
    monkeypatch.setattr(sw, "START_BACKOFF_S", 0.0)
    return fake


def _cell_error(ename: str, evalue: str, count: int = 2) -> tuple[str, papermill.PapermillExecutionError]:
    return ("started", papermill.PapermillExecutionError(count, count, "", ename, evalue, []))


def test_kernel_start_failure_is_retried(
    fake_papermill: FakePapermill, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_papermill.outcomes.append(RuntimeError("Kernel died before replying to kernel_info"))
    caplog.set_level(logging.WARNING, logger="attnlib.engine.sweep")
    result = sw.sweep(PROBE, [3], jobs=1, parameters={"profile": "smoke"}, out_dir=tmp_path, progress=False)
    assert result.ok and result.executed == {3: tmp_path / "seed_3.ipynb"}
    assert result.report == tmp_path / "report_seeds-3.ipynb"
    outputs = [call["output"].name for call in fake_papermill.calls]
    assert outputs == ["seed_3.running.ipynb", "seed_3.running.ipynb", "report_seeds-3.running.ipynb"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "parameters.json", "report_seeds-3.done.json", "report_seeds-3.ipynb", "seed_3.done.json",
        "seed_3.ipynb"]
    retries = [r.getMessage() for r in caplog.records if "kernel start failed" in r.getMessage()]
    assert len(retries) == 1
    assert "Kernel died before replying to kernel_info" in retries[0] and "retry 1 of 2" in retries[0]
    seed_call, report_call = fake_papermill.calls[1], fake_papermill.calls[2]
    assert seed_call["parameters"] == report_call["parameters"] == {"profile": "smoke", "seeds": [3]}
    assert seed_call["cwd"] == PROBE.parent.resolve() and seed_call["kernel_name"] == "python3"
    assert seed_call["extra_arguments"] == [sw.KERNEL_LOG_OPTION]
    assert json.loads((tmp_path / "seed_3.done.json").read_text())["parameters"] == seed_call["parameters"]


def test_kernel_that_never_starts_raises_after_retries(fake_papermill: FakePapermill, tmp_path: Path) -> None:
    fake_papermill.outcomes.extend([TimeoutError("kernel_info"), TimeoutError("kernel_info")])
    with pytest.raises(sw.KernelStartError, match="did not start in 2 attempts: TimeoutError: kernel_info"):
        sw.run_notebook(PROBE, tmp_path / "out.ipynb", {}, start_retries=1)
    assert len(fake_papermill.calls) == 2


def test_cell_error_is_not_retried(fake_papermill: FakePapermill, tmp_path: Path) -> None:
    fake_papermill.outcomes.append(_cell_error("ValueError", "boom"))
    result = sw.sweep(PROBE, [0], jobs=1, parameters={"profile": "smoke"}, out_dir=tmp_path, progress=False)
    assert len(fake_papermill.calls) == 1
    assert not result.ok and result.report is None
    assert result.failures == {0: (tmp_path / "seed_0.failed.ipynb", "ValueError: boom (cell In [2])")}
    assert not (tmp_path / "seed_0.ipynb").exists() and not (tmp_path / "seed_0.done.json").exists()
    assert not (tmp_path / "seed_0.running.ipynb").exists()


def test_report_failure_is_recorded(
    fake_papermill: FakePapermill, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_papermill.outcomes.extend([None, None, _cell_error("AssertionError", "no run", 3)])
    argv = ["sweep", str(PROBE), "--seeds", "0,1", "--out", str(tmp_path), "-p", "profile", "smoke"]
    assert cli_main(argv) == 1
    outputs = [call["output"].name for call in fake_papermill.calls]
    assert outputs == ["seed_0.running.ipynb", "seed_1.running.ipynb", "report_seeds-0-1.running.ipynb"]
    err = capsys.readouterr().err
    report = tmp_path / "report_seeds-0-1.failed.ipynb"
    assert f"report failed: AssertionError: no run (cell In [3])\n  executed notebook: {report}" in err
    assert "seed 0 failed" not in err and (tmp_path / "seed_1.done.json").is_file()


def test_failed_try_never_replaces_a_good_notebook(fake_papermill: FakePapermill, tmp_path: Path) -> None:
    notebook, out = tmp_path / "probe.ipynb", tmp_path / "out"
    shutil.copy(PROBE, notebook)
    assert sw.sweep(notebook, [0], parameters={"profile": "smoke"}, out_dir=out, progress=False).ok
    good, marker = (out / "seed_0.ipynb").read_bytes(), (out / "seed_0.done.json").read_bytes()
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("x = 1"))
    nbformat.write(nb, notebook)  # another notebook: the seed runs again, and fails
    fake_papermill.outcomes.append(_cell_error("OSError", "disk full"))
    failed = sw.sweep(notebook, [0], parameters={"profile": "smoke"}, out_dir=out, progress=False)
    assert failed.failures == {0: (out / "seed_0.failed.ipynb", "OSError: disk full (cell In [2])")}
    assert (out / "seed_0.ipynb").read_bytes() == good and (out / "seed_0.done.json").read_bytes() == marker
    assert nbformat.read(out / "seed_0.failed.ipynb", as_version=4).metadata["call"] == 3
    assert not failed.done_on_disk()

    again = sw.sweep(notebook, [0], parameters={"profile": "smoke"}, out_dir=out, progress=False)
    assert again.ok and again.done_on_disk() and not (out / "seed_0.failed.ipynb").exists()
    assert nbformat.read(out / "seed_0.ipynb", as_version=4).metadata["call"] == 4


def test_output_folders_keyed_by_parameters_and_reports_by_seeds(
    fake_papermill: FakePapermill, tmp_path: Path
) -> None:
    root = tmp_path / "runs"

    def run(seeds: list[int], **params: object) -> sw.SweepResult:
        result = sw.sweep(PROBE, seeds, parameters={"profile": "smoke", **params}, root=root, progress=False)
        assert result.ok
        return result

    five = run([0, 1, 2, 3, 4], data_root="/data/a")
    other = run([0], data_root="/data/b")
    assert other.out_dir != five.out_dir and other.out_dir.parent == five.out_dir.parent
    assert json.loads((other.out_dir / "parameters.json").read_text()) == {
        "notebook": "sweep_probe.ipynb", "profile": "smoke",
        "parameters": {"profile": "smoke", "data_root": "/data/b"}}
    assert (five.out_dir / "seed_0.ipynb").is_file() and (other.out_dir / "seed_0.ipynb").is_file()

    one = run([0], data_root="/data/a")  # seed 0 done: only its 1-seed report runs, beside the 5-seed one
    assert one.out_dir == five.out_dir and one.skipped == [0]
    assert one.report == five.out_dir / "report_seeds-0.ipynb" and five.report.is_file()
    assert five.done_on_disk() and one.done_on_disk()

    default = run([0], device=None)  # the notebook's literal default: the folder of no parameter
    assert default.out_dir == run([0]).out_dir and default.parameters == {"profile": "smoke"}
    calls = len(fake_papermill.calls)
    with pytest.raises(UsageError, match="holds executions of other parameters"):
        sw.sweep(PROBE, [0], parameters={"profile": "smoke", "device": "cpu"}, out_dir=five.out_dir)
    assert len(fake_papermill.calls) == calls


def test_kernels_get_fixed_threads_whatever_the_jobs(
    fake_papermill: FakePapermill, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in THREAD_VARS:
        monkeypatch.setenv(var, "7")
    monkeypatch.setenv("ATTNLIB_OUTPUT_DIR", "/elsewhere")  # a seed pass never sees an output folder
    monkeypatch.delenv("ATTNLIB_PROFILE", raising=False)
    argv = ["sweep", str(PROBE), "--seeds", "0", "--threads", "3", "--out", str(tmp_path),
            "-p", "profile", "smoke"]
    assert cli_main(argv) == 0
    seed_env = {**dict.fromkeys(THREAD_VARS, "3"), "ATTNLIB_TEXT_PROGRESS": "1", "ATTNLIB_PROFILE": "smoke",
                "ATTNLIB_OUTPUT_DIR": None}
    report_env = {**seed_env, "ATTNLIB_OUTPUT_DIR": str(tmp_path)}  # the report pass's claims go there
    assert [call["env"] for call in fake_papermill.calls] == [seed_env, report_env]
    assert {var: os.environ[var] for var in THREAD_VARS} == dict.fromkeys(THREAD_VARS, "7")  # restored
    assert os.environ["ATTNLIB_OUTPUT_DIR"] == "/elsewhere"
    assert "ATTNLIB_TEXT_PROGRESS" not in os.environ and "ATTNLIB_PROFILE" not in os.environ
    assert json.loads((tmp_path / "seed_0.done.json").read_text())["threads"] == 3


def test_sweep_profile_option(
    fake_papermill: FakePapermill, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--profile beats $ATTNLIB_PROFILE and reaches the kernels as the parameter and the variable; with
    -p profile it must agree; a stale claims.json goes before the sweep."""
    monkeypatch.setenv("ATTNLIB_PROFILE", "paper")
    out = tmp_path / "out"
    out.mkdir()
    (out / "claims.json").write_text("{}")  # an earlier report pass's
    base = ["sweep", str(PROBE), "--seeds", "0", "--out", str(out)]
    line = _usage_error(capsys, [*base, "--profile", "smoke", "-p", "profile", "quick"])
    assert "two profiles, 'smoke' and the parameter 'quick'" in line
    line = _usage_error(capsys, [*base, "--profile", "smok"])
    assert "unknown profile 'smok'; did you mean 'smoke'?" in line
    assert fake_papermill.calls == [] and (out / "claims.json").is_file()

    assert cli_main([*base, "--profile", "smoke", "-p", "profile", "smoke"]) == 0
    assert [call["parameters"]["profile"] for call in fake_papermill.calls] == ["smoke", "smoke"]
    assert [call["env"]["ATTNLIB_PROFILE"] for call in fake_papermill.calls] == ["smoke", "smoke"]
    assert json.loads((out / "parameters.json").read_text())["profile"] == "smoke"
    assert not (out / "claims.json").exists()
    assert os.environ["ATTNLIB_PROFILE"] == "paper"


def test_misspelt_parameter_is_a_usage_error(
    fake_papermill: FakePapermill, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["sweep", str(PROBE), "--seeds", "0", "--out", str(out), "-p", "data_roots", "/data"]
    line = _usage_error(capsys, argv)
    assert "sweep_probe.ipynb: unknown parameter 'data_roots' (did you mean 'data_root'?)" in line
    assert "its parameters: profile, data_root, seeds, device, out_dir, fail_seed" in line
    line = _usage_error(capsys, ["sweep", str(PROBE), "--out", str(out), "-p", "seeds", "[1]"])
    assert "--seeds" in line
    assert fake_papermill.calls == [] and not out.exists()


def test_usage_errors_are_one_line_and_exit_2(
    fake_papermill: FakePapermill, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ATTNLIB_HOME", str(tmp_path / "home"))
    out, notebooks = tmp_path / "out", tmp_path / "notebooks"
    notebooks.mkdir()
    shutil.copy(PROBE, notebooks / "a_probe.ipynb")
    line = _usage_error(capsys, ["sweep", str(PROBE), "--out", str(out), "-p", "profile", "smok"])
    assert "unknown profile 'smok'; did you mean 'smoke'? profiles: paper, quick, smoke" in line
    assert _usage_error(capsys, ["sweep", str(PROBE), "--out", str(out), "--profile", "smok"]) == line
    _usage_error(capsys, ["reproduce", "--notebooks", str(notebooks), "--profile", "smok", "--out", str(out)])
    line = _usage_error(capsys, ["data", "generate", "egd-cxr", "--profile", "smok", "--out", str(out)])
    assert "unknown profile 'smok'" in line
    monkeypatch.setenv("ATTNLIB_PROFILE", "smok")  # the profile a sweep takes from the environment
    _usage_error(capsys, ["sweep", str(PROBE), "--out", str(out)])
    monkeypatch.delenv("ATTNLIB_PROFILE")
    line = _usage_error(capsys, ["sweep", str(tmp_path / "nope.ipynb"), "--out", str(out)])
    assert line == f"attnlib: error: {tmp_path / 'nope.ipynb'}: no such notebook"
    line = _usage_error(capsys, ["sweep", str(PROBE), "--out", str(out), "--kernel", "no-such-kernel"])
    assert "no Jupyter kernel named 'no-such-kernel'" in line
    no_seeds = _notebook(tmp_path / "no_seeds.ipynb", "profile = None", sweep=True)
    line = _usage_error(capsys, ["sweep", str(no_seeds), "--out", str(out)])
    assert "does not assign seeds" in line
    line = _usage_error(capsys, ["reproduce", "--notebooks", str(tmp_path / "empty"), "--out", str(out)])
    assert "no notebooks" in line
    assert fake_papermill.calls == [] and not out.exists() and not (tmp_path / "home").exists()


def test_reproduce_passes_each_notebook_only_its_parameters(
    fake_papermill: FakePapermill, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notebooks, root = tmp_path / "notebooks", tmp_path / "runs"
    notebooks.mkdir()
    shutil.copy(PROBE, notebooks / "a_probe.ipynb")
    _notebook(notebooks / "b_once.ipynb", "profile = None\nepochs = 1  # epochs; 1 = quick\nseeds = [0]")
    _notebook(notebooks / "c_plain.ipynb", "")
    base = ["reproduce", "--notebooks", str(notebooks), "--profile", "smoke", "--seeds", "0",
            "--out", str(root)]
    line = _usage_error(capsys, [*base, "-p", "epoch", "2"])
    assert "no notebook has the parameter 'epoch' (did you mean 'epochs'?)" in line
    assert "give profile with --profile" in _usage_error(capsys, [*base, "-p", "profile", "paper"])
    assert fake_papermill.calls == [] and not root.exists()

    assert cli_main([*base, "-p", "epochs", "2", "-p", "data_root", "/data"]) == 0
    parameters = {call["output"].name: call["parameters"] for call in fake_papermill.calls}
    assert parameters == {
        "seed_0.running.ipynb": {"profile": "smoke", "data_root": "/data", "seeds": [0]},
        "report_seeds-0.running.ipynb": {"profile": "smoke", "data_root": "/data", "seeds": [0]},
        "b_once_seeds-0.running.ipynb": {"profile": "smoke", "epochs": 2, "seeds": [0]},
        "c_plain.running.ipynb": {},
    }
    env = {call["output"].name: call["env"] for call in fake_papermill.calls}
    assert {env[name]["ATTNLIB_PROFILE"] for name in env} == {"smoke"}  # c_plain too, without the parameter
    outputs = {name: env[name]["ATTNLIB_OUTPUT_DIR"] for name in env}
    folders = {name: str(call["output"].parent) for call in fake_papermill.calls for name in [call["output"].name]}
    assert outputs == {**folders, "seed_0.running.ipynb": None}  # the report and run-once passes only


def test_summary_lists_what_is_on_disk(fake_papermill: FakePapermill, tmp_path: Path) -> None:
    notebooks, root = tmp_path / "notebooks", tmp_path / "runs"
    notebooks.mkdir()
    shutil.copy(PROBE, notebooks / "a_probe.ipynb")
    _notebook(notebooks / "b_once.ipynb", "profile = None\nseeds = [0]")

    def reproduce() -> pd.DataFrame:
        summary = rp.reproduce_all(notebooks, profile="smoke", seeds=[0, 1], out_root=root, progress=False)
        assert pd.read_csv(root / "summary.csv", keep_default_na=False).equals(
            summary.astype({"wall_s": float}).fillna(""))
        return summary.set_index("notebook")

    fake_papermill.outcomes.extend([None, _cell_error("ValueError", "seed 1 broke")])
    first = reproduce()
    assert list(first["status"]) == ["failed", "ok"]
    probe, once = Path(first.loc["a_probe.ipynb", "folder"]), Path(first.loc["b_once.ipynb", "folder"])
    assert first.loc["a_probe.ipynb", "executed"] == "seed_0.ipynb"  # seed 1 has no good notebook
    assert first.loc["a_probe.ipynb", "report"] == ""
    assert first.loc["a_probe.ipynb", "errors"] == (
        f"seed 1: ValueError: seed 1 broke (cell In [2]) ({probe / 'seed_1.failed.ipynb'})")
    assert first.loc["b_once.ipynb", "executed"] == "b_once_seeds-0-1.ipynb"

    # one pool: seed 1 and the run-once notebook first, then the report (outcomes are taken in call order)
    fake_papermill.outcomes.extend([None, _cell_error("RuntimeError", "once broke"), None])
    second = reproduce()  # seed 1 and the report succeed now; the run-once notebook fails this time
    assert [call["output"].name for call in fake_papermill.calls[-3:]] == [
        "seed_1.running.ipynb", "b_once_seeds-0-1.running.ipynb", "report_seeds-0-1.running.ipynb"]
    assert list(second["status"]) == ["ok", "failed"]
    assert second.loc["a_probe.ipynb", "executed"] == "seed_0.ipynb; seed_1.ipynb"
    assert second.loc["a_probe.ipynb", "report"] == "report_seeds-0-1.ipynb"
    assert second.loc["b_once.ipynb", "executed"] == "b_once_seeds-0-1.ipynb"  # the good one is still there
    assert second.loc["b_once.ipynb", "errors"].endswith(f"({once / 'b_once_seeds-0-1.failed.ipynb'})")
    markdown = (root / "summary.md").read_text()
    assert "profile smoke, seeds [0, 1], 1 threads per run" in markdown
    runs, timings = markdown.split("\n## Where the time went\n")
    assert "| b_once.ipynb | once | failed |" in runs and runs.count("\n| ") == 3
    assert "| a_probe | 3 |" in timings and "| b_once | 1 |" in timings and "| all | 4 |" in timings
    frame = pd.read_csv(root / "timings.csv")
    assert set(frame["notebook"]) == {"a_probe", "b_once"} and (frame["training"] == 0).all()


@pytest.mark.slow
def test_sweep_parallel_report_and_rerun_skips(tmp_path: Path) -> None:
    store, root = tmp_path / "store", tmp_path / "runs"
    params = {"out_dir": str(store), "profile": "smoke"}
    result = sw.sweep(PROBE, [0, 1], jobs=2, parameters=params, root=root, progress=False)
    assert result.ok, result
    out = result.out_dir
    assert result.executed == {0: out / "seed_0.ipynb", 1: out / "seed_1.ipynb"} and result.skipped == []
    assert result.report == out / "report_seeds-0-1.ipynb" and result.report.is_file()
    assert sorted(_trained(store)) == ["0", "1"]  # the report pass reused both runs
    assert json.loads((store / "summary.json").read_text()) == {"seeds": [0, 1], "profile": "smoke"}
    for seed in (0, 1):
        marker = json.loads((out / f"seed_{seed}.done.json").read_text())
        assert marker["notebook_sha256"] == nbp.notebook_sha256(PROBE)
        assert marker["parameters"] == {**params, "seeds": [seed]}
        executed = nbformat.read(out / f"seed_{seed}.ipynb", as_version=4)
        assert executed.metadata.papermill.parameters == {**params, "seeds": [seed]}
        record = json.loads((store / f"seed_{seed}.json").read_text())
        assert record["cwd"] == str(PROBE.parent.resolve())  # executed in the notebook's folder
        assert record["python"] == sys.executable  # the kernel runs in this venv's Python
    mtimes = {seed: (out / f"seed_{seed}.ipynb").stat().st_mtime_ns for seed in (0, 1)}
    (store / "summary.json").unlink()

    again = sw.sweep(PROBE, [0, 1], jobs=2, parameters={**params, "device": None}, root=root, progress=False)
    assert again.ok and again.out_dir == out and again.skipped == [0, 1] and again.executed == {}
    assert {seed: (out / f"seed_{seed}.ipynb").stat().st_mtime_ns for seed in (0, 1)} == mtimes
    assert sorted(_trained(store)) == ["0", "1"]
    assert (store / "summary.json").is_file()  # the report was rendered again

    changed = sw.sweep(PROBE, [0], parameters={**params, "device": "cpu"}, root=root, progress=False)
    assert changed.ok and changed.out_dir != out and changed.executed == {0: changed.out_dir / "seed_0.ipynb"}


@pytest.mark.slow
def test_failing_seed_no_report_and_cli_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, out = tmp_path / "store", tmp_path / "nb"
    params = {"out_dir": str(store), "profile": "smoke", "fail_seed": 1}
    result = sw.sweep(PROBE, [0, 1], jobs=2, parameters=params, out_dir=out, progress=False)
    assert not result.ok and result.report is None and not (out / "report_seeds-0-1.ipynb").exists()
    assert list(result.executed) == [0] and (out / "seed_0.done.json").is_file()
    path, error = result.failures[1]
    assert path == out / "seed_1.failed.ipynb" and error.startswith("ValueError: probe failure for seed 1")
    assert not (out / "seed_1.done.json").exists() and not (out / "seed_1.ipynb").exists()
    (cell_error,) = _error_outputs(path)
    assert cell_error.ename == "ValueError" and cell_error.evalue == "probe failure for seed 1"

    argv = ["sweep", str(PROBE), "--seeds", "0-1", "-j", "2", "--out", str(out),
            "-p", "out_dir", str(store), "-p", "profile", "smoke", "-p", "fail_seed", "1"]
    assert cli_main(argv) == 1  # seed 0 is done; seed 1 runs again and fails again
    err = capsys.readouterr().err
    assert "seed 1 failed: ValueError: probe failure for seed 1" in err and str(path) in err
    assert "seed 0 failed" not in err and _trained(store) == ["0"]


@pytest.mark.slow
def test_console_script_from_a_shell_without_the_venv(tmp_path: Path) -> None:
    """The kernel runs in the venv's Python although neither PATH nor VIRTUAL_ENV points into the venv."""
    store, out = tmp_path / "store", tmp_path / "nb"
    venv_bin = Path(sys.executable).parent
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path)),
           "ATTNLIB_HOME": str(tmp_path)}
    done = subprocess.run(
        [str(venv_bin / "attnlib"), "sweep", str(PROBE), "--seeds", "2", "--out", str(out),
         "-p", "out_dir", str(store), "-p", "profile", "smoke"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out / "report_seeds-2.ipynb")
    assert Path(json.loads((store / "seed_2.json").read_text())["python"]).parent == venv_bin
    for noise in ("without encryption", "Passed unknown parameter", "Unable to parse line"):
        assert noise not in done.stderr


@pytest.mark.slow
def test_reproduce_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notebooks, root, store = tmp_path / "notebooks", tmp_path / "runs", tmp_path / "store"
    notebooks.mkdir()
    shutil.copy(PROBE, notebooks / "a_probe.ipynb")
    params = 'profile = "quick"\ndata_root = None\nseeds = [0, 1, 2, 3, 4]\ndevice = None\nout_dir = None'
    once = 'import json, pathlib\npathlib.Path(out_dir, "once.json").write_text(json.dumps([profile, seeds]))'
    _notebook(notebooks / "b_once.ipynb", params, once)
    _notebook(notebooks / "c_broken.ipynb", params, 'raise RuntimeError("broken on purpose")')
    argv = ["reproduce", "--notebooks", str(notebooks), "--profile", "smoke", "--seeds", "0-1",
            "--out", str(root), "-p", "out_dir", str(store)]
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    summary = pd.read_csv(root / "summary.csv", keep_default_na=False)
    assert list(summary["notebook"]) == ["a_probe.ipynb", "b_once.ipynb", "c_broken.ipynb"]
    assert list(summary["kind"]) == ["sweep", "once", "once"]
    assert list(summary["status"]) == ["ok", "ok", "failed"]
    folders = [Path(folder) for folder in summary["folder"]]
    stems = ("a_probe", "b_once", "c_broken")
    assert [folder.parent for folder in folders] == [root / "notebooks" / stem for stem in stems]
    assert all(folder.name.startswith("smoke-") for folder in folders)
    assert list(summary["executed"]) == ["seed_0.ipynb; seed_1.ipynb", "b_once_seeds-0-1.ipynb", ""]
    assert list(summary["report"]) == ["report_seeds-0-1.ipynb", "", ""]
    assert json.loads((store / "once.json").read_text()) == ["smoke", [0, 1]]
    failed = folders[2] / "c_broken_seeds-0-1.failed.ipynb"
    assert summary.loc[2, "errors"] == f"RuntimeError: broken on purpose (cell In [3]) ({failed})"
    assert f"c_broken.ipynb failed: RuntimeError: broken on purpose (cell In [3]) ({failed})" in err
    assert _error_outputs(failed)[0].ename == "RuntimeError"
    markdown = (root / "summary.md").read_text()
    digest, runs = markdown.split("\n## Runs\n")
    runs, timings = runs.split("\n## Where the time went\n")
    assert "| c_broken.ipynb | once | failed |" in runs and runs.count("\n| ") == 4
    assert "| a_probe | 3 |" in timings and "| b_once | 1 |" in timings and "c_broken" not in timings
    report = (folders[0] / "report_seeds-0-1.ipynb").relative_to(root)
    assert f"### probe (a_probe.ipynb, [report]({report}))" in digest  # written by the report pass's kernel
    assert "| Every seed ran. (seeds run) | all | 2, n = 2 | none | no test | none | reproduced |" in digest
    assert f"### b_once.ipynb, [report]({(folders[1] / 'b_once_seeds-0-1.ipynb').relative_to(root)})" in digest
    assert "### c_broken.ipynb (failed in this pass: see Runs)\n\nno claims recorded" in digest
    assert digest.count("no claims recorded") == 2


def _stored_run(store: Path, seed: int) -> Path:
    (run,) = (store / "threads_probe").glob(f"*/seed{seed}")
    return run


@pytest.mark.slow
def test_seed_results_do_not_depend_on_jobs(tmp_path: Path) -> None:
    """Seed 0 trained with --jobs 1 and with --jobs 2 (on a machine with 2 cores or more, the old code
    gave each of 2 jobs half the cores) is bit-identical, and the report passes train nothing."""
    stores = {jobs: tmp_path / f"store_{jobs}" for jobs in (1, 2)}
    for jobs, seeds in ((1, [0]), (2, [0, 1])):
        params = {"profile": "smoke", "store_root": str(stores[jobs])}
        result = sw.sweep(THREADS_PROBE, seeds, jobs=jobs, parameters=params, root=tmp_path, progress=False)
        assert result.ok, result
        assert sorted(_trained(stores[jobs])) == [str(seed) for seed in seeds]  # the report reused every run
        labels = [str(seed) for seed in seeds] + ["-".join(map(str, seeds))]
        for label in labels:  # every kernel, seeds and report, computed with one thread and text bars
            record = json.loads((stores[jobs] / f"kernel_{label}.json").read_text())
            assert record == {"threads": 1, "progress": "tqdm.std.tqdm"}
    one, two = _stored_run(stores[1], 0), _stored_run(stores[2], 0)
    assert one.parent.name == two.parent.name  # same data fingerprint, so the same run key
    for name in ("metrics.json", "history.csv", "predictions_train.csv"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    weights = [torch.load(run / "weights_last.pt", weights_only=True) for run in (one, two)]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    assert json.loads((one / "metrics.json").read_text())["threads"] == 1


@pytest.mark.slow
def test_kernel_and_papermill_noise_is_silenced(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The probe's parameters cell has a trailing comment papermill cannot parse ("Unable to parse line",
    then "Passed unknown parameter" for a correct name); the kernel warns about TCP without encryption."""
    caplog.set_level(logging.INFO)
    out = tmp_path / "out.ipynb"
    sw.run_notebook(THREADS_PROBE, out, {"store_root": str(tmp_path), "seeds": [0]})
    assert out.is_file()
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("Executing notebook with kernel") for m in messages)  # papermill's INFO stays
    assert not [m for m in messages if m.startswith(sw.PAPERMILL_NOISE)]
    assert "without encryption" not in capfd.readouterr().err


def test_kernel_log_filter_drops_only_the_noise() -> None:
    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("IPKernelApp", logging.ERROR, __file__, 1, message, None, None)

    noise = attnlib.KernelLogFilter()
    assert not noise.filter(record("Kernel is running over TCP without encryption. All communication ..."))
    assert not noise.filter(record("KeyboardInterrupt caught in kernel."))
    assert noise.filter(record("Exception in message handler:"))
    assert "attnlib.KernelLogFilter" in sw.KERNEL_LOG_OPTION  # what the sweep hands every ipykernel


def test_jpeg_encoder_info_lines_are_off() -> None:
    """openjpeg logs one INFO line per encoded image; the CLI logs at INFO."""
    assert logging.getLogger("openjpeg").level == logging.WARNING
    assert logging.getLogger("pylibjpeg").level == logging.WARNING


def test_run_notebook_refuses_unknown_parameters(fake_papermill: FakePapermill, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"unknown parameter 'fail_seeds' \(did you mean 'fail_seed'\?\)"):
        sw.run_notebook(PROBE, tmp_path / "out.ipynb", {"fail_seeds": 1})
    assert fake_papermill.calls == []
