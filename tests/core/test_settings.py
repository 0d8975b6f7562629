"""Typed settings from a profile section: conversions, and errors that name the file and the key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from attnlib.core.profiles import load_settings
from attnlib.core.settings import SettingsError, from_mapping


@dataclass(frozen=True)
class Inner:
    k: int
    names: tuple[str, ...]


@dataclass(frozen=True)
class Outer:
    lr: float
    mode: Literal["a", "b"]
    patience: int | None
    inner: Inner
    table: dict[str, str]
    weights: list[float]
    flag: bool = False


GOOD = {"lr": 1, "mode": "a", "patience": None, "inner": {"k": 3, "names": ["x", "y"]}, "table": {"r": "s"},
        "weights": [1, 2.5]}


def test_values_are_converted_to_the_declared_types():
    settings = from_mapping(Outer, GOOD, "p.yaml: s")
    assert settings == Outer(1.0, "a", None, Inner(3, ("x", "y")), {"r": "s"}, [1.0, 2.5])
    assert isinstance(settings.lr, float) and isinstance(settings.inner.names, tuple)


@pytest.mark.parametrize(("change", "message"), [
    ({"lrr": 1}, r"p.yaml: s: unknown key 'lrr' \(did you mean 'lr'\?\)"),
    ({"mode": "c"}, r"p.yaml: s.mode: 'c' is not one of \['a', 'b'\]"),
    ({"patience": 2.5}, r"p.yaml: s.patience: expected an integer, got 2.5"),
    ({"lr": True}, r"p.yaml: s.lr: expected a number, got True"),
    ({"inner": {"k": 3}}, r"p.yaml: s.inner: missing key\(s\) \['names'\]"),
    ({"inner": {"k": 3, "names": ["x", 4]}}, r"p.yaml: s.inner.names\[1\]: expected str, got 4"),
    ({"weights": "1, 2"}, r"p.yaml: s.weights: expected a list"),
    ({"table": ["r"]}, r"p.yaml: s.table: expected a mapping"),
    ({"flag": "yes"}, r"p.yaml: s.flag: expected bool, got 'yes'"),
])
def test_a_bad_key_or_value_is_named(change, message):
    with pytest.raises(SettingsError, match=message):
        from_mapping(Outer, {**GOOD, **change}, "p.yaml: s")


def test_missing_keys_without_defaults_are_errors_and_defaults_may_be_left_out():
    with pytest.raises(SettingsError, match=r"missing key\(s\) \['lr'\]: every knob must be set explicitly"):
        from_mapping(Outer, {k: v for k, v in GOOD.items() if k != "lr"}, "p.yaml: s")
    assert from_mapping(Outer, GOOD, "p.yaml: s").flag is False


def test_a_profile_without_the_section_is_named():
    with pytest.raises(SettingsError, match=r"smoke.yaml: no section 'nothing'"):
        load_settings(Outer, "smoke", "nothing")
