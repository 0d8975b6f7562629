"""Run profiles as data: ``smoke`` (tests, CI), ``quick`` (CPU main job, default), ``paper`` (GPU).

Each profile is one YAML file beside this module; notebooks read theirs with :func:`load_profile`,
and the chosen profile is saved with every run.
"""

from __future__ import annotations

import os
from importlib import resources
from typing import Any

import yaml

PROFILES = ("smoke", "quick", "paper")
ENV_VAR = "ATTNLIB_PROFILE"


def profile_name(name: str | None = None) -> str:
    """``name``, else ``$ATTNLIB_PROFILE``, else ``quick``; raises ``ValueError`` for an unknown name."""
    chosen = name or os.environ.get(ENV_VAR) or "quick"
    if chosen not in PROFILES:
        raise ValueError(f"unknown profile {chosen!r}; choose one of {PROFILES}")
    return chosen


def load_profile(name: str | None = None) -> dict[str, Any]:
    """The profile's settings as a dict (see :func:`profile_name` for how the name is chosen)."""
    chosen = profile_name(name)
    text = resources.files(__package__).joinpath(f"{chosen}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)
