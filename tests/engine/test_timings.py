"""Tests of attnlib.engine.timings: the per-notebook time table from done markers, papermill's cell durations
and the run store's timing.json files, checked against sums done by hand."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest

from attnlib.engine.timings import COLUMNS, minutes_table, notebook_timings

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)


def _execution(folder: Path, name: str, wall: float, end: datetime, seeds: list[int], cells: list[float]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("pass", metadata={"papermill": {"duration": d}}) for d in cells]
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{name}.ipynb")
    marker = {"wall_s": wall, "finished": end.isoformat(), "parameters": {"seeds": seeds}}
    (folder / f"{name}.done.json").write_text(json.dumps(marker))


def _run(store: Path, key: str, seed: int, end: datetime, **phases: float) -> None:
    folder = store / "study" / key / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "timing.json").write_text(json.dumps({"finished": end.isoformat(), "seconds": 1.0, **phases}))


def test_time_goes_to_the_pass_of_its_seed_and_window(tmp_path: Path) -> None:
    out, store = tmp_path / "runs", tmp_path / "store"
    folder = out / "notebooks" / "01_x" / "quick-abc"
    # seeds 0 and 1 in parallel (overlapping windows), then the report
    _execution(folder, "seed_0", 100.0, T0 + timedelta(seconds=100), [0], [2.0, 90.0])
    _execution(folder, "seed_1", 110.0, T0 + timedelta(seconds=110), [1], [3.0, 100.0])
    _execution(folder, "report_seeds-0-1", 20.0, T0 + timedelta(seconds=140), [0, 1], [15.0])
    _run(store, "a", 0, T0 + timedelta(seconds=50), fit=40.0, score=5.0, evaluators=3.0, after=1.0)
    _run(store, "b", 1, T0 + timedelta(seconds=60), fit=70.0, score=4.0)
    _run(store, "c", 0, T0 - timedelta(days=1), fit=999.0)  # stored earlier: loaded, not trained, in this pass
    _run(store, "d", 1, T0 + timedelta(seconds=130), fit=999.0)  # stored during the report pass: not a seed's
    frame = notebook_timings(out, store)
    row = frame.iloc[0]
    assert (row["notebook"], row["folder"], row["passes"]) == ("01_x", "quick-abc", 3)
    assert row["training"] == pytest.approx(40.0 + 70.0)
    assert row["scoring"] == pytest.approx(5.0 + 3.0 + 1.0 + 4.0)
    assert row["kernel_start"] == pytest.approx((100 - 92) + (110 - 103) + (20 - 15))
    assert row["rest"] == pytest.approx((92 - 40 - 9) + (103 - 70 - 4))
    assert row["report"] == pytest.approx(15.0)
    assert row["total"] == pytest.approx(230.0)
    once = out / "notebooks" / "00_z" / "quick-ghi"
    _execution(once, "00_z_seeds-0", 30.0, T0, [0], [4.0, 20.0])  # a run-once notebook: its cells are "rest"
    row = notebook_timings(out, store).set_index("notebook").loc["00_z"]
    assert (row["rest"], row["report"], row["kernel_start"], row["total"]) == (24.0, 0.0, 6.0, 30.0)
    shown = minutes_table(frame)
    assert list(shown["notebook"]) == ["01_x", "all"]
    assert shown.loc[1, "total (min)"] == pytest.approx(round(230 / 60, 1))


def test_unreadable_markers_and_missing_store_are_left_out(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "notebooks" / "02_y" / "quick-def"
    folder.mkdir(parents=True)
    (folder / "seed_0.done.json").write_text("{not json")
    assert notebook_timings(tmp_path / "runs", tmp_path / "nowhere").empty
    _execution(folder, "seed_1", 10.0, T0, [1], [])
    (folder / "seed_1.ipynb").write_text("broken")
    row = notebook_timings(tmp_path / "runs", tmp_path / "nowhere").iloc[0]
    assert row["passes"] == 1 and row["rest"] == 10.0 and row["kernel_start"] == 0.0
    assert list(notebook_timings(tmp_path / "runs", tmp_path).columns)[3:] == list(COLUMNS)
