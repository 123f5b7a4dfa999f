"""Test-time adaptation by normalisation and self-training: ``alpha-bn``, ``tent``, ``cotta``.

All three see only unlabelled test batches (``cladapt_adapt``) and return the logits that are
scored for that batch, computed before the batch's update, as their papers do.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cladapt.adaptation import (
    adapt_step,
    batch_statistics,
    entropy,
    frozen_copy,
    mean_teacher_step,
    norm_layers,
)
from cladapt.augment import Augment, teacher_views
from cladapt.batch import Batch
from cladapt.config import param
from cladapt.context import Run
from cladapt.errors import ConfigError
from cladapt.hookspecs import hookimpl
from cladapt.optim import make_optimizer
from cladapt.registry import StrategyRegistry
from cladapt.strategy import Strategy


class AlphaBatchNorm(nn.Module):
    """BatchNorm in eval mode with statistics mu = (1 - alpha) mu_source + alpha mu_batch (and
    likewise the variance), then the source affine parameters."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, alpha: float) -> None:
        super().__init__()
        if bn.running_mean is None or bn.running_var is None:
            raise ConfigError("alpha-bn needs BatchNorm layers with source running statistics")
        self.bn, self.alpha = bn, alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        mean = xf.mean(dims)
        var = xf.var(dims, unbiased=False)  # what train-mode BN normalises with
        a = self.alpha
        mix_mean = (1 - a) * self.bn.running_mean + a * mean
        mix_var = (1 - a) * self.bn.running_var + a * var
        out = F.batch_norm(
            xf, mix_mean, mix_var, self.bn.weight, self.bn.bias, False, 0.0, self.bn.eps
        )
        return out.to(x.dtype)


def replace_batchnorm(model: nn.Module, make: callable) -> int:
    """Swap every BatchNorm module of ``model`` for ``make(bn)``; returns how many."""
    count = 0
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, make(child))
            count += 1
        else:
            count += replace_batchnorm(child, make)
    return count


@dataclass
class AlphaBNConfig:
    alpha: float = param(
        0.1,
        "weight of the TEST-BATCH statistics: mu = (1-alpha)*mu_source + alpha*mu_batch "
        "(same for the variance); 0 = source model, 1 = bn-adapt",
        ge=0,
        le=1,
    )


class AlphaBN(Strategy):
    """alpha-BN: normalise with a mix of source and test-batch statistics; no parameter updates.

    You et al., "Test-time batch statistics calibration for covariate shift", 2021 (alpha-BN);
    the peer reference is ``AlphaBatchNorm`` in mariodoebler/test-time-adaptation, default
    alpha = 0.1. Convention (stated because TTAB's ``adapt_prior`` is the opposite weight):
    ``alpha`` weighs the batch, so alpha = 0 is the source model and alpha = 1 is ``bn-adapt``.
    Deviation: the batch variance is the biased one (what train-mode BN uses), so alpha = 1 equals
    bn-adapt exactly; the peer uses the unbiased variance (a factor n/(n-1) on the batch part).
    The paper's additional "Core" entropy loss is not implemented (its formula is unverified).
    """

    name = "alpha-bn"
    protocols = ("test_time",)
    Config = AlphaBNConfig

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        if not 0.0 <= self.cfg.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {self.cfg.alpha}")
        run.model.requires_grad_(False)
        run.model.eval()
        if not replace_batchnorm(run.model, lambda bn: AlphaBatchNorm(bn, self.cfg.alpha)):
            raise ConfigError(
                f"alpha-bn needs a model with BatchNorm layers; {run.model_name!r} has none"
            )


@dataclass
class TentConfig:
    optimizer: Literal["sgd", "adam"] = param(
        "adam", "optimizer (Tent: Adam on CIFAR, SGD on ImageNet)"
    )
    lr: float = param(1e-3, "learning rate (Tent CIFAR: 1e-3; ImageNet SGD: 2.5e-4)", ge=0, le=10)
    momentum: float = param(0.9, "SGD momentum / Adam beta1", ge=0, lt=1)
    nesterov: bool = param(
        True,
        "Nesterov momentum when the optimizer is SGD (both official setups: tent conf.py "
        "OPTIM.NESTEROV, CoTTA's imagenet/imagenetc.py setup_optimizer); Adam ignores it",
    )
    steps: int = param(1, "gradient steps per test batch", ge=1)


def configure_norm_adaptation(run: Run) -> list[nn.Parameter]:
    """Tent's ``configure_model``: everything frozen except the affine parameters of the
    normalisation layers; BatchNorm uses test-batch statistics (LayerNorm/GroupNorm need none)."""
    model = run.model
    model.requires_grad_(False)
    model.eval()
    batch_statistics(model)
    params = []
    for m in norm_layers(model):
        for p in (m.weight, m.bias):
            if p is not None:
                p.requires_grad_(True)
                params.append(p)
    if not params:
        raise ConfigError(f"{run.model_name!r} has no affine normalisation layers to adapt")
    return params


class Tent(Strategy):
    """Tent: minimise the entropy of each test batch's predictions, updating only the affine
    parameters of the normalisation layers, with test-batch BN statistics.

    Wang et al., "Tent: Fully Test-Time Adaptation by Entropy Minimization", ICLR 2021;
    DequanWang/tent ``tent.py``. One step per batch; the scored logits are the ones computed
    before the update. Continual by default (the official repo resets per domain: use
    ``--setting episodic``). LayerNorm/GroupNorm affine parameters are adapted for models without
    BatchNorm (as in mariodoebler/test-time-adaptation for ViTs).
    """

    name = "tent"
    protocols = ("test_time",)
    Config = TentConfig

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        c = self.cfg
        run.optimizer = make_optimizer(
            c.optimizer,
            configure_norm_adaptation(run),
            c.lr,
            c.momentum,
            nesterov=c.nesterov and c.optimizer == "sgd",
        )

    @hookimpl
    def cladapt_adapt(self, run: Run, batch: Batch) -> torch.Tensor:
        scored = None
        for _ in range(self.cfg.steps):
            with run.autocast():
                logits = run.model(batch.x)
            adapt_step(run, entropy(logits).mean())
            scored = logits.detach().float() if scored is None else scored
        return scored


