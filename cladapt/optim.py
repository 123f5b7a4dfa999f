"""Optimizer construction and learning-rate schedules shared by strategies."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from cladapt.errors import ConfigError


def make_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ConfigError("the strategy selected no trainable parameters")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; use sgd, adam or adamw")


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Factor on the base rate at 0-based ``step`` of ``total``: linear warm-up to 1 over
    ``warmup`` steps, then cosine decay towards 0 (the schedule of WiSE-FT's and ZSCL's code)."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, span) / span))
