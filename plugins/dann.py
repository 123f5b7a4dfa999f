"""DANN (domain-adversarial training) and its source-only baseline, for the ``uda`` protocol.

Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015; Ganin et al.,
"Domain-Adversarial Training of Neural Networks", JMLR 2016.

- Gradient reversal layer: identity forward, ``-lambda * grad`` backward.
- Adaptation factor ``lambda_p = 2 / (1 + exp(-gamma * p)) - 1`` (gamma = 10), p = training
  progress in [0, 1] (optimizer steps / total steps).
- Learning-rate annealing ``mu_p = mu_0 / (1 + alpha * p) ** beta`` (mu_0 = 0.01, alpha = 10,
  beta = 0.75), SGD with momentum 0.9.
- Domain classifier on the pooled features: for small images ``x -> 100 -> 2`` (with BatchNorm
  and ReLU, as in the paper's MNIST experiments and fungtion/DANN); for large backbones
  ``x -> 1024 -> 1024 -> 1`` (ReLU + dropout 0.5, logistic loss), as in the paper's Office
  experiments. ``domain_head=auto`` picks the large head for feature widths >= 512.

Deviations, stated: source and target images go through the network in one concatenated batch
(as in thuml/Transfer-Learning-Library), so BatchNorm sees both domains; fungtion/DANN uses two
passes. The paper's Office experiments train the newly added layers with 10x the learning rate of
the pretrained ones; here that is ``backbone_lr_mult=0.1`` (default 1.0, since the embedded
streams train from scratch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from cladapt.batch import Batch, StepOutput
from cladapt.config import param
from cladapt.context import Run
from cladapt.hookspecs import hookimpl
from cladapt.models.features import feature_dim, features_and_logits
from cladapt.registry import StrategyRegistry
from cladapt.strategy import Strategy


class GradientReversal(torch.autograd.Function):
    """Identity in the forward pass; multiplies the gradient by ``-coeff`` in the backward pass."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.neg() * ctx.coeff, None


def grad_reverse(x: torch.Tensor, coeff: float) -> torch.Tensor:
    return GradientReversal.apply(x, coeff)


def adaptation_factor(p: float, gamma: float = 10.0) -> float:
    """lambda_p = 2 / (1 + exp(-gamma p)) - 1: 0 at the start, -> 1 at the end."""
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def annealed_lr(lr0: float, p: float, alpha: float = 10.0, beta: float = 0.75) -> float:
    """mu_p = mu_0 / (1 + alpha p)^beta."""
    return lr0 / (1.0 + alpha * p) ** beta


def domain_classifier(dim: int, kind: Literal["small", "large"]) -> nn.Module:
    if kind == "small":
        return nn.Sequential(
            nn.Linear(dim, 100), nn.BatchNorm1d(100), nn.ReLU(inplace=True), nn.Linear(100, 2)
        )
    return nn.Sequential(
        nn.Linear(dim, 1024),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(1024, 1024),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(1024, 1),
    )


@dataclass
class SourceOnlyConfig:
    lr: float = param(0.01, "initial learning rate mu_0", ge=0)
    momentum: float = param(0.9, "SGD momentum", ge=0, lt=1)
    weight_decay: float = param(0.0, "weight decay", ge=0)
    lr_alpha: float = param(10.0, "annealing: mu_p = mu_0 / (1 + lr_alpha p)^lr_beta", ge=0)
    lr_beta: float = param(0.75, "annealing exponent", ge=0)
    backbone_lr_mult: float = param(
        1.0, "lr multiplier of the backbone (0.1 for pretrained ones)", ge=0
    )


class SourceOnly(Strategy):
    """Train on the labelled source only, with DANN's backbone, optimizer and lr schedule."""

    name = "source-only"
    protocols = ("uda",)
    Config = SourceOnlyConfig

    def extra_modules(self, run: Run) -> list[nn.Module]:
        return []

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        c = self.cfg
        run.model.requires_grad_(True)
        head = run.model.get_classifier() if hasattr(run.model, "get_classifier") else None
        head_ids = {id(p) for p in head.parameters()} if head is not None else set()
        backbone = [p for p in run.model.parameters() if id(p) not in head_ids]
        new = [p for m in self.extra_modules(run) for p in m.parameters()]
        new += [p for p in run.model.parameters() if id(p) in head_ids]
        groups = [
            {"params": backbone, "lr_mult": c.backbone_lr_mult},
            {"params": new, "lr_mult": 1.0},
        ]
        run.optimizer = torch.optim.SGD(
            [g for g in groups if g["params"]],
            lr=c.lr,
            momentum=c.momentum,
            weight_decay=c.weight_decay,
        )
        run.step = 0  # the schedules run over this target's training

    def progress(self, run: Run) -> float:
        total = run.state.get("total_steps") or 1
        return min(run.step / total, 1.0)

    def anneal(self, run: Run) -> float:
        p = self.progress(run)
        lr = annealed_lr(self.cfg.lr, p, self.cfg.lr_alpha, self.cfg.lr_beta)
        for group in run.optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        return p

    @hookimpl
    def cladapt_train_step(self, run: Run, batch: Batch) -> StepOutput:
        self.anneal(run)
        logits = run.model(batch.x)
        return StepOutput(loss=F.cross_entropy(logits.float(), batch.y), logits=logits)


@dataclass
class DANNConfig(SourceOnlyConfig):
    gamma: float = param(10.0, "lambda_p = lambda_max * (2 / (1 + exp(-gamma p)) - 1)", ge=0)
    lambda_max: float = param(1.0, "final weight of the reversed domain gradient", ge=0)
    domain_head: Literal["auto", "small", "large"] = param(
        "auto",
        "small: x-100-2 (digits); large: x-1024-1024-1 (ResNet/AlexNet); auto by feature width",
    )


class DANN(SourceOnly):
    """Domain-adversarial training through a gradient reversal layer (Ganin & Lempitsky 2015)."""

    name = "dann"
    Config = DANNConfig

    def extra_modules(self, run: Run) -> list[nn.Module]:
        dim = feature_dim(run.model)
        kind = self.cfg.domain_head
        if kind == "auto":
            kind = "large" if dim >= 512 else "small"
        self.kind = kind
        self.head = domain_classifier(dim, kind).to(run.device)
        return [self.head]

    @hookimpl
    def cladapt_train_step(self, run: Run, batch: Batch) -> StepOutput:
        p = self.anneal(run)
        coeff = self.cfg.lambda_max * adaptation_factor(p, self.cfg.gamma)
        n_src = batch.x.shape[0]
        feats, logits = features_and_logits(run.model, torch.cat([batch.x, batch.x_target]))
        cls_loss = F.cross_entropy(logits[:n_src].float(), batch.y)
        d_out = self.head(grad_reverse(feats, coeff)).float()
        is_target = torch.zeros(d_out.shape[0], device=d_out.device)
        is_target[n_src:] = 1.0
        if self.kind == "small":
            dom_loss = F.cross_entropy(d_out, is_target.long())
        else:
            dom_loss = F.binary_cross_entropy_with_logits(d_out.squeeze(1), is_target)
        run.state["dann_lambda"] = coeff
        return StepOutput(loss=cls_loss + dom_loss, logits=logits[:n_src], features=feats[:n_src])

    @hookimpl
    def cladapt_describe(self, run: Run) -> dict[str, float]:
        return {"domain_head_params": sum(p.numel() for p in self.head.parameters())}


@hookimpl
def cladapt_register_strategies(registry: StrategyRegistry) -> None:
    registry.add(SourceOnly)
    registry.add(DANN)
