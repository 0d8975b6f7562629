"""attnlib.core.progress: text bars under the sweep, tqdm.auto's choice otherwise."""

from __future__ import annotations

import io

import pytest
import tqdm.auto
import tqdm.std

from attnlib.core.progress import TEXT_MININTERVAL_S
from attnlib.core.progress import tqdm as progress


def test_text_bars_when_the_sweep_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTNLIB_TEXT_PROGRESS", "1")
    with progress(range(3), file=io.StringIO()) as bar:
        assert type(bar) is tqdm.std.tqdm and bar.mininterval == TEXT_MININTERVAL_S
    with progress(total=3, mininterval=0.5, file=io.StringIO()) as bar:
        assert bar.mininterval == 0.5


@pytest.mark.parametrize("value", [None, "", "0"])
def test_auto_bars_otherwise(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("ATTNLIB_TEXT_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("ATTNLIB_TEXT_PROGRESS", value)
    with progress(range(3), file=io.StringIO()) as bar:
        assert type(bar) is tqdm.auto.tqdm
