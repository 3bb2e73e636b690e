"""Frozen, typed configuration trees: parsed once at the edge (CLI or API call), then passed down.

Each concern defines its own ``@dataclass(frozen=True)`` with a one-line ``help`` in each field's metadata
and a ``validate()`` method that raises :class:`~rltuner.errors.ConfigError`. This module turns dicts and
``name=value`` overrides into such trees and back.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from rltuner.errors import ConfigError

T = TypeVar("T")


def field(default: Any, help: str, *, result: bool = True, **kwargs: Any) -> Any:
    """A dataclass field with a help text (shown by ``--help`` and the docs).

    ``result=False`` marks a setting of the machine that does not change what a run computes (the CPU thread
    count): it is recorded with the run but left out of :func:`result_inputs`.
    """
    metadata = {"help": help, "result": result}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config tree as plain JSON-able dicts."""
    return dataclasses.asdict(cfg)


def result_inputs(cfg: Any) -> dict[str, Any]:
    """:func:`to_dict` without the fields marked ``result=False``: what a stage's fingerprint hashes."""
    out = to_dict(cfg)
    for f in dataclasses.fields(cfg):
        if not f.metadata.get("result", True):
            out.pop(f.name, None)
        elif dataclasses.is_dataclass(value := getattr(cfg, f.name)) and not isinstance(value, type):
            out[f.name] = result_inputs(value)
    return out


def _coerce(value: Any, tp: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in typing.get_args(tp):
            return None
        for arg in args:
            try:
                return _coerce(value, arg, name)
            except ConfigError:
                continue
        raise ConfigError(f"{name}: cannot read {value!r} as {tp}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping for {tp.__name__}")
        return from_dict(tp, value, prefix=f"{name}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if tp in (int, float, str):
        if isinstance(value, bool) and tp is not str:
            # bool is an int in Python: a TOML `true` for a number would silently become 1 (1.0).
            raise ConfigError(f"{name}: expected {tp.__name__}, got {value!r}")
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            if tp is int and isinstance(value, str):
                return int(float(value)) if float(value).is_integer() else int(value)
            result = tp(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{name}: expected {tp.__name__}, got {value!r}") from None
        if tp is float and not math.isfinite(result):
            raise ConfigError(f"{name}: must be a finite number, got {value!r}")
        return result
    if origin in (tuple, list):
        items = value.split(",") if isinstance(value, str) else list(value)
        type_args = typing.get_args(tp)
        inner = type_args[0] if type_args else str
        coerced = [_coerce(v, inner, name) for v in items]
        return tuple(coerced) if origin is tuple else coerced
    return value


def check_types(cfg: Any) -> None:
    """Refuse fields of the wrong type in a config built directly (``TuneConfig(stored_states="false")``).

    :func:`from_dict` and :func:`apply_overrides` read strings as their fields' types; a dataclass built by
    hand takes anything, and Python would then treat the string ``"false"`` as true. Checks the plain
    ``bool``, ``int``, ``float`` and ``str`` fields (an int is a float; a bool is neither).

    Raises:
        ConfigError: naming the field, the value and the type it needs.
    """
    import numbers

    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        tp, value = hints.get(f.name), getattr(cfg, f.name)
        if tp is bool:
            ok, want = isinstance(value, bool), "true or false (a bool)"
        elif tp is int:
            ok, want = isinstance(value, numbers.Integral) and not isinstance(value, bool), "an integer"
        elif tp is float:
            ok, want = isinstance(value, numbers.Real) and not isinstance(value, bool), "a number"
        elif tp is str:
            ok, want = isinstance(value, str), "a string"
        else:
            continue
        if not ok:
            raise ConfigError(
                f"{f.name} must be {want}, got {value!r}; to give settings as strings use "
                "with_overrides(), preset() or from_dict(), which read them"
            )


def coerce_value(value: Any, tp: Any, name: str) -> Any:
    """``value`` read as type ``tp`` (a config field's annotation), as :func:`from_dict` reads it.

    Raises:
        ConfigError: the value cannot be read as ``tp`` (names ``name``).
    """
    return _coerce(value, tp, name)


def from_dict(cls: type[T], data: Mapping[str, Any], *, prefix: str = "") -> T:
    """Build a config dataclass from a (possibly partial) dict; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(prefix + u for u in sorted(unknown))}; "
            f"known: {', '.join(sorted(prefix + n for n in names))}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    cfg = cls(**kwargs)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    return cfg


def apply_overrides(cfg: T, overrides: Mapping[str, Any]) -> T:
    """Return a copy of ``cfg`` with dotted ``name=value`` overrides applied and validated."""
    data = to_dict(cfg)
    for key, value in overrides.items():
        node = data
        parts = key.replace("-", "_").split(".")
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], dict):
                raise ConfigError(f"unknown setting {key!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"unknown setting {key!r}; known: {', '.join(sorted(node))}")
        node[parts[-1]] = value
    return from_dict(type(cfg), data)


def read_settings(path: str | Path) -> dict[str, Any]:
    """Settings from a file: TOML (``[section]`` tables for nested configs), or a JSON object such as a run's
    ``config.json``.

    Raises:
        ConfigError: the file cannot be read or parsed, or does not hold a table of settings.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read settings file {p}: {exc.strerror or exc}") from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(raw)
        else:
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10
                import tomli as tomllib
            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        kind = "JSON" if p.suffix.lower() == ".json" else "TOML"
        raise ConfigError(f"settings file {p} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"settings file {p} must hold a table of name = value settings")
    return data


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        name = str(key).replace("-", "_")
        if isinstance(value, Mapping) and isinstance(out.get(name), dict):
            out[name] = _merge(out[name], value)
        else:
            out[name] = value
    return out


def with_settings(cfg: T, settings: Mapping[str, Any]) -> T:
    """Return a copy of ``cfg`` with ``settings`` (e.g. from :func:`read_settings`) applied and validated.

    Nested mappings change only the fields they name in a nested config; unknown names are an error.

    Raises:
        ConfigError: an unknown setting or a bad value (the message names the setting).
    """
    return from_dict(type(cfg), _merge(to_dict(cfg), settings))


def flatten_settings(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as the dotted names :func:`apply_overrides` takes: ``{"model": {"arch": "gru"}}`` ->
    ``{"model.arch": "gru"}``."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat.update(flatten_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def parse_override(text: str) -> tuple[str, str]:
    """``"gamma=0.5"`` -> ``("gamma", "0.5")``."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like name=value")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def help_texts(cls: type) -> dict[str, str]:
    """Field name -> help text of a config dataclass."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
