"""Device-independent cost counters for strategies: activation bytes kept for backward and
forward passes per batch."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class _Held:
    """A saved tensor in autograd's keeping; the count of its storage drops when the graph that
    holds it is freed (after backward, or when the graph is discarded)."""

    __slots__ = ("tensor", "release")

    def __init__(self, tensor: torch.Tensor, release: Callable[[], None]) -> None:
        self.tensor, self.release = tensor, release

    def __del__(self) -> None:
        self.release()


def saved_activation_bytes(fn: Callable[[], Any], resident: Iterable[nn.Module]) -> tuple[Any, int]:
    """Run ``fn`` and return the *peak* bytes autograd holds for backward at one time (tensors
    saved through ``torch.autograd.graph.saved_tensors_hooks``, each storage counted once while
    any graph holds it), leaving out tensors that share storage with a parameter or buffer of
    ``resident`` modules (they are in memory anyway). A peak, not a sum: a method that runs two
    forward-backward passes in turn (SAR's SAM) holds one pass's activations at a time."""
    resident_ptrs = {
        t.untyped_storage().data_ptr() for m in resident for t in [*m.parameters(), *m.buffers()]
    }
    held: dict[int, list[int]] = {}  # storage pointer -> [holders, bytes]
    live, peak = [0], [0]

    def release(ptr: int) -> None:
        entry = held[ptr]
        entry[0] -= 1
        if entry[0] == 0:
            live[0] -= entry[1]
            del held[ptr]

    def pack(t: torch.Tensor) -> Any:
        ptr = t.untyped_storage().data_ptr()
        if ptr in resident_ptrs:
            return t
        if ptr in held:
            held[ptr][0] += 1
        else:
            held[ptr] = [1, t.untyped_storage().nbytes()]
            live[0] += held[ptr][1]
            peak[0] = max(peak[0], live[0])
        return _Held(t, lambda: release(ptr))

    def unpack(h: Any) -> torch.Tensor:
        return h.tensor if isinstance(h, _Held) else h

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        out = fn()
    return out, peak[0]


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
