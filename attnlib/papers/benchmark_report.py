"""The benchmark's statistics, controls, computed findings and figures (:class:`BenchmarkStudy`), on top of its runs
(:class:`~attnlib.papers.benchmark.AttentionBenchmark`).

Kept in their own module because a run's identity holds the code fingerprint of ``attnlib.papers.benchmark`` and
what it imports: a change here (a table, a figure, a sentence) reloads every stored run instead of retraining it.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from attnlib import UsageError
from attnlib.data.benchmark.sources import HUMAN_MAPS
from attnlib.engine.study import StudyContext
from attnlib.evaluation.stats import paired_effects, with_profile_caveat
from attnlib.losses.gg_cam import history_balance
from attnlib.papers.benchmark import ARMS, BASELINE, AttentionBenchmark, BenchmarkSettings
from attnlib.reporting import plots


class BenchmarkStudy(AttentionBenchmark):
    """:class:`~attnlib.papers.benchmark.AttentionBenchmark` with its report: effects with Holm correction and
    bootstrap intervals, the positive and negative controls, the computed findings, tables and figures.

    ``data_root`` (the notebooks' shared parameter) must stay None: the regimes need the evidence region and a
    human map of every image, which only the synthetic sources give; real data goes through the paper notebooks.
    """

    def __init__(self, context: StudyContext, settings: BenchmarkSettings | None = None,
                 data_root: str | Path | None = None) -> None:
        if data_root is not None:
            raise UsageError(
                f"data_root={str(data_root)!r}: the benchmark runs on its synthetic sources only (its regimes need "
                "the evidence region and a human map of every image); run the paper notebooks on real data"
            )
        super().__init__(context, settings)

    def tidy(self, checkpoint: str) -> pd.DataFrame:
        """One row per (source, regime, arm, seed): the primary metric as ``score`` beside every metric."""
        wide = self.wide(checkpoint)
        if wide.empty:
            return wide.assign(source=[], regime=[], score=[])
        parts = wide["scenario"].str.split("/", n=1, expand=True)
        wide = wide.assign(source=parts[0], regime=parts[1])
        wide["score"] = [row[self.primary(row["source"])] for _, row in wide.iterrows()]
        return wide

    def effects(self, checkpoint: str = "best", metric: str = "score") -> pd.DataFrame:
        """Every arm against ``baseline`` in every cell: mean paired difference (seeds), its 95 % bootstrap
        interval, the paired t-test and its Holm correction over all cells of the grid (``metric`` "score": each
        source's primary metric)."""
        tidy = self.tidy(checkpoint)
        if tidy.empty:
            return pd.DataFrame()
        return paired_effects(tidy.dropna(subset=[metric]), value=metric, arm="arm", reference=BASELINE,
                              pair="seed", cells=["source", "regime"])

    def positive_control(self, checkpoint: str = "best", alpha: float = 0.05) -> pd.DataFrame:
        """Per source: the baseline's primary metric in ``reference`` and in ``decoy``, its fall, RRR's value in
        ``decoy``, the share of the fall RRR recovers, RRR's Holm p in decoy, and whether the control passes
        (fall >= ``min_drop``, recovery >= ``min_recovery``, Holm p < alpha)."""
        s = self.settings
        tidy, effects = self.tidy(checkpoint), self.effects(checkpoint)
        rows = []
        for source in s.sources:
            part = tidy[tidy["source"] == source]

            def mean(arm: str, regime: str, part: pd.DataFrame = part) -> float:
                values = part[(part["arm"] == arm) & (part["regime"] == regime)]["score"]
                return float(values.mean()) if len(values) else math.nan

            reference, decoy, rrr = mean(BASELINE, s.reference), mean(BASELINE, s.decoy), mean("rrr", s.decoy)
            fall = reference - decoy
            recovery = (rrr - decoy) / fall if fall > 0 else math.nan
            match = effects[(effects["source"] == source) & (effects["regime"] == s.decoy)
                            & (effects["arm"] == "rrr")] if not effects.empty else effects
            p = float(match["p_holm"].iloc[0]) if len(match) else math.nan
            passes = bool(fall >= s.min_drop and recovery >= s.min_recovery and p < alpha)
            rows.append({"source": source, "metric": self.primary(source), "baseline reference": reference,
                         "baseline decoy": decoy, "fall": fall, "rrr decoy": rrr, "recovered share": recovery,
                         "p (Holm)": p, "passes": passes})
        return pd.DataFrame(rows)

    def negative_control(self, checkpoint: str = "best", alpha: float = 0.05) -> pd.DataFrame:
        """Every map-using arm in the ``misplaced`` regime against baseline: a significant gain (Holm) is flagged
        ``gain without human attention``."""
        effects = self.effects(checkpoint)
        if effects.empty:
            return effects
        part = effects[(effects["regime"] == self.settings.misplaced) & effects["arm"].map(ARMS)].copy()
        part["gain without human attention"] = (part["p_holm"] < alpha) & (part["effect"] > 0)
        return part.reset_index(drop=True)

    def findings(self, checkpoint: str = "best", alpha: float = 0.05) -> str:
        """The computed paragraph: per source, whether its positive control passed, and where human attention
        helped, hurt, or could not be told apart from the baseline (Holm-corrected)."""
        effects, control = self.effects(checkpoint), self.positive_control(checkpoint, alpha)
        if effects.empty:
            return with_profile_caveat("Nothing has run yet.", self.profile)
        negative = self.negative_control(checkpoint, alpha)
        lines = []
        for row in control.to_dict("records"):
            source = row["source"]
            part = effects[effects["source"] == source]
            helped = part[(part["p_holm"] < alpha) & (part["effect"] > 0)]
            hurt = part[(part["p_holm"] < alpha) & (part["effect"] < 0)]
            status = ("positive control passes" if row["passes"] else
                      "positive control FAILS: nothing below is a finding for this source")
            lines.append(
                f"**{source}** ({self.primary(source)}; human maps: {HUMAN_MAPS[source]}): {status} (baseline "
                f"{row['baseline reference']:.3f} -> {row['baseline decoy']:.3f} under the decoy, RRR "
                f"{row['rrr decoy']:.3f}, {_percent(row['recovered share'])} of the fall recovered, Holm p = "
                f"{row['p (Holm)']:.2g}). Helped: {_cells(helped)}. Hurt: {_cells(hurt)}. "
                f"No significant difference in {len(part) - len(helped) - len(hurt)} of {len(part)} cells."
            )
            flagged = negative[(negative["source"] == source) & negative["gain without human attention"]]
            if len(flagged):
                lines.append(f"Negative control: misplaced maps helped in {_cells(flagged)}: those gains are not "
                             "from human attention.")
            lines.extend(self._caveats(source, part, negative[negative["source"] == source], bool(row["passes"]),
                                       checkpoint, alpha))
        return with_profile_caveat("\n\n".join(lines), self.profile)

    def _caveats(self, source: str, effects: pd.DataFrame, negative: pd.DataFrame, passes: bool, checkpoint: str,
                 alpha: float) -> list[str]:
        """Two readings of one source's cells: gains under the decoy that the same arm does not show with misplaced
        maps (with a failing positive control: evidence that the data and budget can reveal a gain, provisional),
        and map-using arms whose decoy and misplaced-map results are identical (the maps never changed the
        selected network, e.g. ABN's best epoch before its fine-tuning phase)."""
        decoy = effects[effects["regime"] == self.settings.decoy].set_index("arm")
        misplaced = negative.set_index("arm")
        lines: list[str] = []
        helped = decoy[(decoy["p_holm"] < alpha) & (decoy["effect"] > 0)]
        specific = [arm for arm in helped.index if arm in misplaced.index
                    and not misplaced.loc[arm, "gain without human attention"]]
        if specific and not passes:
            lines.append(f"Under the decoy, {', '.join(specific)} gained significantly (Holm) while misplaced maps did "
                         "not help the same arms: the data and budget can reveal a gain from human maps here, but the "
                         "benchmark's own positive control did not pass, so these gains stay provisional.")
        tidy = self.tidy(checkpoint)
        tidy = tidy[tidy["source"] == source]
        metrics = [m for m in (*self.metrics, "evidence_area") if m in tidy.columns]

        def values(arm: str, regime: str) -> np.ndarray:
            rows = tidy[(tidy["arm"] == arm) & (tidy["regime"] == regime)].sort_values("seed")
            return rows[metrics].to_numpy(dtype=float)

        same = [arm for arm in misplaced.index if arm in decoy.index and np.array_equal(
            values(arm, self.settings.decoy), values(arm, self.settings.misplaced), equal_nan=True)]
        if same:
            lines.append(f"{', '.join(same)}: every score of every seed is the same with clean and misplaced maps, so "
                         "the maps never changed the selected network (e.g. a best epoch before the map loss acts).")
        return lines

    def curriculum_check(self) -> pd.DataFrame:
        """The budget curriculum's predicted balance crossing (step, from the scalar Adam simulation) beside the
        measured one (the first epoch whose mean gaze term fell to the CE term), per source, regime and seed."""
        rows = []
        for run in self.runs:
            if run.arm != "gg-cam (budget curriculum)":
                continue
            result = run.runs[0]
            options = result.spec.config["options"]
            steps_per_epoch = options["steps"] // result.spec.config["train"]["epochs"]
            measured = history_balance(result.history, steps_per_epoch)
            rows.append({"scenario": run.scenario, "seed": run.seed,
                         "predicted step": round(options["crossing_fraction"] * options["steps"]),
                         "measured epoch": measured[0] if measured else None,
                         "measured step": measured[1] if measured else None, "steps": options["steps"]})
        return pd.DataFrame(rows)

    def epoch_times(self) -> pd.DataFrame:
        """Seconds per training epoch of each arm (its compute time, validation pass included, median over epochs
        and runs) and its ratio to the baseline's on the same source: the methods' cost on the machine that ran
        them (the histories' ``compute_seconds``)."""
        rows = [{"source": run.scenario.split("/", 1)[0], "arm": run.arm,
                 "seconds": float(result.history["compute_seconds"].median())}
                for run in self.runs for result in run.runs if "compute_seconds" in result.history]
        if not rows:
            return pd.DataFrame(columns=["source", "arm", "seconds per epoch", "x baseline"])
        table = pd.DataFrame(rows).groupby(["source", "arm"], sort=False)["seconds"].median()
        table = table.rename("seconds per epoch").reset_index()
        baseline = table[table["arm"] == BASELINE].set_index("source")["seconds per epoch"]
        table["x baseline"] = table["seconds per epoch"] / table["source"].map(baseline)
        return table

    def tables(self) -> dict[str, pd.DataFrame]:
        out = {}
        for checkpoint in self.checkpoints():
            words = self._checkpoint(checkpoint)
            out[f"effects vs baseline, paired over seeds, Holm over all cells ({words})"] = self.effects(checkpoint)
            out[f"positive control ({words})"] = self.positive_control(checkpoint)
            out[f"negative control ({words})"] = self.negative_control(checkpoint)
        return out

    def figures(self, checkpoint: str = "best") -> dict[str, Figure]:
        """Per source, the arm x regime grid of effects (``*``: Holm p < 0.05); accuracy vs alignment per arm."""
        effects, figures = self.effects(checkpoint), {}
        words = self._checkpoint(checkpoint)
        for source in self.settings.sources:
            part = effects[effects["source"] == source] if not effects.empty else effects
            if part.empty:
                continue
            figures[f"effects: {source}"] = plots.effect_grid(
                part, rows="arm", columns="regime",
                title=f"{source}: {self.primary(source)} minus baseline's, mean over seeds ({words})")
        tidy = self.tidy(checkpoint)
        if not tidy.empty and "alignment" in tidy.columns:
            figures["accuracy vs alignment"] = plots.accuracy_alignment(
                tidy, x="alignment", y="score", by="arm",
                title=f"primary metric vs Spearman rho with human maps, every cell and seed ({words})")
        return figures


def _percent(share: float) -> str:
    return f"{share:.0%}" if np.isfinite(share) else "n/a"


def _cells(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "none"
    return ", ".join(f"{r['arm']} in {r['regime']} ({r['effect']:+.3f}, p = {r['p_holm']:.2g})"
                     for r in frame.to_dict("records"))


def regimes_table(study: AttentionBenchmark) -> pd.DataFrame:
    """Every regime's knobs, one row per regime (for the notebook)."""
    s = study.settings
    return pd.DataFrame([{"regime": name, **asdict(s.regime(name))} for name in s.regimes]).set_index("regime")
