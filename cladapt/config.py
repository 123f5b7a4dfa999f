"""Typed hyper-parameters: dataclasses declare them, ``--set key=value`` overrides them."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Union

from cladapt.errors import ConfigError, UnknownNameError


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``["lr=0.1", "epochs=3"]`` -> ``{"lr": "0.1", "epochs": "3"}``; rejects malformed items."""
    out: dict[str, str] = {}
    given: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not key.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"malformed --set {item!r}: expected key=value, e.g. --set lr=0.01")
        name = key.replace("-", "_")
        if name in out:  # batch-size and batch_size are one key: never keep just the last
            raise ConfigError(
                f"--set {given[name]} and --set {item.strip()}: {name} is given twice"
            )
        out[name], given[name] = value.strip(), item.strip()
    return out


def norm_value(value: Any) -> str:
    """One spelling per typed value: 0.010 == 1e-2, -0.0 == 0.0, True == true, (1, 2) ==
    [1, 2]. Values must be typed first (a field's values then share one type): the string
    "false" and False differ here."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value + 0.0)  # + 0.0 turns -0.0 into 0.0
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(norm_value(v) for v in value) + "]"
    return str(value)


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
        by_text = {str(c): c for c in choices}  # --set gives text; choices may be numbers
        if value not in choices and isinstance(value, str) and value in by_text:
            value = by_text[value]
        if value not in choices:
            raise ConfigError(
                f"--set {key}={value}: expected one of {', '.join(map(str, choices))}"
            )
        return value
    if not isinstance(value, str):
        return value
    if annotation in (int, float) or origin in (tuple, list):
        _check_number_text(key, value, nested=origin in (tuple, list))
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
            if math.isinf(out) and "inf" not in value.lower():  # 1e400 overflows to inf
                raise ConfigError(f"--set {key}={value}: too large for a float (not finite)")
            mantissa = value.lower().split("e")[0]
            if out == 0.0 and any(c in "123456789" for c in mantissa):  # 1e-400 underflows to 0
                raise ConfigError(f"--set {key}={value}: too small for a float (it would be 0)")
            return out
        if origin in (tuple, list):
            (inner, *_) = typing.get_args(annotation) or (str,)
            parts = [p for p in value.strip("()[] ").split(",") if p.strip()]
            return origin(coerce(p.strip(), inner, key) for p in parts)
    except ValueError:
        name = getattr(annotation, "__name__", str(annotation))
        raise ConfigError(f"--set {key}={value}: not a valid {name}") from None
    return value


def _check_number_text(key: str, value: str, nested: bool) -> None:
    """Python's int() and float() read ``1_0`` as 10; a list of numbers is one flat list."""
    if "_" in value:
        raise ConfigError(f"--set {key}={value}: write numbers without underscores (e.g. 10)")
    if nested and any(c in value.strip().strip("()[]") for c in "()[]"):
        raise ConfigError(
            f"--set {key}={value}: expected one flat list of numbers, e.g. {key}=[0.1,0.01]"
        )


def type_name(annotation: Any) -> str:
    """A parameter's type as ``describe`` shows it; a Literal lists its choices."""
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + " | ".join(map(str, typing.get_args(annotation)))
    return getattr(annotation, "__name__", str(annotation))


def field_help(cls: type) -> list[tuple[str, str, Any, str, str]]:
    """(name, type name, default, valid range, help) of each field of a config dataclass."""
    rows = []
    for f in dataclasses.fields(cls):
        ann = _field_type(cls, f)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append(
            (
                f.name,
                type_name(ann),
                default,
                describe_range(f.metadata.get("range")),
                f.metadata.get("help", ""),
            )
        )
    return rows


def _numeric(annotation: Any) -> bool:
    if annotation in (int, float):
        return True
    return typing.get_origin(annotation) in (tuple, list) and any(
        a in (int, float) for a in typing.get_args(annotation)
    )


def describe_range(bounds: tuple | None) -> str:
    if not bounds:
        return ""
    lo, hi, lo_open, hi_open = bounds
    left = "" if lo is None else f"{lo} {'<' if lo_open else '<='} "
    right = "" if hi is None else f" {'<' if hi_open else '<='} {hi}"
    return f"{left}x{right}"


def check_range(key: str, value: Any, bounds: tuple | None) -> None:
    """One-line ConfigError if a number is NaN/infinite or outside its declared range."""
    if isinstance(value, (tuple, list)):
        for v in value:
            check_range(key, v, bounds)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"--set {key}={value}: must be a finite number")
    if not bounds:
        return
    lo, hi, lo_open, hi_open = bounds
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (
        hi is not None and (value >= hi if hi_open else value > hi)
    )
    if bad:
        raise ConfigError(f"--set {key}={value}: out of range, expected {describe_range(bounds)}")


def build_config(cls: type, values: Mapping[str, Any]) -> Any:
    """Instantiate config dataclass ``cls`` from ``values`` (strings are coerced, numbers
    checked against their declared range)."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise UnknownNameError("parameter", key, names)
        kwargs[key] = coerce(value, _field_type(cls, names[key]), key)
        check_range(key, kwargs[key], names[key].metadata.get("range"))
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def unranged_numbers(cls: type) -> list[str]:
    """Numeric fields of ``cls`` that declare no valid range (a test keeps this empty)."""
    return [
        f.name
        for f in dataclasses.fields(cls)
        if _numeric(_field_type(cls, f)) and "range" not in f.metadata
    ]


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


def param(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    **kwargs: Any,
) -> Any:
    """A dataclass field with help text and, for numbers, its valid range:
    ``lr: float = param(1e-3, "learning rate", ge=0)``. Numbers are always finite; every
    numeric parameter declares a range (``ge``/``gt`` lower, ``le``/``lt`` upper bound)."""
    metadata: dict[str, Any] = {"help": help}
    if any(b is not None for b in (ge, gt, le, lt)):
        metadata["range"] = (
            gt if gt is not None else ge,
            lt if lt is not None else le,
            gt is not None,
            lt is not None,
        )
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(
            default_factory=lambda: type(default)(default), metadata=metadata, **kwargs
        )
    return dataclasses.field(default=default, metadata=metadata, **kwargs)
