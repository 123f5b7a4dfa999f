"""Checkpoints: weights digests, the cached-or-shipped checkpoint of a training recipe, atomic
saves and safe loads (weights_only). The cache itself is :mod:`cladapt.cache`."""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cladapt.cache import atomic_save, cache_dir, preparing
from cladapt.errors import DataError
from cladapt.terminal import clean


def weights_digest(model: torch.nn.Module) -> str:
    """16 hex digits of a hash over a model's parameters and buffers (names, dtypes, bytes): the
    identity of trained weights, which a training recipe alone does not fix (float reductions
    differ with thread counts, so two trainings of one recipe can end apart)."""
    return state_digest(model.state_dict())


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """:func:`weights_digest` of a state dict."""
    h = hashlib.sha256()
    for name, t in sorted(state.items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def ensure_checkpoint(
    path: Path, train: Callable[[], torch.nn.Module], meta: dict[str, Any]
) -> Path:
    """The shipped weights that stand for ``path`` (:mod:`cladapt.models.shipped`), else
    ``path`` if this machine has it; otherwise ``train()`` a model and save its weights there,
    once across processes (parallel bench workers wait for the first and reuse it)."""
    from cladapt.models.shipped import shipped_file

    shipped = shipped_file(path)
    if shipped is not None:
        return shipped
    if path.is_file():
        return path
    with preparing(path):
        if not path.is_file():  # another process may have made it while this one waited
            save_checkpoint(path, train().state_dict(), meta)
    return path


def save_checkpoint(path: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write atomically: a crash mid-save never leaves a truncated checkpoint behind. The meta
    records the file's cache name (``file``), so a load can tell this artefact from another
    cladapt checkpoint copied over it. A cache that cannot be written (read-only, full) keeps
    nothing: the weights are used from memory, with a warning."""
    cpu_state = {k: v.detach().cpu() for k, v in state_dict.items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(path, {"state_dict": cpu_state, "meta": {**meta, "file": path.name}})
    except OSError as exc:
        warnings.warn(
            f"could not cache {path} ({exc.strerror or exc}); the weights are used without "
            "being kept",
            stacklevel=2,
        )


def load_cached(model: torch.nn.Module, path: Path) -> bool:
    """Load a cached artefact into ``model``; False if there is none. A cache file that cannot
    be loaded (truncated by a full disk, written by another version) is deleted with a warning,
    so the caller rebuilds it instead of failing."""
    if not path.is_file():
        return False
    try:
        meta = load_into(model, path)
        if meta.get("file", path.name) != path.name:  # another artefact copied over this one
            raise DataError(f"it holds {meta['file']}, not {path.name}")
    except DataError as exc:
        if cache_dir().resolve() not in path.resolve().parents:
            raise  # not the harness's to delete (e.g. weights shipped in the package)
        warnings.warn(
            f"cached file {path} is unusable ({exc}); deleted, rebuilding it", stacklevel=2
        )
        path.unlink(missing_ok=True)
        return False
    return True


def check_checkpoint_file(path: str | os.PathLike) -> Path:
    """A one-line :class:`DataError` unless ``path`` is a regular file that starts as a PyTorch
    checkpoint does (a zip archive or a pickle): read before anything else reads the file
    (hashing a 3 GB file that is not a checkpoint, or blocking on a FIFO)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise DataError(f"checkpoint {path} is not a regular file (a device, FIFO or folder)")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        # neither torch.save's zip archive nor a pickle: say so rather than torch's
        # unpickler's incidental complaint about the first bytes
        raise DataError(
            f"cannot load checkpoint {path}: not a PyTorch checkpoint (it starts with {head!r}, "
            "not a zip archive or pickle written by torch.save)"
        )
    return path


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load with ``weights_only=True`` (no arbitrary code from pickles). Accepts cladapt's own
    ``{"state_dict", "meta"}`` files, RobustBench's ``{"state_dict"}`` files, ``{"model"}`` files
    (the official ViDA checkpoints) and plain state dicts."""
    path = check_checkpoint_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused a Python object in the pickle
        refused = _refusal(exc)
        raise DataError(
            f"cannot load checkpoint {path}: it holds pickled Python objects (e.g. a whole "
            "nn.Module), which cladapt never unpickles; save the weights with "
            f"torch.save(model.state_dict(), path) and pass that file (torch: {refused})"
        ) from None
    except Exception as exc:  # the other failures come in many types: keep torch's reason
        reason = " ".join(clean(exc).split()) or type(exc).__name__
        raise DataError(f"cannot load checkpoint {path}: {reason[:300]}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        return _unwrapped(obj["state_dict"]), dict(obj.get("meta") or {})
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):  # e.g. the official ViDA's
        return _unwrapped(obj["model"]), {}
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _unwrapped(obj), {}
    raise DataError(f"checkpoint {path} holds no state dict")


def _refusal(exc: Exception) -> str:
    """What torch's safe unpickler refused (e.g. ``GLOBAL posix.system``), without the advice
    around it: torch's message is mostly a page on turning ``weights_only`` off, which cladapt
    never does."""
    lines = [" ".join(clean(line).split()) for line in str(exc).splitlines()]
    advice = ("weights_only", "Weights only load failed", "torch.load", "(2)")
    kept = [
        line.split(" Please use")[0]
        for line in lines
        if line and not any(a in line for a in advice)
    ]
    return " ".join(kept)[:400] or type(exc).__name__


def _unwrapped(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Parameter names without the ``module.`` prefix that ``nn.DataParallel`` adds when every
    name has it (RobustBench's checkpoints are saved that way; its loader drops it too)."""
    if state and all(k.startswith("module.") for k in state):
        return {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_into(model: torch.nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint into ``model``; mismatched keys or shapes are a one-line error."""
    state, meta = load_checkpoint(path)
    load_state(model, state, f"checkpoint {path}")
    return meta


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state)`` (strict); mismatched keys or shapes are a one-line error
    that names ``source``."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) or first[0]
        raise DataError(f"{source} does not fit the model: {detail[:240]}") from None
