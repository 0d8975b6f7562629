"""Tests of attnlib.sweep and its CLI: seeds, parameters, start retries (papermill faked) and real headless
sweeps of tests/notebooks/sweep_probe.ipynb, which writes one JSON per seed into ``out_dir`` (trained.log
counts trainings) and a summary.json in the report pass."""

from __future__ import annotations

import hashlib
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

from attnlib import sweep as sw
from attnlib.cli import main as cli_main

PROBE = Path(__file__).parent / "notebooks" / "sweep_probe.ipynb"


def _trained(store: Path) -> list[str]:
    return (store / "trained.log").read_text().split()


def _error_outputs(path: Path) -> list[nbformat.NotebookNode]:
    nb = nbformat.read(path, as_version=4)
    return [out for cell in nb.cells for out in cell.get("outputs", []) if out.output_type == "error"]


@pytest.mark.parametrize(
    ("text", "seeds"),
    [("0-4", [0, 1, 2, 3, 4]), ("0,2,5", [0, 2, 5]), ("3", [3]), ("0-2,7", [0, 1, 2, 7]),
     (" 5 , 1-2 ", [5, 1, 2]), ("1,1-2", [1, 2]), ("10-11", [10, 11])],
)
def test_parse_seeds(text: str, seeds: list[int]) -> None:
    assert sw.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a", "4-2", "-1", "1-", "1,,2", "0-4-5", "1.5"])
def test_parse_seeds_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="seeds"):
        sw.parse_seeds(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [("smoke", "smoke"), ("0.001", 0.001), ("1e-3", 0.001), ("-2.5E+2", -250.0), ("3", 3), ("null", None),
     ("None", None), ("true", True), ("[1, 2]", [1, 2]), ("{lr: 0.1}", {"lr": 0.1}),
     ("2024-01-01", "2024-01-01"), ("/data/egd-cxr", "/data/egd-cxr"), ("a: b: c", "a: b: c")],
)
def test_parse_parameter(text: str, value: object) -> None:
    parsed = sw.parse_parameter(text)
    assert parsed == value and type(parsed) is type(value)


def test_default_out_dir_and_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTNLIB_HOME", str(tmp_path))
    monkeypatch.delenv("ATTNLIB_PROFILE", raising=False)
    assert sw.resolve_profile(None) == "quick"
    monkeypatch.setenv("ATTNLIB_PROFILE", "full")
    assert sw.resolve_profile({}) == "full"
    assert sw.resolve_profile({"profile": "smoke"}) == "smoke"
    assert sw.notebook_out_dir(PROBE, "full") == tmp_path / "runs" / "notebooks" / "sweep_probe" / "full"
    assert sw.is_sweep_notebook(PROBE)


