"""What the built-in stream builders share: the fields every definition sets, the digits source
domain, seeded shifts, and the one-line error for a missing ``--data-root``."""

from __future__ import annotations

import sys
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

from torch.utils.data import TensorDataset

from cladapt.data.digits import CLASS_NAMES, digits_split
from cladapt.data.shifts import apply_shift
from cladapt.errors import DataError
from cladapt.stream import Experience, TTAAugmentation

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def shifted(ds: TensorDataset, shift: str, level: float, name: str) -> TensorDataset:
    x, y = ds.tensors
    return TensorDataset(apply_shift(x, shift, level, seed=zlib.crc32(name.encode())), y)


def common_fields(name: str, d: dict[str, Any]) -> dict[str, Any]:
    return dict(
        name=name,
        protocol=d["protocol"],
        class_names=list(CLASS_NAMES),
        input_shape=(3, 32, 32),
        settings=tuple(d.get("settings", ())),
        defaults=dict(d.get("defaults", {})),
        strategy_defaults={k: dict(v) for k, v in d.get("strategy_defaults", {}).items()},
        strategy_sources=dict(d.get("strategy_sources", {})),
        description=d.get("description", ""),
        source_id=d.get("source_id", ""),
        tta_augmentation=TTAAugmentation(**d.get("tta_augmentation", {})),
        source_recipes={k: dict(v) for k, v in d.get("source_recipes", {}).items()},
    )


def digits_source() -> Experience:
    train, test = digits_split()
    return Experience(name="clean", kind="domain", train=train, test=test, classes=list(range(10)))


def require_data_root(data_root: str | None, what: str) -> Path:
    if not data_root:
        raise DataError(f"{what} reads files from disk: pass --data-root DIR")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DataError(f"--data-root {root} is not a directory")
    return root


def definitions() -> dict[str, dict[str, Any]]:
    """Every stream table of this package's ``*.toml`` files, by name."""
    out: dict[str, dict[str, Any]] = {}
    for entry in sorted(resources.files("cladapt.streams").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            out.update(tomllib.loads(entry.read_text(encoding="utf-8")))
    return out
