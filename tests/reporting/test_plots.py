"""attnlib.reporting.plots: the benchmark's effect grid and accuracy-alignment scatter build, with the cells,
marks and points they should have."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from attnlib.reporting.plots import accuracy_alignment, effect_grid  # noqa: E402


def _effects() -> pd.DataFrame:
    """Three methods x two datasets, one cell (gala, b) missing, one p_holm NaN (no test)."""
    rows = [
        ("rrr", "a", 0.031, 0.01),
        ("rrr", "b", -0.020, 0.2),
        ("gg-cam", "a", 0.004, 0.049),
        ("gg-cam", "b", 0.120, np.nan),
        ("gala", "a", -0.080, 0.001),
    ]
    return pd.DataFrame(rows, columns=["method", "dataset", "effect", "p_holm"])


def test_effect_grid_marks_exactly_the_holm_significant_cells():
    fig = effect_grid(_effects(), rows="method", columns="dataset", title="accuracy", alpha=0.05)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 6
    # row-major in order of appearance: rrr (a, b), gg-cam (a, b), gala (a, b)
    assert texts == ["+0.031*", "-0.020", "+0.004*", "+0.120", "-0.080*", "n/a"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["rrr", "gg-cam", "gala"]
    assert ax.get_xlabel() == "dataset" and ax.get_ylabel() == "method"
    low, high = ax.images[0].get_clim()
    assert low == pytest.approx(-0.12) and high == pytest.approx(0.12)
    strict = effect_grid(_effects(), rows="method", columns="dataset", title="accuracy", alpha=0.01)
    assert sum("*" in t.get_text() for t in strict.axes[0].texts) == 1
    plt.close("all")


def test_effect_grid_refuses_two_rows_for_one_cell():
    doubled = pd.concat([_effects(), _effects().iloc[:1]])
    with pytest.raises(ValueError, match="several rows"):
        effect_grid(doubled, rows="method", columns="dataset", title="x")


def test_accuracy_alignment_has_one_point_per_row_and_a_legend():
    frame = pd.DataFrame({
        "accuracy": [0.7, 0.8, 0.75, 0.9, 0.6, np.nan],
        "alignment": [0.1, 0.3, 0.2, 0.4, 0.0, 0.5],
        "method": ["rrr", "rrr", "gala", "gala", "baseline", "baseline"],
    })
    fig = accuracy_alignment(frame, x="alignment", y="accuracy", by="method", title="t")
    ax = fig.axes[0]
    sizes = [len(c.get_offsets()) for c in ax.collections]
    assert sizes == [2, 2, 1]  # the row without an accuracy is left out
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["rrr", "gala", "baseline"]
    np.testing.assert_allclose(ax.collections[1].get_offsets(), [[0.2, 0.75], [0.4, 0.9]])
    plt.close("all")
