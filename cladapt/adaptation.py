"""Building blocks shared by the test-time adaptation strategies: entropies, EMA teachers,
stochastic restore, normalisation-layer handling and CoTTA-style test-time augmentation."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from cladapt.stream import TTAAugmentation

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample Shannon entropy of softmax(logits) (nats)."""
    logits = logits.float()
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy of the student's softmax against the teacher's (CoTTA, ViDA)."""
    return -(teacher.float().softmax(1) * student.float().log_softmax(1)).sum(1)


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


class Augment(nn.Module):
    """CoTTA's test-time augmentation for image batches in [0, 1] (``get_tta_transforms`` of
    qinenergy/cotta): colour jitter with gamma, edge padding, random affine, Gaussian blur,
    centre crop, horizontal flip, small Gaussian noise, clip. As in the reference, which calls
    the transforms on the batch tensor, one random draw is shared by the whole batch.
    ``policy`` (the stream's :class:`~cladapt.stream.TTAAugmentation`) removes the flip and caps
    the rotation where they would change a label."""

    def __init__(
        self,
        image_size: int,
        noise_std: float = 0.005,
        soft: bool = False,
        policy: TTAAugmentation | None = None,
    ) -> None:
        super().__init__()
        from torchvision.transforms import InterpolationMode, v2

        policy = policy or TTAAugmentation()
        degrees = min(8.0 if soft else 15.0, policy.max_degrees)
        self.gamma = (0.85, 1.15) if soft else (0.7, 1.3)
        self.noise_std = noise_std
        self.jitter = v2.ColorJitter(
            brightness=(0.8, 1.2) if soft else (0.6, 1.4),
            contrast=(0.85, 1.15) if soft else (0.7, 1.3),
            saturation=(0.75, 1.25) if soft else (0.5, 1.5),
            hue=(-0.03, 0.03) if soft else (-0.06, 0.06),
        )
        self.geometry = v2.Compose(
            [
                v2.Pad(padding=image_size // 2, padding_mode="edge"),
                v2.RandomAffine(
                    degrees=(-degrees, degrees),
                    translate=(1 / 16, 1 / 16),
                    scale=(0.95, 1.05) if soft else (0.9, 1.1),
                    interpolation=InterpolationMode.BILINEAR,
                ),
                # blur only the centre plus the kernel's 2-pixel margin: the crop that follows
                # keeps exactly the pixels a blur of the whole padded image would give (4x less
                # work at the reference's 2x edge padding)
                v2.CenterCrop(image_size + 4),
                v2.GaussianBlur(kernel_size=5, sigma=(0.001, 0.25 if soft else 0.5)),
                v2.CenterCrop(image_size),
                *([v2.RandomHorizontalFlip(0.5)] if policy.hflip else []),
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Always fp32, also when called under a run's autocast: in bf16, RandomAffine's sampling
        # grid (affine_grid's matmul) is off by up to half a pixel and the blur (conv2d) rounds,
        # which cost CoTTA's averaged pseudo-labels 16 points on digits-c's first noise batch.
        with torch.autocast(x.device.type, enabled=False):
            return self._augment(x.float())

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clamp(0, 1)
        x = self.jitter(x) if x.shape[1] == 3 else x
        gamma = torch.empty(()).uniform_(*self.gamma).item()
        x = x.clamp_min(1e-8) ** gamma
        x = self.geometry(x)
        x = x + torch.randn_like(x) * self.noise_std
        return x.clamp(0, 1)


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
) -> None:
    """CoTTA / ViDA update: soft cross-entropy of the student against the teacher's pseudo-label,
    an optimizer step, the teacher's EMA update, then stochastic restore of the student."""
    adapt_step(run, soft_cross_entropy(student_logits, pseudo_logits).mean())
    ema_update(teacher, run.model, momentum)
    stochastic_restore(run.model, source_state, restore_prob)
