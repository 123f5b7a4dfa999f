"""ViDA: visual domain adapters (low-rank + high-rank) with homeostatic knowledge allotment.

Liu et al., "ViDA: Homeostatic Visual Domain Adapter for Continual Test Time Adaptation",
ICLR 2024; official code Yangsenqiao/vida (``cifar/vida.py``, ``inject_vida.py``, CIFAR-10
config). What follows the official code:

- Two adapters in parallel to each linear layer of the ViT attention blocks (qkv, proj): a
  low-rank one (r = 1) and a high-rank one (r = 128); down-projection initialised N(0, 1/r^2),
  up-projection zero, so the adapted model starts equal to the source model.
- Homeostatic knowledge allotment: the teacher predicts ``augmentations`` (10) augmented views;
  u = 0.1 * mean variance of those logits. If u >= threshold the high-rank adapter's scale is
  1 + u and the low-rank one's 1 - u, else the reverse; the scales apply to student and teacher.
- Student-teacher: loss = soft cross-entropy of the student against the teacher's prediction
  (``cifar/vida.py``; ``imagenet/vida.py`` uses the symmetric cross-entropy, ``--set
  loss=symmetric-ce``, the imagenet-c streams' setting); Adam (model lr 1e-4, adapters 1e-5, beta1
  0.9); EMA teacher (0.999 for the model and the adapters on CIFAR; adapters 0.8 on ImageNet);
  stochastic restore of the student (p = 0.1; ``imagenet/vida.py`` has it commented out); the
  teacher's prediction on the clean batch is scored.

Where the paper and the official code part, the paper is followed and the code's choice is a
setting:
- The target of the consistency loss. The paper's Fig. 2: "the student model processes the
  original image, while the teacher model processes an augmented version of the same image".
  The official ``forward_and_adapt`` takes the teacher's prediction on the clean batch instead
  (``pseudo_label=clean``), computed after this batch's scales are set. With ``cifar/vida.py``'s
  soft cross-entropy the teacher starts as a copy of the student and both see that batch, so
  that loss has zero gradient until they part, and nothing else makes them part: on the
  embedded streams ``pseudo_label=clean`` scores exactly as bn-adapt (``benchmarks/vida_vs_bn.py``;
  on a CPU its gradient is rounding, ~1e-8, which Adam turns into lr-sized steps of no
  direction). ``imagenet/vida.py``'s symmetric cross-entropy has a second half, the student's
  entropy weighted by the teacher, which does move them apart. ``augmented`` (default) takes the
  teacher's prediction on the first of the uncertainty estimate's augmented views (no extra
  forward pass), which the teacher made under the previous batch's scales (set after the
  uncertainty is known; the paper does not say which scales its augmented target uses).
- The official teacher runs in ``eval()``; here it is a copy of the configured student: on a
  ViT (LayerNorm, no dropout in timm's models) the two are the same, and on a CNN its BatchNorm
  has no running statistics left (as the student's), so it normalises with the batch in either
  mode.
- Source-trained adapters. The official runs load adapters trained on the source data (the
  repository's README links the checkpoints; the code that trained them is not released). Here,
  on streams with labelled source data, the adapters (only) are trained before test time:
  cross-entropy on the source training split, the source network frozen, BatchNorm on batch
  statistics as at test time, both scales 1, Adam lr 1e-3, batch 64, 10 epochs, data order
  fixed (``source_epochs``, ``source_lr``; ``cladapt.source_stage``; the embedded streams' result
  ships in the package). This recipe is ours, as the official one is unpublished. Streams
  without source data (e.g. ImageNet-C without ImageNet) start from zero up-projections, or from
  the official checkpoints with ``--set adapters=PATH`` (their modules ``linear_vida``,
  ``vida_down``/``vida_up`` (r = 1), ``vida_down2``/``vida_up2`` (r = 128) mapped to these; the
  whole model is loaded, as the official ``configure_model`` does).

Other deviations, stated: the official ``set_scale`` updates only the low-rank scale (modules
have both attributes, so its ``elif`` never runs); both scales are set here. For CNNs (the
embedded small CNN's variant, a ResNet-50 on ImageNet-C), adapters are 1x1 convolutions in
parallel to every 'same'-padded convolution, with the convolution's stride, and BatchNorm uses
batch statistics in student and teacher. The official code, and every published ViDA number, is
ViT-only (ViT-B/16): ViDA on a CNN has no official setting, and the settings a stream gives it
(e.g. imagenet-c's, from ``imagenet/cfgs/vit/vida.yaml``) are the ViT's.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cladapt.adaptation import (
    batch_statistics,
    frozen_copy,
    mean_teacher_step,
)
from cladapt.augment import Augment, teacher_views
from cladapt.batch import Batch
from cladapt.config import param
from cladapt.context import Run
from cladapt.errors import ConfigError
from cladapt.hookspecs import hookimpl
from cladapt.models.checkpoints import load_checkpoint, load_state, weights_digest
from cladapt.models.factory import Normalized
from cladapt.registry import StrategyRegistry
from cladapt.source_stage import train_on_source
from cladapt.strategy import Strategy


class _Adapted(nn.Module):
    """base(x) + scale_low * up_low(down_low(x)) + scale_high * up_high(down_high(x))."""

    def __init__(self, base: nn.Module, low: tuple[nn.Module, nn.Module], high) -> None:
        super().__init__()
        self.base = base
        self.vida_down_low, self.vida_up_low = low
        self.vida_down_high, self.vida_up_high = high
        self.scale_low, self.scale_high = 1.0, 1.0
        for down, up, r in ((*low, low[0].weight.shape[0]), (*high, high[0].weight.shape[0])):
            nn.init.normal_(down.weight, std=1.0 / r**2)  # official: std=1 / r**2
            nn.init.zeros_(up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.vida_up_low(self.vida_down_low(x))
        high = self.vida_up_high(self.vida_down_high(x))
        return self.base(x) + self.scale_low * low + self.scale_high * high


def adapted_linear(base: nn.Linear, r_low: int, r_high: int) -> _Adapted:
    def pair(r):
        return nn.Linear(base.in_features, r, bias=False), nn.Linear(
            r, base.out_features, bias=False
        )

    return _Adapted(base, pair(r_low), pair(r_high))


def adapted_conv(base: nn.Conv2d, r_low: int, r_high: int) -> _Adapted:
    def pair(r):
        return (
            nn.Conv2d(base.in_channels, r, 1, stride=base.stride, bias=False),
            nn.Conv2d(r, base.out_channels, 1, bias=False),
        )

    return _Adapted(base, pair(r_low), pair(r_high))


def _same_padded(conv: nn.Conv2d) -> bool:
    k, p, d = conv.kernel_size, conv.padding, conv.dilation
    return (
        isinstance(p, tuple)
        and conv.groups == 1
        and all(2 * p[i] == d[i] * (k[i] - 1) for i in range(2))
    )


def inject_adapters(model: nn.Module, r_low: int, r_high: int) -> int:
    """Add adapters to attention linears (ViT: modules named ``*Attention``), or else to every
    'same'-padded conv. Returns how many layers were adapted."""
    attention = [m for m in model.modules() if type(m).__name__.endswith("Attention")]
    count = 0
    if attention:
        for block in attention:
            for name, child in list(block.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(block, name, adapted_linear(child, r_low, r_high))
                    count += 1
        return count
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and _same_padded(child):
                setattr(parent, name, adapted_conv(child, r_low, r_high))
                count += 1
    return count


def set_scales(model: nn.Module, low: float, high: float) -> None:
    for m in model.modules():
        if isinstance(m, _Adapted):
            m.scale_low, m.scale_high = low, high


def adapter_modules(model: nn.Module) -> nn.ModuleList:
    """The adapters alone (down and up projections of both ranks, per adapted layer), in model
    order: what the source stage trains and caches."""
    return nn.ModuleList(
        nn.ModuleList([m.vida_down_low, m.vida_up_low, m.vida_down_high, m.vida_up_high])
        for m in model.modules()
        if isinstance(m, _Adapted)
    )


OFFICIAL_NAMES = (  # the official inject_vida.py's module names -> this module's
    (".linear_vida.", ".base."),
    (".vida_down2.", ".vida_down_high."),
    (".vida_up2.", ".vida_up_high."),
    (".vida_down.", ".vida_down_low."),
    (".vida_up.", ".vida_up_low."),
)


def load_official(model: nn.Module, path: str) -> None:
    """Load a source-trained ViDA checkpoint into ``model`` (adapters injected): the whole model,
    adapters included, as the official ``configure_model`` loads it (strict). Accepts the
    official files (``{"model": state}`` or a plain state dict, ``module.`` prefixes of
    DataParallel dropped) and this module's own names; a mismatch is a one-line error."""
    state, _ = load_checkpoint(path)
    mapped = {}
    for key, value in state.items():
        for old, new in OFFICIAL_NAMES:
            key = key.replace(old, new)
        mapped[key] = value
    target = model.model if isinstance(model, Normalized) else model
    load_state(target, mapped, f"--set adapters={path}")