@dataclass
class CoTTAConfig:
    optimizer: Literal["adam", "sgd"] = param(
        "adam",
        "Adam, beta1 = momentum (CoTTA's CIFAR configs) or SGD with Nesterov momentum (its "
        "ImageNet configs, imagenet/imagenetc.py setup_optimizer)",
    )
    lr: float = param(
        1e-3, "learning rate (CoTTA CIFAR: Adam 1e-3; ImageNet: SGD 0.01)", ge=0, le=1
    )
    momentum: float = param(0.9, "Adam beta1 / SGD momentum", ge=0, lt=1)
    loss: Literal["soft-ce", "symmetric-ce"] = param(
        "soft-ce",
        "consistency loss: soft-ce = -sum p_teacher log p_student (cifar/cotta.py); "
        "symmetric-ce = half that plus half -sum p_student log p_teacher (imagenet/cotta.py)",
    )
    ema: float = param(0.999, "teacher EMA momentum", ge=0, le=1)
    confidence_threshold: float = param(
        0.92,
        "augment when the source model's mean max-probability is below this (CIFAR10: 0.92)",
        ge=0,
        le=1,
    )
    restore_prob: float = param(
        0.01, "stochastic restore probability per weight (CIFAR: 0.01)", ge=0, le=1
    )
    augmentations: int = param(32, "augmented teacher passes when augmenting", ge=1)
    augment_memory_mb: float = param(
        4096,
        "the augmented views are made (and, on a GPU, passed through the teacher) in chunks of "
        "at most this many MB / 8 of images: 4096 holds 10 views of 64 ImageNet images at a "
        "time, within a 24 GB GPU with a ResNet-50; the result does not depend on it",
        gt=0,
    )


class CoTTA(Strategy):
    """CoTTA: weight-averaged (EMA) teacher, augmentation-averaged pseudo-labels, stochastic
    restore of weights to the source model; the teacher's output is scored.

    Wang et al., "Continual Test-Time Domain Adaptation", CVPR 2022; qinenergy/cotta
    ``cifar/cotta.py`` and ``imagenet/cotta.py``. All parameters train (Adam as its CIFAR
    configs, or SGD with Nesterov momentum as its ImageNet configs: ``optimizer``); BatchNorm
    uses batch statistics in the student, teacher and anchor (copies of the configured model, as
    in the reference). The pseudo-label is the mean of ``augmentations`` augmented teacher
    predictions when the anchor's mean confidence is below the threshold, else the plain teacher
    prediction; loss is the soft cross-entropy of the student against it (CIFAR) or the
    symmetric one (ImageNet: ``loss``). The augmented views are made and passed through the
    teacher as one batched computation (:class:`cladapt.adaptation.Augment`). That branch reads
    one number from the device per batch (as the reference does). The streams set the official
    per-dataset values (``cladapt describe cotta --stream imagenet-c`` names their files).
    """

    name = "cotta"
    protocols = ("test_time",)
    Config = CoTTAConfig

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        model = run.model
        model.train()
        model.requires_grad_(True)
        batch_statistics(model)
        self.source_state = copy.deepcopy(model.state_dict())
        self.teacher, self.anchor = frozen_copy(model), frozen_copy(model)
        self.augment = Augment(run.stream.input_shape[-1], policy=run.stream.tta_augmentation)
        c = self.cfg
        if c.optimizer == "sgd":  # the official setup_optimizer: dampening 0, Nesterov
            run.optimizer = torch.optim.SGD(
                model.parameters(), lr=c.lr, momentum=c.momentum, nesterov=True
            )
        else:
            run.optimizer = torch.optim.Adam(model.parameters(), lr=c.lr, betas=(c.momentum, 0.999))
        self.augmented_batches = 0
        self.batches = 0

    @hookimpl
    def cladapt_reset(self, run: Run) -> None:
        self.teacher = frozen_copy(run.model)

    @hookimpl
    def cladapt_adapt(self, run: Run, batch: Batch) -> torch.Tensor:
        c, x = self.cfg, batch.x
        with run.autocast():
            outputs = run.model(x)
            with torch.no_grad():
                anchor_conf = self.anchor(x).float().softmax(1).amax(1).mean()
                pseudo = self.teacher(x).float()
                if anchor_conf < c.confidence_threshold:
                    pseudo = teacher_views(
                        self.teacher, x, self.augment, c.augmentations, c.augment_memory_mb
                    ).mean(0)
                    self.augmented_batches += 1
        self.batches += 1
        mean_teacher_step(
            run,
            outputs,
            pseudo,
            self.teacher,
            c.ema,
            self.source_state,
            c.restore_prob,
            symmetric=c.loss == "symmetric-ce",
        )
        return pseudo

    @hookimpl
    def cladapt_describe(self, run: Run) -> dict[str, float]:
        frac = self.augmented_batches / max(self.batches, 1)
        return {
            "augmented_fraction": round(frac, 4),
            "forward_passes_per_batch": round(3 + frac * self.cfg.augmentations, 2),
        }


@hookimpl
def cladapt_register_strategies(registry: StrategyRegistry) -> None:
    for cls in (AlphaBN, Tent, CoTTA):
        registry.add(cls)
