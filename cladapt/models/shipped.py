"""Weights that ship inside the package: the models the embedded streams would otherwise pre-train
on first use: the digits source CNN of digits-c / digits-shift (0.26 MB), EcoTTA's meta networks
warmed up on it (0.26 MB), ViDA's adapters trained on its source data, the letters trunk of
``small-cnn --pretrained`` (0.27 MB) and mtil-mini's tiny CLIP ``clip-tiny-rn`` (14.5 MB, 88 % of
it the 49 408-token embedding table of CLIP's tokenizer).

Two trainings of one recipe differ with the machine and its thread count (float reductions), so a
model trained at first use made every number that depends on it move from machine to machine.
These files were made once by ``benchmarks/train_embedded_models.py`` (one CPU thread,
deterministic algorithms, fixed seeds) and are found by the name of the cache file the code would
otherwise write: the name carries the fingerprint of the recipe, so a recipe changed with
``--set`` (or by the code) misses them and is trained and cached as before. Each file's SHA-256
is in ``manifest.json`` and checked before its first use.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cladapt.errors import DataError

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
MANIFEST = SHIPPED_DIR / "manifest.json"
# "0" ignores the shipped files (the script that makes them, and tests of training at first use)
ENV = "CLADAPT_SHIPPED_WEIGHTS"


def enabled() -> bool:
    return os.environ.get(ENV, "1") != "0"


@functools.cache
def manifest() -> dict[str, dict[str, Any]]:
    """``{"<kind>/<file name>": {"sha256", "bytes", ...}}``; empty if none ship."""
    if not MANIFEST.is_file():
        return {}
    return json.loads(MANIFEST.read_text())["files"]


def key_of(cache_path: Path) -> str:
    """The manifest key of a cache path: its folder under the cache and its file name."""
    return f"{cache_path.parent.name}/{cache_path.name}"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@functools.cache
def _verified(key: str) -> Path:
    entry = manifest()[key]
    path = SHIPPED_DIR / key
    if not path.is_file():
        raise DataError(f"shipped weights {key} are missing from the installed package; reinstall")
    if sha256_of(path) != entry["sha256"]:
        raise DataError(
            f"shipped weights {key} do not match their SHA-256 in {MANIFEST.name}; reinstall"
        )
    return path


def shipped_file(cache_path: Path) -> Path | None:
    """The shipped, verified file that stands for ``cache_path``, or None (not shipped, or
    shipped weights switched off with ``CLADAPT_SHIPPED_WEIGHTS=0``)."""
    if not enabled():
        return None
    key = key_of(cache_path)
    return _verified(key) if key in manifest() else None
