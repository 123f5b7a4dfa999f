"""EcoTTA: memory-efficient continual test-time adaptation with meta networks and self-distilled
regularisation.

Song et al., "EcoTTA: Memory-Efficient Continual Test-time Adaptation via Self-distilled
Regularization", CVPR 2023 (no official code; community code Lily-Le/EcoTTA).

- The source network is frozen (weights and BatchNorm statistics) and split into K groups of
  consecutive blocks. Each group gets a meta block: a BatchNorm applied to the group's output
  plus a conv block (3x3 conv with the group's stride, BN, ReLU) applied to the group's input:
  ``out = meta_bn(group(x)) + conv_block(x)``. Only meta blocks train.
- Self-distilled regularisation: R_k = mean |out_k - group_k(x)| with the frozen output detached.
- Loss: entropy averaged over the samples whose entropy is below 0.4 * ln C, plus
  lambda * sum_k R_k; SGD, momentum 0.9, lr 5e-3, one step per batch.
- Before test time the meta blocks are warmed up on the labelled source data (cross-entropy +
  lambda * R, 10 epochs), once, and cached like the source model.

Meta networks as the authors' released sample code (Lily-Le/EcoTTA ``ecotta_sample_code.py``,
``ecotta_models/resnet50.py``, a copy of the authors' Colab): ``meta_bn`` = BatchNorm2d(c_out),
conv block = Conv(c_in -> c_out, 3x3, the group's stride, no bias) - BN - ReLU, PyTorch's default
initialisation, trained from there by the warm-up. On ResNet-50 that is 24.9 M parameters (the
1024 -> 2048 block alone 18.9 M); ``--set meta_kernel=1`` (the sample code's ``conv_block`` takes
a kernel size) gives 1x1 convs, 2.8 M. The paper's "lightweight" is about activation memory:
see docs/tta.md for the measurement.

Deviations, stated: groups are the network's stages (SmallCNN: its 4 conv blocks; timm ResNets:
layer1..4; timm models with ``stages``), not the paper's ResNet-50 split [3, 3, 5, 5] (same
widths in and out, so the same parameter count); lambda = 0.5 (the paper's value as quoted by
its text; the community code uses 0.25); meta BNs normalise with test-batch statistics at test
time (they are trained in train mode). Without source data (no warm-up) the randomly
initialised conv branch perturbs the source model; ``describe`` reports ``warmed_up``.
(An earlier version started the conv block's BN weight at zero to begin at the source model: the
ReLU after it then passed no gradient, the branch never trained, and 3x3 and 1x1 meta convs gave
identical errors to the last digit — a dead branch, found by that coincidence.)
Differences from the community code (Lily-Le/EcoTTA ``main.py``, ``ecotta_models/*.py``), stated:
(1) grouping: it splits WideResNet-28's blocks [2, 2, 2, 2, 4] (K = 5) or [2, 2, 4, 4] (K = 4,
the paper's Table 13), we split by stage; (2) test-time procedure: its ``main.py`` takes two
steps per batch, one on the regulariser with every group's input detached (``x = x.detach()`` in
``one_part_of_networks``), then one on the entropy of a second, uncut forward, which is scored
(``--set procedure=community-two-step``); the authors' ``ecotta_sample_code.py`` detaches every
group's input in its single test-time step, so the entropy trains only the last meta block
(``--set procedure=authors-sample``). The default, ``procedure=paper``, is our reading of the
paper's Fig. 3c caption ("only the meta networks are updated with unsupervised loss (i.e.,
entropy minimization) on target data, while the original networks are frozen"; its memory
argument is that frozen layers need no stored activations for a gradient to pass through them,
not that none passes): one step on entropy + lambda R with the entropy's gradient reaching every
meta block. Both public codes warm up without a cut, as all three procedures do here.
``python benchmarks/ecotta_gradient_path.py`` (digits-c, seeds 0-2): paper 7.05 %, authors-sample
11.52 %, community-two-step 6.60 %; (3) warm-up: it
trains with the whole network in train mode (the frozen source BatchNorms re-estimate their
statistics), cross-entropy and lambda 0.25, SGD 5e-2 momentum 0.9 with a one-epoch linear warm-up
and MultiStepLR (milestones 3, 6, 8; gamma 0.2) for 10 epochs, on augmented source images; ours
keeps the source statistics frozen and trains with cross-entropy + lambda R, SGD 5e-3 momentum
0.9 at a constant rate for the same 10 epochs on the clean source images (batch 64). The paper
says only that the meta networks are pre-trained on the source data before deployment (Fig. 3b),
so neither recipe is the paper's. Test time is the same in both: SGD 5e-3, momentum 0.9.
Implementation note: the frozen network's convs and BatchNorms run through ops that save no
activations (PyTorch's autograd would save their inputs even with frozen weights), so the memory
saving of the paper is real here; ``benchmarks/tta_cost.py`` measures it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cladapt.adaptation import (
    adapt_step,
    entropy,
)
from cladapt.batch import Batch
from cladapt.config import param
from cladapt.context import Run
from cladapt.errors import ConfigError
from cladapt.hookspecs import hookimpl
from cladapt.models.checkpoints import weights_digest
from cladapt.registry import StrategyRegistry
from cladapt.source_stage import train_on_source
from cladapt.strategy import Strategy


def stage_groups(model: nn.Module) -> list[list[nn.Module]]:
    """Consecutive-module groups of the encoder, one per stage."""
    inner = getattr(model, "model", model)  # cladapt.models.factory.Normalized
    if all(hasattr(inner, f"layer{i}") for i in range(1, 5)):  # torchvision / timm ResNet
        return [[getattr(inner, f"layer{i}")] for i in range(1, 5)]
    if hasattr(inner, "stages"):
        return [[s] for s in inner.stages]
    if isinstance(getattr(inner, "features", None), nn.Sequential):  # SmallCNN
        groups, current = [], []
        for unit in inner.features:
            current.append(unit)
            if any(isinstance(m, nn.Conv2d) for m in unit.modules()):
                groups.append(current)
                current = []
        if current and groups:
            groups[-1].extend(current)
        return groups
    return []


class _FrozenConv(torch.autograd.Function):
    """conv2d whose backward gives only the input gradient, so only the weight is saved."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(weight)
        ctx.shape, ctx.conf = x.shape, (stride, padding, dilation, groups)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        gx = torch.nn.grad.conv2d_input(ctx.shape, weight.to(grad.dtype), grad, *ctx.conf)
        return gx, None, None, None, None, None, None