@dataclass
class ViDAConfig:
    lr: float = param(
        1e-4, "Adam learning rate of the model's parameters (CIFAR10: 1e-4)", ge=0, le=1
    )
    adapter_lr: float = param(
        1e-5, "Adam learning rate of the adapters (CIFAR10: 1e-5)", ge=0, le=1
    )
    rank_low: int = param(1, "rank of the low-rank adapter", ge=1)
    rank_high: int = param(128, "rank of the high-rank adapter", ge=1)
    ema: float = param(0.999, "teacher EMA momentum of the model's parameters", ge=0, le=1)
    ema_adapters: float = param(
        0.999,
        "teacher EMA momentum of the adapters (official CIFAR: 0.999; ImageNet: 0.8, "
        "imagenet/cfgs/vit/vida.yaml MT_ViDA)",
        ge=0,
        le=1,
    )
    uncertainty_threshold: float = param(
        0.05, "HKA threshold on u (CIFAR 0.05, ImageNet 0.2)", ge=0
    )
    augmentations: int = param(10, "augmented teacher passes for the uncertainty", ge=1)
    augment_memory_mb: float = param(
        4096,
        "the augmented views are made (and, on a GPU, passed through the teacher) in chunks of "
        "at most this many MB / 8 of images; the result does not depend on it",
        gt=0,
    )
    restore_prob: float = param(0.1, "stochastic restore probability per weight", ge=0, le=1)
    pseudo_label: Literal["augmented", "clean"] = param(
        "augmented",
        "teacher input of the consistency loss's target: augmented (the paper's Fig. 2) or "
        "clean (the official code; zero gradient while teacher and student are equal)",
    )
    source_epochs: int = param(
        10,
        "epochs of adapter training on the labelled source data before test time (0: none)",
        ge=0,
    )
    source_lr: float = param(1e-3, "Adam learning rate of that source stage", ge=0, le=1)
    adapters: str = param(
        "",
        "checkpoint of source-trained ViDA to start from instead of the source stage: the "
        "official repository's (linear_vida / vida_down, vida_up / vida_down2, vida_up2) or one "
        "with this module's names",
    )
    # files whose SHA-256 prefix params_json records beside their path
    weight_files = ("adapters",)
    optimizer: Literal["adam", "sgd"] = param(
        "adam", "Adam, beta1 0.9 (official CIFAR) or SGD, Nesterov momentum 0.9 (official ImageNet)"
    )
    loss: Literal["soft-ce", "symmetric-ce"] = param(
        "soft-ce",
        "consistency loss: soft-ce (cifar/vida.py) or the symmetric cross-entropy of "
        "imagenet/vida.py (half of it is the student's own entropy term)",
    )


