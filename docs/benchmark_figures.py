"""Write the README's benchmark table and figures from the run store (runs already trained by notebook 06's sweep).

    .venv/bin/python docs/benchmark_figures.py --profile quick --seeds 0-4

prints the Markdown tables (positive control, effects with Holm p, negative control) and writes
docs/benchmark_<profile>_<figure>.png. Nothing is trained that is not in the store yet (a missing run would be
trained, as the notebook would).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")

import attnlib.models  # noqa: E402, F401  (registers the backbones and heads)
from attnlib.engine.notebook_params import parse_seeds  # noqa: E402
from attnlib.papers.benchmark_report import BenchmarkStudy  # noqa: E402


def markdown(frame: pd.DataFrame) -> str:
    """A Markdown table of ``frame`` (pandas' ``to_markdown`` needs tabulate, not a dependency)."""
    cells = frame.apply(lambda column: column.map(lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)))
    rows = [list(frame.columns), ["---"] * len(frame.columns), *cells.to_numpy().tolist()]
    return "\n".join("| " + " | ".join(map(str, row)) + " |" for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--checkpoint", default="best")
    args = parser.parse_args()
    study = BenchmarkStudy.create(args.profile)
    study.run(parse_seeds(args.seeds))
    control = study.positive_control(args.checkpoint)
    print(markdown(control), "\n")
    effects = study.effects(args.checkpoint)
    columns = ["source", "regime", "arm", "n", "mean_reference", "mean_arm", "effect", "ci_low", "ci_high", "p_holm"]
    print(markdown(effects[columns]), "\n")
    print(markdown(study.negative_control(args.checkpoint)[columns]), "\n")
    print(study.findings(args.checkpoint))
    for name, figure in study.figures(args.checkpoint).items():
        path = Path(__file__).parent / f"benchmark_{args.profile}_{name.split(': ')[-1].replace(' ', '_')}.png"
        figure.savefig(path, dpi=90, bbox_inches="tight")
        print(path)


if __name__ == "__main__":
    main()