def _lean_conv_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if self.padding_mode != "zeros" or isinstance(self.padding, str):
        return self._conv_forward(x, self.weight, self.bias)
    return _FrozenConv.apply(
        x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
    )


def _lean_bn_forward(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    scale = self.weight / torch.sqrt(self.running_var + self.eps)
    shift = self.bias - self.running_mean * scale
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return x * scale.view(shape).to(x.dtype) + shift.view(shape).to(x.dtype)


def freeze_lean(model: nn.Module) -> None:
    """Frozen convs and (eval-mode) BatchNorms that keep no activations for backward: PyTorch's
    autograd saves a conv's or BN's input even when its weights are frozen, which would hide the
    memory saving EcoTTA is about (only input gradients flow through the frozen network)."""
    import types

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.forward = types.MethodType(_lean_conv_forward, m)
        elif (
            isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.running_var is not None
            and m.weight is not None
            and m.bias is not None
        ):
            m.forward = types.MethodType(_lean_bn_forward, m)


class MetaBlock(nn.Module):
    """One partition's meta network: ``meta_bn(group(x)) + ReLU(BN(conv_k(x)))``."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int = 3) -> None:
        super().__init__()
        self.meta_bn = nn.BatchNorm2d(c_out)
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )
        self.regulariser: torch.Tensor | None = None

    def forward(self, group_in: torch.Tensor, group_out: torch.Tensor) -> torch.Tensor:
        out = self.meta_bn(group_out) + self.conv(group_in)
        if self.training:
            self.regulariser = (out.float() - group_out.detach().float()).abs().mean()
        return out


class MetaBlocks(nn.ModuleList):
    """The meta blocks of a network; while ``cut`` is set, each group's input is detached (the
    public codes' test-time gradient path): a meta block then gets no gradient from the losses
    computed after the next group."""

    cut = False


def attach_meta_blocks(
    model: nn.Module, input_shape: tuple[int, int, int], kernel: int = 3
) -> MetaBlocks:
    """Add a meta block to each group through forward (pre-)hooks; returns the meta blocks,
    registered as ``model.ecotta_meta`` so they move, save and restore with the model."""
    groups = stage_groups(model)
    if not groups:
        raise ConfigError("ecotta needs a CNN encoder with stages (SmallCNN, ResNet, timm stages)")
    shapes: list[tuple[torch.Size, torch.Size]] = []
    probes = []
    for g in groups:
        cache: dict[str, torch.Tensor] = {}
        probes.append(g[0].register_forward_pre_hook(lambda m, a, c=cache: c.update(x=a[0])))
        probes.append(
            g[-1].register_forward_hook(
                lambda m, a, o, c=cache: shapes.append((c["x"].shape, o.shape))
            )
        )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(2, *input_shape, device=device))
    model.train(was_training)
    for h in probes:
        h.remove()
    blocks = MetaBlocks(
        MetaBlock(i[1], o[1], max(1, round(i[-1] / o[-1])), kernel) for i, o in shapes
    ).to(device)
    for g, block in zip(groups, blocks, strict=True):
        cache = {}
        g[0].register_forward_pre_hook(lambda m, a: (a[0].detach(), *a[1:]) if blocks.cut else None)
        g[0].register_forward_pre_hook(lambda m, a, c=cache: c.update(x=a[0]))
        g[-1].register_forward_hook(lambda m, a, o, c=cache, b=block: b(c.pop("x"), o))
    model.ecotta_meta = blocks
    return blocks


@dataclass
class EcoTTAConfig:
    lr: float = param(5e-3, "SGD learning rate (EcoTTA: 5e-3)", ge=0, le=10)
    momentum: float = param(0.9, "SGD momentum", ge=0, lt=1)
    reg_weight: float = param(0.5, "lambda of the self-distilled regularisation", ge=0)
    entropy_margin: float = param(0.4, "entropy loss on samples with entropy < margin * ln C", gt=0)
    warmup_epochs: int = param(10, "meta-block warm-up epochs on the source data (0: none)", ge=0)
    warmup_lr: float = param(5e-3, "warm-up SGD learning rate", ge=0, le=10)
    meta_kernel: Literal[3, 1] = param(
        3, "meta conv kernel: 3 (the authors' sample code) or 1 (about 9x fewer parameters)"
    )
    procedure: Literal["paper", "authors-sample", "community-two-step"] = param(
        "paper",
        "the test-time step: paper (one step on entropy + lambda R, the gradients reaching every "
        "meta block through the frozen network: our reading of the paper's Fig. 3 caption); "
        "authors-sample (the same step with every group's input detached: the authors' "
        "ecotta_sample_code.py); community-two-step (Lily-Le/EcoTTA main.py: a step on lambda R "
        "with the inputs detached, then a step on the entropy of a second, uncut forward, which "
        "is scored). The source warm-up is uncut in all three, as in both public codes",
    )


class EcoTTA(Strategy):
    """EcoTTA: frozen network + small meta blocks, entropy on confident samples, self-distilled
    regularisation; low memory (see the module docstring)."""

    name = "ecotta"
    protocols = ("test_time",)
    Config = EcoTTAConfig

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        model = run.model
        model.requires_grad_(False)
        model.eval()  # frozen BatchNorm statistics of the source network
        freeze_lean(model)
        # the source network's exact weights (not a float sum, which rounds differently with
        # thread counts): part of the warm-up's cache key
        self.source_digest = weights_digest(model)
        # the meta blocks start from a fixed initialisation, so that the one-off warm-up on the
        # source (cached) is the same for every run seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.blocks = attach_meta_blocks(model, run.stream.input_shape, self.cfg.meta_kernel)
        self.blocks.requires_grad_(True)
        self.warmed_up = self._warm_up(run)  # uncut: both public codes warm up without the cut
        self.blocks.train()
        self.blocks.cut = self.cfg.procedure == "authors-sample"
        run.optimizer = torch.optim.SGD(
            self.blocks.parameters(), lr=self.cfg.lr, momentum=self.cfg.momentum
        )

    def _loss_regularisation(self) -> torch.Tensor:
        return sum(b.regulariser for b in self.blocks if b.regulariser is not None)

    def _warm_up(self, run: Run) -> bool:
        c = self.cfg

        def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with run.autocast():
                logits = run.model(x)
            return F.cross_entropy(logits.float(), y) + c.reg_weight * self._loss_regularisation()

        return train_on_source(
            run,
            self.blocks,
            loss,
            lambda params: torch.optim.SGD(params, lr=c.warmup_lr, momentum=0.9),
            name="ecotta-meta",
            epochs=c.warmup_epochs,
            key=dict(
                source=run.stream.source_id,
                model=run.model_name,
                weights=self.source_digest,
                epochs=c.warmup_epochs,
                lr=c.warmup_lr,
                reg=c.reg_weight,
                kernel=c.meta_kernel,
                version=4,  # 3: conv branch with default init (was dead); 4: digest key
            ),
            meta=asdict(c),
        )

    def _entropy(self, run: Run, logits: torch.Tensor) -> torch.Tensor:
        """Mean entropy of the samples below the margin (0 when there are none)."""
        ent = entropy(logits)
        keep = (ent < self.cfg.entropy_margin * math.log(run.stream.num_classes)).float()
        return (ent * keep).sum() / keep.sum().clamp_min(1.0)

    @hookimpl
    def cladapt_adapt(self, run: Run, batch: Batch) -> torch.Tensor:
        c = self.cfg
        if c.procedure == "community-two-step":
            self.blocks.cut = True  # first step: the regulariser alone, inputs detached
            with run.autocast():
                run.model(batch.x)
            adapt_step(run, c.reg_weight * self._loss_regularisation())
            self.blocks.cut = False
        with run.autocast():
            logits = run.model(batch.x)
        loss = self._entropy(run, logits)
        if c.procedure != "community-two-step":
            loss = loss + c.reg_weight * self._loss_regularisation()
        adapt_step(run, loss)
        return logits.detach().float()

    @hookimpl
    def cladapt_describe(self, run: Run) -> dict[str, float]:
        return {"meta_blocks": len(self.blocks), "warmed_up": int(self.warmed_up)}


@hookimpl
def cladapt_register_strategies(registry: StrategyRegistry) -> None:
    registry.add(EcoTTA)
