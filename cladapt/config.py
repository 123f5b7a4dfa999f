"""Typed hyper-parameters: dataclasses declare them, ``--set key=value`` overrides them."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Union

from cladapt.errors import ConfigError, UnknownNameError


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``["lr=0.1", "epochs=3"]`` -> ``{"lr": "0.1", "epochs": "3"}``; rejects malformed items."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not key.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"malformed --set {item!r}: expected key=value, e.g. --set lr=0.01")
        out[key.replace("-", "_")] = value.strip()
    return out


def _field_type(cls: type, field: dataclasses.Field) -> Any:
    hints = typing.get_type_hints(cls)
    return hints.get(field.name, str)


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a ``--set`` string (or a Python value) to ``annotation``."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if isinstance(value, str) and value.lower() in ("none", "null", ""):
            return None
        if len(args) == 1:
            return coerce(value, args[0], key)
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ConfigError(
                f"--set {key}={value}: expected one of {', '.join(map(str, choices))}"
            )
        return value
    if not isinstance(value, str):
        return value
    try:
        if annotation is bool:
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation is int:
            return int(value)
        if annotation is float:
            out = float(value)
            return out
        if origin in (tuple, list):
            (inner, *_) = typing.get_args(annotation) or (str,)
            parts = [p for p in value.strip("()[] ").split(",") if p.strip()]
            return origin(coerce(p.strip(), inner, key) for p in parts)
    except ValueError:
        name = getattr(annotation, "__name__", str(annotation))
        raise ConfigError(f"--set {key}={value}: not a valid {name}") from None
    return value


def field_help(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type name, default, help) of each field of a config dataclass."""
    rows = []
    for f in dataclasses.fields(cls):
        ann = _field_type(cls, f)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append(
            (f.name, getattr(ann, "__name__", str(ann)), default, f.metadata.get("help", ""))
        )
    return rows


def build_config(cls: type, values: Mapping[str, Any]) -> Any:
    """Instantiate config dataclass ``cls`` from ``values`` (strings are coerced)."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise UnknownNameError("parameter", key, names)
        kwargs[key] = coerce(value, _field_type(cls, names[key]), key)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def split_values(values: Mapping[str, Any], *classes: type) -> list[dict[str, Any]]:
    """Route each key to the first config class that declares it; unknown keys are an error."""
    parts: list[dict[str, Any]] = [{} for _ in classes]
    known: set[str] = set()
    for cls in classes:
        known |= {f.name for f in dataclasses.fields(cls)}
    for key, value in values.items():
        for i, cls in enumerate(classes):
            if key in {f.name for f in dataclasses.fields(cls)}:
                parts[i][key] = value
                break
        else:
            raise UnknownNameError("parameter", key, known)
    return parts


def param(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with help text: ``lr: float = param(1e-3, "learning rate")``."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(
            default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs
        )
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)
