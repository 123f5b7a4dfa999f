"""The on-disk cache every layer shares: where cached artefacts live, a stable fingerprint of
what made them, a cross-process lock while one is made, atomic writes, cached generated tensors.
It imports nothing from cladapt but errors, so data and models both use it without climbing."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

CACHE_ENV = "CLADAPT_CACHE"


def cache_dir() -> Path:
    """``$CLADAPT_CACHE`` or ``~/.cache/cladapt`` (created on demand where it can be)."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "cladapt")
    path = Path(root)
    with contextlib.suppress(OSError):  # a read-only cache is used as it is
        path.mkdir(parents=True, exist_ok=True)
    return path


def fingerprint(**facts: Any) -> str:
    """A short stable hash of the facts that determine a cached artefact."""
    blob = json.dumps(facts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@contextlib.contextmanager
def preparing(path: Path) -> Iterator[None]:
    """Hold ``path``'s lock file while a cached artefact is made: concurrent processes (bench
    workers) make it once; the others wait, then load it. Re-check the cache inside. A cache
    that cannot be written (a read-only mount) takes no lock: the artefact is made in memory
    and not kept. Something other than a file at ``path`` is refused before any work."""
    from filelock import FileLock

    from cladapt.errors import DataError

    if path.exists() and not path.is_file():
        raise DataError(f"the cache path {path} is not a file (a folder?); remove it and run again")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock")
        lock.acquire()
    except OSError:  # read-only or full cache: nothing to share, nothing to protect
        yield
        return
    try:
        yield
    finally:
        lock.release()


def code_digest(*objects: Any) -> str:
    """A hash of the source code of modules or functions: part of a generated artefact's key,
    so that a change to the code that made it invalidates the cached copy."""
    return fingerprint(code=[inspect.getsource(o) for o in objects])


def cached_tensors(
    name: str, facts: dict[str, Any], build: Callable[[], tuple[torch.Tensor, ...]]
) -> tuple[torch.Tensor, ...]:
    """Generated data cached on disk under ``cache_dir()/data``, keyed by ``facts`` (the
    definition: arguments, seed, ``code_digest`` of the generator), made once across
    processes; an unreadable file is rebuilt."""
    path = cache_dir() / "data" / f"{name}-{fingerprint(**facts)}.pt"
    for _attempt in range(2):
        if path.is_file():
            try:
                return tuple(torch.load(path, weights_only=True))
            except Exception:  # truncated or foreign: rebuilt below
                path.unlink(missing_ok=True)
        with preparing(path):
            if path.is_file():
                continue  # another process made it while this one waited
            tensors = tuple(t.contiguous() for t in build())
            with contextlib.suppress(OSError):  # a read-only or full cache: kept in memory only
                atomic_save(path, list(tensors))
            return tensors
    return tuple(build())


def atomic_save(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
