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


def test_every_synthetic_knob_is_explicit_in_every_profile(monkeypatch):
    from attnlib.core import profiles
    from attnlib.core.settings import SettingsError
    from attnlib.data.synthetic import defaults

    for name in profiles.available_profiles():
        for section in defaults.KNOBS:
            defaults.synthetic_config(section, name)
    smoke = profiles.load_profile("smoke")
    lacking = {**smoke, "abn_synthetic": {k: v for k, v in smoke["abn_synthetic"].items() if k != "n_annotators"}}
    monkeypatch.setattr(defaults, "load_profile", lambda name: lacking)
    with pytest.raises(SettingsError, match=r"smoke.yaml: abn_synthetic: missing key\(s\) \['n_annotators'\]"):
        defaults.synthetic_config("abn_synthetic", "smoke")
    misspelt = {**smoke, "abn_synthetic": {**smoke["abn_synthetic"], "n_annotator": 2}}
    monkeypatch.setattr(defaults, "load_profile", lambda name: misspelt)
    with pytest.raises(SettingsError, match=r"unknown key 'n_annotator' \(did you mean 'n_annotators'\?\)"):
        defaults.synthetic_config("abn_synthetic", "smoke")
