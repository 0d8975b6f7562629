"""Run profiles as data: ``smoke`` (tests, CI), ``quick`` (CPU main job, default), ``paper`` (GPU).

Each profile is one YAML file beside this module; notebooks read theirs with :func:`load_profile`,
and the chosen profile is saved with every run.
"""

from __future__ import annotations

import difflib
import os
from importlib import resources
from typing import Any, TypeVar

import yaml

from attnlib import UsageError
from attnlib.core.settings import SettingsError, from_mapping

T = TypeVar("T")

ENV_VAR = "ATTNLIB_PROFILE"
DEFAULT = "quick"


class UnknownProfileError(UsageError):
    """A profile name with no ``<name>.yaml`` beside this module."""


def available_profiles() -> tuple[str, ...]:
    """The profile names: the stems of this package's ``*.yaml`` files, sorted."""
    files = resources.files(__package__).iterdir()
    return tuple(sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml")))


def check_profile(name: str) -> str:
    """``name`` when it is a profile; else :class:`UnknownProfileError` naming the profiles (and a close
    one)."""
    known = available_profiles()
    if name in known:
        return name
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UnknownProfileError(f"unknown profile {name!r}; {hint}profiles: {', '.join(known)}")


def profile_name(name: str | None = None) -> str:
    """``name``, else ``$ATTNLIB_PROFILE``, else ``quick``, checked with :func:`check_profile`."""
    return check_profile(name or os.environ.get(ENV_VAR) or DEFAULT)


def load_profile(name: str | None = None) -> dict[str, Any]:
    """The profile's settings as a dict (see :func:`profile_name` for how the name is chosen)."""
    chosen = profile_name(name)
    text = resources.files(__package__).joinpath(f"{chosen}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def load_settings(cls: type[T], name: str | None, section: str) -> T:
    """The profile's ``section`` as the settings dataclass ``cls``, checked key by key
    (:func:`~attnlib.core.settings.from_mapping`; errors name ``<profile>.yaml`` and the key)."""
    chosen = profile_name(name)
    profile = load_profile(chosen)
    if section not in profile:
        raise SettingsError(f"{chosen}.yaml: no section {section!r}")
    return from_mapping(cls, profile[section], f"{chosen}.yaml: {section}")
