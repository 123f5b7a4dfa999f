"""The UDA baselines around which adaptation methods are judged: ``source-only`` (the lower
reference), ``target-oracle`` (the upper reference, trained on the *labelled* target), and
``mcc``; DANN and CDAN are in :mod:`cladapt.plugins.dann`. All share one backbone recipe.

Recipe (Ganin & Lempitsky, ICML 2015; Ganin et al., JMLR 2016; tllib's examples):

- SGD, momentum 0.9 (``nesterov`` as tllib), learning rate annealed over training progress p =
  step / total steps: mu_p = mu_0 / (1 + alpha p)^beta, mu_0 = 0.01, alpha = 10, beta = 0.75
  (the paper; tllib's ``lr * (1 + 0.001 i)^-0.75`` over 20 000 iterations is the same curve
  with alpha = 20, not followed).
- Pretrained backbones (Office): the new layers learn 10x faster than the backbone
  (``backbone_lr_mult = 0.1``), a 256-d bottleneck Linear-BN-ReLU sits between the backbone and
  the heads (``bottleneck_dim = 256``), weight decay 1e-3, Nesterov: set by the Office streams'
  defaults (``streams/uda.toml``). The embedded digit streams train a small CNN from scratch:
  multiplier 1, no bottleneck, no weight decay.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cladapt.batch import Batch, StepOutput
from cladapt.config import param
from cladapt.context import Run
from cladapt.hookspecs import hookimpl
from cladapt.models.bottleneck import BottleneckClassifier
from cladapt.models.features import features_and_logits
from cladapt.registry import StrategyRegistry
from cladapt.strategy import Strategy


def annealed_lr(lr0: float, p: float, alpha: float = 10.0, beta: float = 0.75) -> float:
    """mu_p = mu_0 / (1 + alpha p)^beta."""
    return lr0 / (1.0 + alpha * p) ** beta


@dataclass
class SourceOnlyConfig:
    lr: float = param(0.01, "initial learning rate mu_0", ge=0, le=10)
    momentum: float = param(0.9, "SGD momentum", ge=0, lt=1)
    nesterov: bool = param(False, "Nesterov momentum (tllib's Office recipe: on)")
    weight_decay: float = param(0.0, "weight decay (tllib's Office recipe: 1e-3)", ge=0)
    lr_alpha: float = param(10.0, "annealing: mu_p = mu_0 / (1 + lr_alpha p)^lr_beta", ge=0)
    lr_beta: float = param(0.75, "annealing exponent", ge=0)
    backbone_lr_mult: float = param(
        1.0, "lr multiplier of the backbone (0.1 for pretrained ones: new layers learn 10x)", ge=0
    )
    bottleneck_dim: int = param(
        0, "width of a Linear-BN-ReLU bottleneck before the heads (Office: 256); 0: none", ge=0
    )


class SourceOnly(Strategy):
    """Train on the labelled source only, with the UDA backbone recipe (the lower reference)."""

    name = "source-only"
    protocols = ("uda",)
    Config = SourceOnlyConfig

    def extra_modules(self, run: Run) -> list[nn.Module]:
        """Heads a method adds on top of the features (domain classifiers)."""
        return []

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        c = self.cfg
        if c.bottleneck_dim:
            run.model = BottleneckClassifier(
                run.model, c.bottleneck_dim, run.stream.num_classes
            ).to(run.device)
            backbone = run.model.backbone_parameters()
            new = [*run.model.bottleneck.parameters(), *run.model.head.parameters()]
        else:
            head = run.model.get_classifier() if hasattr(run.model, "get_classifier") else None
            head_ids = {id(p) for p in head.parameters()} if head is not None else set()
            backbone = [p for p in run.model.parameters() if id(p) not in head_ids]
            new = [p for p in run.model.parameters() if id(p) in head_ids]
        run.model.requires_grad_(True)
        new += [p for m in self.extra_modules(run) for p in m.parameters()]
        groups = [
            {"params": backbone, "lr_mult": c.backbone_lr_mult},
            {"params": new, "lr_mult": 1.0},
        ]
        run.optimizer = torch.optim.SGD(
            [g for g in groups if g["params"]],
            lr=c.lr,
            momentum=c.momentum,
            weight_decay=c.weight_decay,
            nesterov=c.nesterov and c.momentum > 0,
        )
        run.step = 0  # the schedules run over this target's training

    def progress(self, run: Run) -> float:
        total = run.state.get("total_steps") or 1
        return min(run.step / total, 1.0)

    def anneal(self, run: Run) -> float:
        """Set this step's learning rates; returns the training progress p."""
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


class TargetOracle(SourceOnly):
    """Train on the labelled TARGET (an oracle reference, not a UDA method: it reads labels a
    UDA method never sees; the upper bound the adaptation gap is measured against)."""

    name = "target-oracle"
    uses_target_labels = True
    reference = "oracle"

    @hookimpl
    def cladapt_train_step(self, run: Run, batch: Batch) -> StepOutput:
        self.anneal(run)
        logits = run.model(batch.x_target)
        return StepOutput(loss=F.cross_entropy(logits.float(), batch.y_target), logits=logits)


def mcc_loss(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Minimum Class Confusion (Jin et al., ECCV 2020, Eq. 2-6): temperature-scaled target
    probabilities, samples weighted by 1 + exp(-entropy) (normalised to sum to the batch size),
    class confusion C = P^T W P, each row normalised to sum to 1; the loss is the mean over
    classes of the off-diagonal (cross-class) confusion."""
    n, c = logits.shape
    probs = F.softmax(logits.float() / temperature, dim=1)
    ent = -(probs * torch.log(probs + 1e-5)).sum(1).detach()
    weight = 1 + torch.exp(-ent)
    weight = (n * weight / weight.sum()).unsqueeze(1)
    confusion = (probs * weight).t() @ probs
    confusion = confusion / confusion.sum(dim=1, keepdim=True)
    return (confusion.sum() - confusion.trace()) / c


@dataclass
class MCCConfig(SourceOnlyConfig):
    temperature: float = param(2.5, "probability temperature T (paper and tllib: 2.5)", gt=0)
    trade_off: float = param(1.0, "weight of the MCC loss (tllib: 1.0)", ge=0)


class MCC(SourceOnly):
    """Minimum Class Confusion: penalise cross-class confusion on the unlabelled target."""

    name = "mcc"
    Config = MCCConfig

    @hookimpl
    def cladapt_train_step(self, run: Run, batch: Batch) -> StepOutput:
        self.anneal(run)
        n = batch.x.shape[0]
        _, logits = features_and_logits(run.model, torch.cat([batch.x, batch.x_target]))
        cls = F.cross_entropy(logits[:n].float(), batch.y)
        transfer = mcc_loss(logits[n:], self.cfg.temperature)
        return StepOutput(loss=cls + self.cfg.trade_off * transfer, logits=logits[:n])


@hookimpl
def cladapt_register_strategies(registry: StrategyRegistry) -> None:
    for cls in (SourceOnly, TargetOracle, MCC):
        registry.add(cls)
