"""Where attnlib keeps generated data, caches and runs.

Everything lives under one *home* folder: ``$ATTNLIB_HOME`` when set, otherwise the nearest
parent of the working directory that holds attnlib's ``pyproject.toml`` (a checkout), otherwise
``~/.attnlib``. All three sub-folders are git-ignored in a checkout.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The attnlib home folder (see module docstring)."""
    env = os.environ.get("ATTNLIB_HOME")
    if env:
        return Path(env).expanduser().resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and 'name = "attnlib"' in pyproject.read_text(encoding="utf-8"):
            return folder
    return Path.home() / ".attnlib"


def data_dir() -> Path:
    """Generated (synthetic) datasets: ``<home>/data``."""
    return home() / "data"


def cache_dir() -> Path:
    """Preprocessing cache: ``$ATTNLIB_CACHE_DIR`` or ``<home>/.cache``."""
    env = os.environ.get("ATTNLIB_CACHE_DIR")
    return Path(env).expanduser().resolve() if env else home() / ".cache"


def runs_dir() -> Path:
    """Run store and executed notebooks: ``<home>/runs``."""
    return home() / "runs"
