"""Where a main job's time went, per notebook: kernel start-up, training, scoring and evaluators, the rest of
the seed passes (imports, data, figures), and the report pass.

Read from what a run leaves on disk, nothing re-timed: each execution's done marker (``wall_s``, ``finished``;
:mod:`attnlib.engine.sweep`), papermill's per-cell durations in the executed notebook (their sum against the
wall time is the kernel start-up and papermill's own work), and each training run's ``timing.json`` in the run
store (the executor's phases; :mod:`attnlib.engine.runstore`). A run counts for the seed pass of its seed whose
time window holds the moment it was stored; runs loaded rather than trained count nowhere.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd

log = logging.getLogger(__name__)

#: The table's time columns, in order (seconds).
COLUMNS = ("kernel_start", "training", "scoring", "rest", "report", "total")
#: What each column holds, in words (README and summary.md).
WORDS = {
    "kernel_start": "kernel start-up and papermill (wall time minus the cells' durations)",
    "training": "Trainer.fit of the runs trained in the seed passes (epochs, validation included)",
    "scoring": "test scoring, the studies' evaluators and after-run hooks of those runs",
    "rest": "the rest of the seed passes' cells (imports, data generation and decoding, loading stored runs, "
            "figures), and run-once notebooks' cells",
    "report": "the report pass (all seeds' runs loaded from the store, tables, tests, figures)",
    "total": "sum of the executions' wall times (parallel seeds overlap, so it can exceed the elapsed time)",
}
_SLACK = timedelta(seconds=2)


def notebook_timings(out_root: Path, store_root: Path) -> pd.DataFrame:
    """One row per executed notebook folder under ``out_root/notebooks`` (columns notebook, folder, passes, then
    :data:`COLUMNS` in seconds), the runs looked up in the run store at ``store_root``."""
    runs = _stored_runs(Path(store_root))
    rows = []
    for folder in sorted(Path(out_root).glob("notebooks/*/*/")):
        markers = [_marker(path) for path in sorted(folder.glob("*.done.json"))]
        markers = [m for m in markers if m is not None]
        if not markers:
            continue
        row: dict[str, Any] = {"notebook": folder.parent.name, "folder": folder.name, "passes": len(markers)}
        row.update(dict.fromkeys(COLUMNS, 0.0))
        for marker in markers:
            wall = float(marker["wall_s"])
            cells = _cell_seconds(marker["path"])
            row["total"] += wall
            row["kernel_start"] += max(wall - cells, 0.0) if cells is not None else 0.0
            if marker["kind"] != "seed":  # a report pass, or a run-once notebook (its cells are its rest)
                row["report" if marker["kind"] == "report" else "rest"] += cells if cells is not None else wall
                continue
            phases = _phases(runs, marker)
            row["training"] += phases["training"]
            row["scoring"] += phases["scoring"]
            row["rest"] += max((cells if cells is not None else wall) - phases["training"] - phases["scoring"], 0.0)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["notebook", "folder", "passes", *COLUMNS])
    return frame.round({c: 1 for c in COLUMNS})


def minutes_table(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`notebook_timings` in minutes, with a total row (what the README and summary.md show)."""
    shown = frame[["notebook", "passes", *COLUMNS]].copy()
    total = {"notebook": "all", "passes": int(shown["passes"].sum()), **{c: shown[c].sum() for c in COLUMNS}}
    shown = pd.concat([shown, pd.DataFrame([total])], ignore_index=True)
    for column in COLUMNS:
        shown[column] = (shown[column] / 60).round(1)
    return shown.rename(columns={c: f"{c} (min)" for c in COLUMNS})


def _marker(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
        finished = datetime.fromisoformat(found["finished"])
        wall = float(found["wall_s"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("%s: unreadable done marker (%s); left out of the timings", path, err)
        return None
    seeds = found.get("parameters", {}).get("seeds")
    notebook = path.with_name(path.name.removesuffix(".done.json") + ".ipynb")
    kind = "seed" if path.name.startswith("seed_") else "report" if path.name.startswith("report_") else "once"
    return {"path": notebook, "wall_s": wall, "finished": finished, "seeds": seeds, "kind": kind}


def _cell_seconds(notebook: Path) -> float | None:
    """Sum of papermill's per-cell durations in an executed notebook (None when it has none)."""
    try:
        nb = nbformat.read(notebook, as_version=4)
    except (OSError, ValueError) as err:
        log.warning("%s: unreadable executed notebook (%s); its cells are not timed", notebook, err)
        return None
    durations = [cell.get("metadata", {}).get("papermill", {}).get("duration") for cell in nb.cells]
    durations = [float(d) for d in durations if d is not None]
    return sum(durations) if durations else None


def _stored_runs(root: Path) -> list[dict[str, Any]]:
    """Seed, finish time and phase seconds of every stored run with a ``timing.json``."""
    found = []
    for timing in root.glob("*/*/seed*/timing.json"):
        try:
            values = json.loads(timing.read_text(encoding="utf-8"))
            found.append({**values, "seed": int(timing.parent.name.removeprefix("seed")),
                          "finished": datetime.fromisoformat(values["finished"])})
        except (OSError, ValueError, KeyError) as err:
            log.warning("%s: unreadable (%s); left out of the timings", timing, err)
    return found


def _phases(runs: Iterable[dict[str, Any]], marker: dict[str, Any]) -> dict[str, float]:
    """Training and scoring seconds of the runs stored during a seed pass, for its seed."""
    end = marker["finished"] + _SLACK
    start = marker["finished"] - timedelta(seconds=marker["wall_s"]) - _SLACK
    seeds = set(marker["seeds"] or [])
    inside = [r for r in runs if start <= r["finished"] <= end and r["seed"] in seeds]
    training = sum(float(r.get("fit", 0.0)) for r in inside)
    scoring = sum(float(r.get("score", 0.0)) + float(r.get("evaluators", 0.0)) + float(r.get("after", 0.0))
                  for r in inside)
    return {"training": training, "scoring": scoring}
