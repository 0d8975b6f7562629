"""attnlib.core.profiles: the profile names come from the YAML files; an unknown one is a usage error."""

from __future__ import annotations

import pytest

from attnlib import UsageError
from attnlib.core.profiles import (
    UnknownProfileError,
    available_profiles,
    check_profile,
    load_profile,
    profile_name,
)


def test_profiles_are_the_yaml_files() -> None:
    assert available_profiles() == ("paper", "quick", "smoke")
    for name in available_profiles():
        assert check_profile(name) == name and load_profile(name)["name"] == name


def test_unknown_profile_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnknownProfileError, match=r"'smok'; did you mean 'smoke'\? profiles: paper, "):
        load_profile("smok")
    with pytest.raises(UnknownProfileError, match=r"unknown profile 'fast'; profiles: paper, quick, smoke$"):
        check_profile("fast")
    monkeypatch.setenv("ATTNLIB_PROFILE", "papr")
    with pytest.raises(UsageError, match="'papr'; did you mean 'paper'"):
        profile_name()
    assert issubclass(UnknownProfileError, ValueError)
