"""Device-independent cost counters for strategies: activation bytes kept for backward and
forward passes per batch."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def saved_activation_bytes(fn: Callable[[], Any], resident: Iterable[nn.Module]) -> tuple[Any, int]:
    """Run ``fn`` and count the bytes autograd saves for backward (through
    ``torch.autograd.graph.saved_tensors_hooks``), leaving out tensors that share storage with a
    parameter or buffer of ``resident`` modules (they are in memory anyway)."""
    resident_ptrs = {
        t.untyped_storage().data_ptr() for m in resident for t in [*m.parameters(), *m.buffers()]
    }
    seen: set[int] = set()
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in resident_ptrs and ptr not in seen:
            seen.add(ptr)
            total[0] += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total[0]


@contextmanager
def count_calls(model_type: type):
    """Count forward calls of modules of ``model_type`` (the whole-model class, so student,
    teacher and anchor copies are all counted) inside the block: yields a one-item list."""
    count = [0]

    def hook(module: nn.Module, args: Any) -> None:
        if type(module) is model_type:
            count[0] += 1

    handle = nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield count
    finally:
        handle.remove()
