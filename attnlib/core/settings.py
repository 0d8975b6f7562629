"""Typed settings: a profile section read into a dataclass, checked key by key and type by type.

A study declares its settings as a (frozen) dataclass; :func:`from_mapping` builds it from the profile's
section and raises :class:`SettingsError` naming the profile file and the dotted key for an unknown or
misspelt key (with the closest known one), a missing key, or a value of the wrong type. Every field
without a default must be set in every profile, so each knob that shapes a result is explicit there.
Written here because no small, well-kept library checks ``Literal``/``Optional``/nested dataclasses from
a plain YAML mapping with the file named (pydantic would, as a heavy new dependency for one function).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Collection, Mapping
from typing import Any, TypeVar, Union

from attnlib import UsageError

T = TypeVar("T")


class SettingsError(UsageError):
    """A profile section that does not match its settings dataclass (unknown/missing key, wrong type)."""


def from_mapping(cls: type[T], data: Any, where: str, required: Collection[str] = ()) -> T:
    """``cls`` (a dataclass) built from ``data``; ``where`` names the file and key path for errors
    (e.g. ``"quick.yaml: gg_cam"``). Nested dataclass fields are read recursively; lists become tuples
    where the field says ``tuple``. ``required``: fields that must be set although they have a default
    (e.g. the knobs of a data generator that shape a result)."""
    if not isinstance(data, Mapping):
        raise SettingsError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SettingsError(f"{where}: unknown key {key!r}{hint}; known keys: {', '.join(fields)}")
    missing = [
        name for name, f in fields.items()
        if name not in data and (name in required or (
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING))
    ]
    if missing:
        raise SettingsError(f"{where}: missing key(s) {missing}: every knob must be set explicitly in the profile")
    values = {name: _convert(data[name], hints[name], f"{where}.{name}") for name in fields if name in data}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise SettingsError(f"{where}: {err}") from err


def _convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against the type ``hint`` (and converted: int -> float, list -> tuple, dataclass)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, where)
            except SettingsError as err:
                errors.append(str(err))
        raise SettingsError(errors[0] if len(errors) == 1 else f"{where}: {value!r} is none of {_name(hint)}")
    if origin is typing.Literal:
        if value not in args:
            raise SettingsError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise SettingsError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        elif origin is list:
            args = (args[0] if args else Any,) * len(value)
        elif len(args) != len(value):
            raise SettingsError(f"{where}: expected {len(args)} values, got {len(value)}")
        items = [_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise SettingsError(f"{where}: expected a mapping, got {value!r}")
        key_type, value_type = args or (Any, Any)
        return {_convert(k, key_type, where): _convert(v, value_type, f"{where}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint in (bool, str):
        if not isinstance(value, hint):
            raise SettingsError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    if hint is type(None):
        if value is not None:
            raise SettingsError(f"{where}: expected null, got {value!r}")
        return None
    raise TypeError(f"{where}: settings type {hint!r} is not supported")


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