class ViDA(Strategy):
    """ViDA: low-/high-rank domain adapters, uncertainty-weighted, EMA teacher (ViT or CNN)."""

    name = "vida"
    protocols = ("test_time",)
    Config = ViDAConfig

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        c, model = self.cfg, run.model
        source_digest = weights_digest(model)  # the source weights, part of the stage's key
        # adapters start from a fixed initialisation, so that the one-off source stage (cached)
        # is the same for every run seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            injected = inject_adapters(model, c.rank_low, c.rank_high)
        if not injected:
            raise ConfigError(
                f"vida found no attention linears or 'same' convs in {run.model_name!r}"
            )
        model.to(run.device)
        model.train()
        batch_statistics(model)
        if c.adapters:
            load_official(model, c.adapters)
            self.source_trained = True
        else:
            self.source_trained = self._source_stage(run, source_digest)
        model.requires_grad_(True)
        self.source_state = copy.deepcopy(model.state_dict())
        self.teacher = frozen_copy(model)
        self.augment = Augment(run.stream.input_shape[-1], policy=run.stream.tta_augmentation)
        adapters = [p for n, p in model.named_parameters() if "vida_" in n]
        rest = [p for n, p in model.named_parameters() if "vida_" not in n]
        groups = [{"params": rest, "lr": c.lr}, {"params": adapters, "lr": c.adapter_lr}]
        if c.optimizer == "sgd":
            run.optimizer = torch.optim.SGD(groups, lr=c.lr, momentum=0.9, nesterov=True)
        else:
            run.optimizer = torch.optim.Adam(groups, betas=(0.9, 0.999))
        self.high_rank_batches = 0
        self.batches = 0

    def _source_stage(self, run: Run, source_digest: str) -> bool:
        """Adapters trained on the labelled source data (cross-entropy, every other weight
        frozen, BatchNorm on batch statistics as at test time, both HKA scales 1), as the
        official runs start from source-trained adapters; the recipe is this module's (see the
        module docstring)."""
        c, model = self.cfg, run.model
        model.requires_grad_(False)
        trained = adapter_modules(model)
        trained.requires_grad_(True)

        def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with run.autocast():
                logits = model(x)
            return F.cross_entropy(logits.float(), y)

        return train_on_source(
            run,
            trained,
            loss,
            lambda params: torch.optim.Adam(params, lr=c.source_lr),
            name="vida-adapters",
            epochs=c.source_epochs,
            key=dict(
                source=run.stream.source_id,
                model=run.model_name,
                weights=source_digest,
                epochs=c.source_epochs,
                lr=c.source_lr,
                ranks=(c.rank_low, c.rank_high),
                version=1,
            ),
            meta=asdict(c),
        )

    @hookimpl
    def cladapt_reset(self, run: Run) -> None:
        self.teacher = frozen_copy(run.model)

    def _momentum(self, name: str) -> float:
        return self.cfg.ema_adapters if "vida_" in name else self.cfg.ema

    @hookimpl
    def cladapt_adapt(self, run: Run, batch: Batch) -> torch.Tensor:
        c, x = self.cfg, batch.x
        with torch.no_grad(), run.autocast():
            views = teacher_views(
                self.teacher, x, self.augment, c.augmentations, c.augment_memory_mb
            )
        u = float(views.var(0).mean() * 0.1)  # one number from the device per batch
        high_dominant = u >= c.uncertainty_threshold
        low, high = (1 - u, 1 + u) if high_dominant else (1 + u, 1 - u)
        self.high_rank_batches += int(high_dominant)
        self.batches += 1
        set_scales(run.model, low, high)
        set_scales(self.teacher, low, high)
        with run.autocast():
            with torch.no_grad():
                teacher_logits = self.teacher(x).float()
            outputs = run.model(x)
        # the paper's teacher sees an augmented view (its Fig. 2): the first view of the
        # uncertainty estimate, no extra forward pass
        target = views[0] if c.pseudo_label == "augmented" else teacher_logits
        mean_teacher_step(
            run,
            outputs,
            target,
            self.teacher,
            self._momentum,
            self.source_state,
            c.restore_prob,
            symmetric=c.loss == "symmetric-ce",
        )
        return teacher_logits

    @hookimpl
    def cladapt_describe(self, run: Run) -> dict[str, float]:
        return {
            "high_rank_fraction": round(self.high_rank_batches / max(self.batches, 1), 4),
            "source_trained_adapters": int(self.source_trained),
            "forward_passes_per_batch": self.cfg.augmentations + 2,
        }


@hookimpl
def cladapt_register_strategies(registry: StrategyRegistry) -> None:
    registry.add(ViDA)
