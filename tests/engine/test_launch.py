"""Tests of attnlib.engine.launch and attnlib.engine.cells: the executors (local processes and submitit's local
executor, the tested stand-in for Slurm), the cluster options, resubmission that skips finished work, and a
sweep and a study's cells run through submitit end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from attnlib import UsageError
from attnlib.cli import main as cli_main
from attnlib.engine import cells as cl
from attnlib.engine import launch as ln
from attnlib.engine import sweep as sw
from attnlib.engine.runstore import RunStore

PROBE = Path(__file__).parent / "notebooks" / "sweep_probe.ipynb"
BENCHMARK = "attnlib.papers.benchmark:AttentionBenchmark"
SUBMITIT = ln.ClusterConfig(executor="submitit-local", time_min=10, poll_s=0.2)


def _collect(pairs) -> dict[int, object]:
    return dict(pairs)


@pytest.mark.parametrize("jobs", [1, 2])
def test_local_executor_returns_every_result_and_failures_as_values(jobs: int) -> None:
    got = _collect(ln.run_elements(math.factorial, [3, -1, 5], jobs=jobs))
    assert got[0] == 6 and got[2] == 120
    assert isinstance(got[1], ValueError)  # one element's failure does not stop the others


def test_submitit_local_executor_runs_an_array_and_keeps_logs(tmp_path: Path) -> None:
    got = _collect(ln.run_elements(math.factorial, [4, -2], cluster=SUBMITIT, folder=tmp_path, keys=["a", "b"]))
    assert got[0] == 24
    assert "factorial() not defined for negative values" in ln.element_error(got[1])
    record = json.loads((tmp_path / ln.SUBMITTED).read_text())
    assert set(record) == {"a", "b"}
    assert list(tmp_path.glob("*_log.out")) and list(tmp_path.glob("*_result.pkl"))


def test_submitit_needs_a_folder_and_no_wait_yields_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="folder"):
        list(ln.run_elements(math.factorial, [3], cluster=SUBMITIT))
    quiet = ln.ClusterConfig(executor="submitit-local", time_min=10, wait=False)
    assert list(ln.run_elements(math.factorial, [3], cluster=quiet, folder=tmp_path, keys=["x"])) == []
    assert set(json.loads((tmp_path / ln.SUBMITTED).read_text())) == {"x"}


def test_cluster_config_from_yaml_then_command_line(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("executor: slurm\npartition: gpu\ntime_min: 90\ngpus: 1\ncpus: 8\nmem_gb: 32\n"
                    "slurm: {account: lab, qos: normal}\nsetup: [module load cuda]\n")
    config = ln.load_cluster_config(path, time_min=30, partition=None)
    assert (config.executor, config.partition, config.time_min, config.gpus) == ("slurm", "gpu", 30, 1)
    params = config.submitit_parameters("benchmark")
    assert params == {
        "name": "benchmark", "timeout_min": 30, "gpus_per_node": 1, "cpus_per_task": 8, "tasks_per_node": 1,
        "nodes": 1, "slurm_array_parallelism": 64, "mem_gb": 32.0, "slurm_partition": "gpu",
        "slurm_additional_parameters": {"account": "lab", "qos": "normal"}, "slurm_setup": ["module load cuda"],
    }
    local = ln.ClusterConfig(executor="submitit-local", partition="gpu", slurm={"account": "lab"})
    assert not any(key in local.submitit_parameters("x") for key in ("slurm_partition", "slurm_additional_parameters"))


@pytest.mark.parametrize(("text", "message"), [
    ("executor: pbs\n", "executor must be one of"),
    ("partitoin: gpu\n", "unknown cluster option(s) partitoin"),
    ("- gpu\n", "must be a mapping"),
    ("time_min: 0\n", "time_min must be at least 1"),
    ("gpus: one\n", "not supported between"),
    ("wait: false\n", "needs a cluster executor"),
])
def test_bad_cluster_config_names_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        ln.load_cluster_config(path)
    assert str(err.value).startswith(str(path))


def test_in_flight_asks_slurm_for_each_recorded_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import submitit

    (tmp_path / ln.SUBMITTED).write_text(json.dumps({"seed_0.ipynb": "7_0", "seed_1.ipynb": "7_1", "old": "3_0"}))
    states = {"7_0": "RUNNING", "7_1": "FAILED", "3_0": "PENDING"}

    class FakeJob:
        def __init__(self, folder: Path, job_id: str) -> None:
            self.state = states[job_id]

    monkeypatch.setattr(submitit, "SlurmJob", FakeJob)
    assert ln.in_flight(tmp_path, ["seed_0.ipynb", "seed_1.ipynb", "seed_2.ipynb"]) == {"seed_0.ipynb": "7_0"}


def test_sweep_through_submitit_then_rerun_skips(tmp_path: Path) -> None:
    store, root = tmp_path / "store", tmp_path / "runs"
    params = {"out_dir": str(store), "profile": "smoke"}
    result = sw.sweep(PROBE, [0, 1], parameters=params, root=root, progress=False, cluster=SUBMITIT)
    assert result.ok, result
    out = result.out_dir
    assert set(result.executed) == {0, 1} and result.report == out / "report_seeds-0-1.ipynb"
    logs = out / "submitit"
    assert set(json.loads((logs / ln.SUBMITTED).read_text())) == {"seed_0.ipynb", "seed_1.ipynb"}
    assert len(list(logs.glob("*_log.out"))) == 2  # one array element per seed, logs beside the notebooks
    again = sw.sweep(PROBE, [0, 1], parameters=params, root=root, progress=False, cluster=SUBMITIT)
    assert again.ok and again.skipped == [0, 1] and again.executed == {}
    assert len(list(logs.glob("*_log.out"))) == 2  # nothing submitted again


def test_sweep_without_waiting_submits_and_reports_later(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, root = tmp_path / "store", tmp_path / "runs"
    argv = ["sweep", str(PROBE), "--seeds", "0", "--out", str(root / "nb"), "-p", "out_dir", str(store),
            "--profile", "smoke", "--executor", "submitit-local", "--time-min", "10", "--no-wait"]
    assert cli_main(argv) == 0
    assert "Run the same command again" in capsys.readouterr().out
    assert not (root / "nb" / "report_seeds-0.ipynb").exists()


def test_cells_train_through_submitit_and_skip_when_done(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    kwargs = {"profile": "smoke", "scenarios": ["finegrained/reference"], "arms": ["baseline"],
              "results_folder": folder, "device": "cpu"}
    result = cl.train_cells(BENCHMARK, [0, 1], cluster=SUBMITIT, **kwargs)
    assert result.ok and result.failures == {} and len(result.trained) == 2
    assert {o.cell.key for o in result.trained} == {"finegrained__reference-seed0", "finegrained__reference-seed1"}
    assert all(o.runs == 1 for o in result.trained)
    assert len(RunStore(folder).results("benchmark")) == 2
    markers = sorted((folder / cl.CELLS_DIR / "benchmark" / "smoke").rglob("*.done.json"))
    assert [m.name for m in markers] == ["seed0.done.json", "seed1.done.json"]
    assert json.loads(markers[0].read_text())["arms"] == ["baseline"]

    again = cl.train_cells(BENCHMARK, [0, 1], jobs=2, **kwargs)
    assert again.ok and again.trained == [] and len(again.skipped) == 2
    wider = cl.train_cells(BENCHMARK, [0], arms=["baseline", "rrr"], **{k: v for k, v in kwargs.items() if k != "arms"})
    assert len(wider.trained) == 1 and wider.trained[0].runs == 2  # other arms: not done; baseline loaded
    assert len(RunStore(folder).results("benchmark")) == 3


def test_cells_refuse_unknown_scenarios_and_arms(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown scenario"):
        cl.train_cells(BENCHMARK, [0], profile="smoke", scenarios=["cxr/decoy"], results_folder=tmp_path)
    with pytest.raises(UsageError, match="no study"):
        cl.study_class("attnlib.papers.benchmark:Nope")


def test_train_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "benchmark", "--profile", "smoke", "--seeds", "0", "--scenario", "finegrained/decoy",
            "--arm", "baseline", "--results-folder", str(tmp_path), "--device", "cpu"]
    assert cli_main(argv) == 0
    assert "1 cell(s) trained, 0 done before" in capsys.readouterr().out
    assert cli_main(argv) == 0
    assert "0 cell(s) trained, 1 done before" in capsys.readouterr().out
    assert cli_main([*argv[:2], "--profile", "smoke", "--scenario", "nope/x", "--results-folder", str(tmp_path)]) == 2


def test_reproduce_through_submitit(tmp_path: Path) -> None:
    import shutil

    from attnlib.engine.reproduce import reproduce_all

    notebooks, root = tmp_path / "notebooks", tmp_path / "runs"
    notebooks.mkdir()
    shutil.copy(PROBE, notebooks / "a_probe.ipynb")
    summary = reproduce_all(notebooks, profile="smoke", seeds=[0], out_root=root, progress=False, cluster=SUBMITIT,
                            parameters={"out_dir": str(tmp_path / "store")})
    assert list(summary["status"]) == ["ok"] and summary.loc[0, "report"] == "report_seeds-0.ipynb"
    logs = Path(summary.loc[0, "folder"]) / "submitit"
    assert set(json.loads((logs / ln.SUBMITTED).read_text())) == {"seed_0.ipynb"}
