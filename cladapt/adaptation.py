"""Building blocks shared by the test-time adaptation strategies: entropies, EMA teachers,
stochastic restore, normalisation-layer handling (CoTTA-style test-time augmentation:
:mod:`cladapt.augment`)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample Shannon entropy of softmax(logits) (nats)."""
    logits = logits.float()
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy of the student's softmax against the teacher's (CoTTA, ViDA:
    their CIFAR code)."""
    return -(teacher.float().softmax(1) * student.float().log_softmax(1)).sum(1)


def symmetric_cross_entropy(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per-sample -0.5 sum p_t log p_s - 0.5 sum p_s log p_t (CoTTA's and ViDA's ImageNet code,
    ``softmax_entropy(x, x_ema)``; the teacher is detached, so the second half is the student's
    entropy-like term pulling its prediction toward confidence where the teacher is)."""
    s, t = student.float(), teacher.float().detach()
    return -0.5 * (t.softmax(1) * s.log_softmax(1)).sum(1) - 0.5 * (
        s.softmax(1) * t.log_softmax(1)
    ).sum(1)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy whose parameters take no gradient (teachers, anchors)."""
    twin = copy.deepcopy(model)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


@torch.no_grad()
def ema_update(
    teacher: nn.Module, student: nn.Module, momentum: Callable[[str], float] | float
) -> None:
    """teacher = m * teacher + (1 - m) * student, parameter by parameter (buffers untouched)."""
    rate = momentum if callable(momentum) else (lambda _name: momentum)
    for (name, t), s in zip(teacher.named_parameters(), student.parameters(), strict=True):
        m = rate(name)
        t.mul_(m).add_(s.detach(), alpha=1 - m)


@torch.no_grad()
def stochastic_restore(
    model: nn.Module, source_state: dict[str, torch.Tensor], prob: float
) -> None:
    """Reset each trainable weight element to its source value with probability ``prob``."""
    if prob <= 0:
        return
    for name, p in model.named_parameters():
        if p.requires_grad:
            mask = torch.rand(p.shape, device=p.device) < prob
            p.copy_(torch.where(mask, source_state[name].to(p.device, p.dtype), p))


def norm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, NORM_LAYERS)]


def batch_statistics(model: nn.Module) -> list[nn.Module]:
    """BatchNorm layers normalise with the current batch, in train and eval mode alike (Tent's
    ``configure_model``: running statistics removed)."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in layers:
        m.train()
        m.track_running_stats = False
        m.running_mean = None
        m.running_var = None
    return layers


def adapt_step(run, loss: torch.Tensor) -> None:
    """One optimizer step on ``loss`` inside ``cladapt_adapt`` (counts ``run.step``; a NaN/inf
    loss is flagged for the protocol's divergence check, without a host sync)."""
    from cladapt.protocols.base import flag_nonfinite

    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.step += 1
    flag_nonfinite(run, loss)


def mean_teacher_step(
    run,
    student_logits: torch.Tensor,
    pseudo_logits: torch.Tensor,
    teacher: nn.Module,
    momentum: Callable[[str], float] | float,
    source_state: dict[str, torch.Tensor],
    restore_prob: float,
    symmetric: bool = False,
) -> None:
    """CoTTA / ViDA update: the soft (or, their ImageNet code's, symmetric) cross-entropy of
    the student against the teacher's pseudo-label, an optimizer step, the teacher's EMA
    update, then stochastic restore of the student."""
    loss = symmetric_cross_entropy if symmetric else soft_cross_entropy
    adapt_step(run, loss(student_logits, pseudo_logits).mean())
    ema_update(teacher, run.model, momentum)
    stochastic_restore(run.model, source_state, restore_prob)
