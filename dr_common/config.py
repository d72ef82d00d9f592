"""Typed configuration loaded from a TOML file with environment overrides.

Each daemon declares its configuration as nested frozen dataclasses. `load()` fills
them from TOML, then from environment variables named PREFIX + path, sections joined
with a double underscore (e.g. `DR_NODE_ENGINE__CHUNK_WORKERS=4` sets
`engine.chunk_workers`). Values from the environment are parsed according to the
field's type, so a typo fails at start-up with a message naming the variable, not later.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from dr_common.errors import InvalidArgument

T = TypeVar("T")


def load(cls: type[T], path: str | os.PathLike | None, *, env_prefix: str,
         environ: Mapping[str, str] | None = None) -> T:
    """Builds `cls` from the TOML file at `path` (optional) and the environment."""
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise InvalidArgument(f"configuration file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise InvalidArgument(f"configuration file {path} is not valid TOML: {e}") from None
    env = os.environ if environ is None else environ
    _apply_env(cls, data, env, env_prefix)
    return _build(cls, data, where="")


def _apply_env(cls: type, data: dict[str, Any], env: Mapping[str, str], prefix: str) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name.upper()}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            section = data.setdefault(f.name, {})
            _apply_env(tp, section, env, name + "__")
        elif name in env:
            data[f.name] = _parse_env(tp, env[name], name)


def _parse_env(tp: Any, raw: str, name: str) -> Any:
    base = _strip_optional(tp)
    try:
        if base is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if base in (int, float):
            return base(raw)
        if typing.get_origin(base) in (list, tuple):
            return [s.strip() for s in raw.split(",") if s.strip()]
        return raw
    except ValueError:
        raise InvalidArgument(f"environment variable {name}={raw!r} is not a valid {base}") from None


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _build(cls: type[T], data: dict[str, Any], *, where: str) -> T:
    if not isinstance(data, dict):
        raise InvalidArgument(f"configuration section [{where}] must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidArgument(
            f"unknown configuration key(s) {', '.join(unknown)} in [{where or 'top level'}]")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp = hints[f.name]
        value = data[f.name]
        key = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, value, where=key)
        else:
            kwargs[f.name] = _check(tp, value, key)
    return cls(**kwargs)


def _check(tp: Any, value: Any, key: str) -> Any:
    base = _strip_optional(tp)
    origin = typing.get_origin(base)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise InvalidArgument(f"configuration key {key} must be a list")
        return tuple(value) if origin is tuple else list(value)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(base, type) and not isinstance(value, base):
        raise InvalidArgument(
            f"configuration key {key} must be {base.__name__}, not {type(value).__name__}")
    return value
