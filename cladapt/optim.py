"""Optimizer construction and learning-rate schedules shared by strategies."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from cladapt.errors import ConfigError

# the largest learning rate a run may use, per optimizer family: past these a run diverges or
# collapses (large-batch SGD recipes stay below ~3; Adam's step is already scaled to ~lr)
# the largest sane learning rate per optimizer family (checked with isinstance, so subclasses
# inherit their family's cap): a step of an adaptive method moves each weight by about lr, so
# above 1 it moves weights by more than their scale; SGD's lr scales the gradient
MAX_LR: dict[type, float] = {
    torch.optim.SGD: 10.0,
    torch.optim.Adadelta: 10.0,  # its lr scales an already unit-scaled step (default 1.0)
    torch.optim.Adam: 1.0,
    torch.optim.AdamW: 1.0,
    torch.optim.RMSprop: 1.0,
    torch.optim.Adagrad: 1.0,
    torch.optim.Adamax: 1.0,
    torch.optim.NAdam: 1.0,
    torch.optim.RAdam: 1.0,
}
OTHER_MAX_LR = 10.0  # any other optimizer


def check_learning_rates(optimizer: torch.optim.Optimizer) -> None:
    """Refuse a learning rate outside the sane range of its optimizer (see ``MAX_LR``), for
    every optimizer a strategy may build (checked after setup and around every experience)."""
    limit = next((v for k, v in MAX_LR.items() if isinstance(optimizer, k)), OTHER_MAX_LR)
    for group in optimizer.param_groups:
        lr = float(group.get("lr", 0.0))
        if not (0 <= lr <= limit):  # also NaN
            raise ConfigError(
                f"learning rate {lr:g} is outside the sane range of "
                f"{type(optimizer).__name__} (0 .. {limit:g}); pass a smaller --set lr="
            )


def make_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    decay_weights_only: bool = False,
) -> torch.optim.Optimizer:
    """``decay_weights_only``: weight decay on the convolution and linear weights (tensors of
    two or more dimensions) and not on biases or normalisation parameters, as dm_nevis'
    ``default_weight_decay_mask`` decays only the parameters haiku names ``w``."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ConfigError("the strategy selected no trainable parameters")
    if decay_weights_only and weight_decay:
        params = [
            {"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
        params = [g for g in params if g["params"]]
    if name == "sgd":
        opt = torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
        )
    elif name == "adam":
        opt = torch.optim.Adam(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)
    elif name == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)
    else:
        raise ConfigError(f"unknown optimizer {name!r}; use sgd, adam or adamw")
    if nesterov and name != "sgd":
        raise ConfigError(f"nesterov applies to sgd only, not {name!r}")
    check_learning_rates(opt)
    return opt


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Factor on the base rate at 0-based ``step`` of ``total``: linear warm-up to 1 over
    ``warmup`` steps, then cosine decay towards 0 (the schedule of WiSE-FT's and ZSCL's code)."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, span) / span))
