"""Progress bars: ``tqdm.auto``'s choice (a widget in Jupyter), but text under the sweep.

A widget bar in a notebook that papermill executes is saved as its first text form, a bar stuck at 0 %.
The sweep sets ``$ATTNLIB_TEXT_PROGRESS=1`` in its kernels, where :func:`tqdm` gives plain text bars.
"""

from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm as auto_tqdm
from tqdm.std import tqdm as text_tqdm

TEXT_ENV = "ATTNLIB_TEXT_PROGRESS"
#: Seconds between text-bar redraws: papermill saves each redraw as an output of its own, and nobody
#: watches a headless kernel, so a few redraws per bar suffice.
TEXT_MININTERVAL_S = 10.0


def tqdm(*args: Any, **kwargs: Any) -> text_tqdm:
    """A progress bar taking ``tqdm``'s arguments: text when ``$ATTNLIB_TEXT_PROGRESS`` is set (not
    "" or "0"), redrawn at most every :data:`TEXT_MININTERVAL_S` unless ``mininterval`` is given; else
    ``tqdm.auto.tqdm``."""
    if os.environ.get(TEXT_ENV, "") not in ("", "0"):
        return text_tqdm(*args, **{"mininterval": TEXT_MININTERVAL_S, **kwargs})
    return auto_tqdm(*args, **kwargs)
