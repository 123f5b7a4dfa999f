"""Compute accounting with ``torch.utils.flop_counter``.

Counting every step would slow training several-fold, so the first training step and the first
evaluation batch of each experience are counted and the per-image cost is multiplied by the
number of images processed. This is exact for fixed-size forward/backward passes (the usual
case); strategies whose per-step cost varies (e.g. a growing memory) are approximated by their
first step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch.utils.flop_counter import FlopCounterMode

T = TypeVar("T")


def counted(fn: Callable[[], T]) -> tuple[T, int]:
    """Run ``fn`` and return its result with the FLOPs of every torch op it executed."""
    with FlopCounterMode(display=False) as counter:
        out = fn()
    return out, int(counter.get_total_flops())


class FlopMeter:
    """Per-image FLOPs measured on one batch, times images processed."""

    def __init__(self) -> None:
        self.per_image: float | None = None
        self.images = 0

    @property
    def wants_sample(self) -> bool:
        return self.per_image is None

    def sample(self, flops: int, n: int) -> None:
        self.per_image = flops / max(n, 1)

    def add(self, n: int) -> None:
        self.images += n

    @property
    def total(self) -> float:
        return (self.per_image or 0.0) * self.images