class FakePapermill:
    """Stands in for papermill.execute_notebook and records its calls. Each call takes the next queued
    outcome: None succeeds, an exception is raised before the kernel is up, ("started", exception) is
    raised after the kernel came up; with none queued the call succeeds."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.outcomes: list[object] = []

    def __call__(self, input_path: Path, output_path: Path, **kwargs: object) -> None:
        self.calls.append({"output": Path(output_path), **kwargs})
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, tuple):
            kwargs["on_notebook_start"](notebook=None)
            outcome = outcome[1]
        if outcome is not None:
            raise outcome
        nbformat.write(nbformat.v4.new_notebook(), output_path)


@pytest.fixture
def fake_papermill(monkeypatch: pytest.MonkeyPatch) -> FakePapermill:
    fake = FakePapermill()
    monkeypatch.setattr(papermill, "execute_notebook", fake)
    monkeypatch.setattr(sw, "START_BACKOFF_S", 0.0)
    return fake


def test_kernel_start_failure_is_retried(
    fake_papermill: FakePapermill, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_papermill.outcomes.append(RuntimeError("Kernel died before replying to kernel_info"))
    caplog.set_level(logging.WARNING, logger="attnlib.sweep")
    result = sw.sweep(PROBE, [3], jobs=1, parameters={"profile": "smoke"}, out_dir=tmp_path, progress=False)
    assert result.ok and result.executed == {3: tmp_path / "seed_3.ipynb"}
    assert result.report == tmp_path / "report.ipynb"
    outputs = [call["output"].name for call in fake_papermill.calls]
    assert outputs == ["seed_3.ipynb", "seed_3.ipynb", "report.ipynb"]
    retries = [r.getMessage() for r in caplog.records if "kernel start failed" in r.getMessage()]
    assert len(retries) == 1
    assert "Kernel died before replying to kernel_info" in retries[0] and "retry 1 of 2" in retries[0]
    seed_call, report_call = fake_papermill.calls[1], fake_papermill.calls[2]
    assert seed_call["parameters"] == report_call["parameters"] == {"profile": "smoke", "seeds": [3]}
    assert seed_call["cwd"] == PROBE.parent.resolve() and seed_call["kernel_name"] == "python3"
    assert json.loads((tmp_path / "seed_3.done.json").read_text())["parameters"] == seed_call["parameters"]


def test_kernel_that_never_starts_raises_after_retries(fake_papermill: FakePapermill, tmp_path: Path) -> None:
    fake_papermill.outcomes.extend([TimeoutError("kernel_info"), TimeoutError("kernel_info")])
    with pytest.raises(sw.KernelStartError, match="did not start in 2 attempts: TimeoutError: kernel_info"):
        sw.run_notebook(PROBE, tmp_path / "out.ipynb", {}, start_retries=1)
    assert len(fake_papermill.calls) == 2


def test_cell_error_is_not_retried(fake_papermill: FakePapermill, tmp_path: Path) -> None:
    error = papermill.PapermillExecutionError(2, 2, "raise ValueError('boom')", "ValueError", "boom", [])
    fake_papermill.outcomes.append(error)
    result = sw.sweep(PROBE, [0], jobs=1, parameters={"profile": "smoke"}, out_dir=tmp_path, progress=False)
    assert len(fake_papermill.calls) == 1
    assert not result.ok and result.report is None
    assert result.failures == {0: (tmp_path / "seed_0.ipynb", "ValueError: boom (cell In [2])")}
    assert not (tmp_path / "seed_0.done.json").exists()


def test_report_failure_is_recorded(
    fake_papermill: FakePapermill, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_papermill.outcomes.extend([None, None])  # both seeds succeed, then the report fails
    report_error = papermill.PapermillExecutionError(3, 3, "", "AssertionError", "no run", [])
    fake_papermill.outcomes.append(report_error)
    argv = ["sweep", str(PROBE), "--seeds", "0,1", "--out", str(tmp_path), "-p", "profile", "smoke"]
    assert cli_main(argv) == 1
    outputs = [call["output"].name for call in fake_papermill.calls]
    assert outputs == ["seed_0.ipynb", "seed_1.ipynb", "report.ipynb"]
    err = capsys.readouterr().err
    report = tmp_path / "report.ipynb"
    assert f"report failed: AssertionError: no run (cell In [3])\n  executed notebook: {report}" in err
    assert "seed 0 failed" not in err and (tmp_path / "seed_1.done.json").is_file()


def test_failed_rerun_clears_done_marker(fake_papermill: FakePapermill, tmp_path: Path) -> None:
    assert sw.sweep(PROBE, [0], parameters={"profile": "smoke"}, out_dir=tmp_path, progress=False).ok
    (tmp_path / "seed_0.ipynb").unlink()  # the marker alone does not make a seed done
    fake_papermill.outcomes.append(papermill.PapermillExecutionError(1, 1, "", "OSError", "disk full", []))
    result = sw.sweep(PROBE, [0], parameters={"profile": "smoke"}, out_dir=tmp_path, progress=False)
    assert list(result.failures) == [0] and not (tmp_path / "seed_0.done.json").exists()


def test_failure_after_kernel_started_is_not_retried(fake_papermill: FakePapermill, tmp_path: Path) -> None:
    fake_papermill.outcomes.append(("started", RuntimeError("Kernel died while executing a cell")))
    with pytest.raises(RuntimeError, match="Kernel died while executing a cell"):
        sw.run_notebook(PROBE, tmp_path / "out.ipynb", {})
    assert len(fake_papermill.calls) == 1


def test_unknown_kernel_fails_without_executing(fake_papermill: FakePapermill, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sweep_probe.ipynb: no Jupyter kernel named 'no-such-kernel'"):
        sw.run_notebook(PROBE, tmp_path / "out.ipynb", {}, kernel_name="no-such-kernel")
    assert fake_papermill.calls == []


def test_sweep_parallel_report_and_rerun_skips(tmp_path: Path) -> None:
    store, out = tmp_path / "store", tmp_path / "nb"
    params = {"out_dir": str(store), "profile": "smoke"}
    result = sw.sweep(PROBE, [0, 1], jobs=2, parameters=params, out_dir=out, progress=False)
    assert result.ok, result
    assert result.executed == {0: out / "seed_0.ipynb", 1: out / "seed_1.ipynb"} and result.skipped == []
    assert result.report == out / "report.ipynb" and result.report.is_file()
    assert sorted(_trained(store)) == ["0", "1"]  # the report pass reused both runs
    assert json.loads((store / "summary.json").read_text()) == {"seeds": [0, 1], "profile": "smoke"}
    digest = hashlib.sha256(PROBE.read_bytes()).hexdigest()
    for seed in (0, 1):
        marker = json.loads((out / f"seed_{seed}.done.json").read_text())
        assert marker["seed"] == seed and marker["notebook_sha256"] == digest
        assert marker["parameters"] == {**params, "seeds": [seed]}
        executed = nbformat.read(out / f"seed_{seed}.ipynb", as_version=4)
        assert executed.metadata.papermill.parameters == {**params, "seeds": [seed]}
        record = json.loads((store / f"seed_{seed}.json").read_text())
        assert record["cwd"] == str(PROBE.parent.resolve())  # executed in the notebook's folder
        assert record["python"] == sys.executable  # the kernel runs in this venv's Python
    mtimes = {seed: (out / f"seed_{seed}.ipynb").stat().st_mtime_ns for seed in (0, 1)}
    (store / "summary.json").unlink()

    again = sw.sweep(PROBE, [0, 1], jobs=2, parameters=params, out_dir=out, progress=False)
    assert again.ok and again.skipped == [0, 1] and again.executed == {}
    assert {seed: (out / f"seed_{seed}.ipynb").stat().st_mtime_ns for seed in (0, 1)} == mtimes
    assert sorted(_trained(store)) == ["0", "1"]
    assert (store / "summary.json").is_file()  # the report was rendered again

    params["device"] = "cpu"  # other parameters: the seed runs again
    changed = sw.sweep(PROBE, [0], jobs=1, parameters=params, out_dir=out, progress=False)
    assert changed.ok and changed.executed == {0: out / "seed_0.ipynb"} and changed.skipped == []


def test_failing_seed_no_report_and_cli_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, out = tmp_path / "store", tmp_path / "nb"
    params = {"out_dir": str(store), "profile": "smoke", "fail_seed": 1}
    result = sw.sweep(PROBE, [0, 1], jobs=2, parameters=params, out_dir=out, progress=False)
    assert not result.ok and result.report is None and not (out / "report.ipynb").exists()
    assert list(result.executed) == [0] and (out / "seed_0.done.json").is_file()
    path, error = result.failures[1]
    assert path == out / "seed_1.ipynb" and error.startswith("ValueError: probe failure for seed 1")
    assert not (out / "seed_1.done.json").exists()
    (cell_error,) = _error_outputs(path)
    assert cell_error.ename == "ValueError" and cell_error.evalue == "probe failure for seed 1"

    argv = ["sweep", str(PROBE), "--seeds", "0-1", "-j", "2", "--out", str(out),
            "-p", "out_dir", str(store), "-p", "profile", "smoke", "-p", "fail_seed", "1"]
    assert cli_main(argv) == 1  # seed 0 is done; seed 1 runs again and fails again
    err = capsys.readouterr().err
    assert "seed 1 failed: ValueError: probe failure for seed 1" in err and str(path) in err
    assert "seed 0 failed" not in err and _trained(store) == ["0"]


def test_console_script_from_a_shell_without_the_venv(tmp_path: Path) -> None:
    """The kernel runs in the venv's Python although neither PATH nor VIRTUAL_ENV points into the venv."""
    store, out = tmp_path / "store", tmp_path / "nb"
    venv_bin = Path(sys.executable).parent
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path)),
           "ATTNLIB_HOME": str(tmp_path)}
    done = subprocess.run(
        [str(venv_bin / "attnlib"), "sweep", str(PROBE), "--seeds", "2", "--out", str(out),
         "-p", "out_dir", str(store), "-p", "profile", "smoke"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out / "report.ipynb")
    assert Path(json.loads((store / "seed_2.json").read_text())["python"]).parent == venv_bin


def _run_once_notebook(path: Path, code: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = 'profile = "quick"\ndata_root = None\nseeds = [0, 1, 2, 3, 4]\ndevice = None\nout_dir = None'
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_reproduce_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notebooks, root, store = tmp_path / "notebooks", tmp_path / "runs", tmp_path / "store"
    notebooks.mkdir()
    shutil.copy(PROBE, notebooks / "a_probe.ipynb")
    once = 'import json, pathlib\npathlib.Path(out_dir, "once.json").write_text(json.dumps([profile, seeds]))'
    _run_once_notebook(notebooks / "b_once.ipynb", once)
    _run_once_notebook(notebooks / "c_broken.ipynb", 'raise RuntimeError("broken on purpose")')
    argv = ["reproduce", "--notebooks", str(notebooks), "--profile", "smoke", "--seeds", "0-1",
            "--out", str(root), "-p", "out_dir", str(store)]
    assert cli_main(argv) == 1
    runs = root / "notebooks"
    err = capsys.readouterr().err
    assert "c_broken.ipynb failed: RuntimeError: broken on purpose" in err
    assert str(runs / "c_broken" / "smoke" / "c_broken.ipynb") in err

    summary = pd.read_csv(root / "summary.csv", keep_default_na=False)
    assert list(summary["notebook"]) == ["a_probe.ipynb", "b_once.ipynb", "c_broken.ipynb"]
    assert list(summary["kind"]) == ["sweep", "once", "once"]
    assert list(summary["status"]) == ["ok", "ok", "failed"]
    probe_dir = runs / "a_probe" / "smoke"
    assert summary.loc[0, "executed"] == f"{probe_dir / 'seed_0.ipynb'}; {probe_dir / 'seed_1.ipynb'}"
    assert summary.loc[0, "report"] == str(probe_dir / "report.ipynb")
    assert summary.loc[1, "executed"] == str(runs / "b_once" / "smoke" / "b_once.ipynb")
    assert json.loads((store / "once.json").read_text()) == ["smoke", [0, 1]]
    assert summary.loc[0, "errors"] == ""
    assert summary.loc[2, "errors"].startswith("RuntimeError: broken on purpose")
    assert _error_outputs(runs / "c_broken" / "smoke" / "c_broken.ipynb")[0].ename == "RuntimeError"
    markdown = (root / "summary.md").read_text()
    assert "profile smoke, seeds [0, 1]" in markdown
    assert "| c_broken.ipynb | once | failed |" in markdown and markdown.count("\n| ") == 4
