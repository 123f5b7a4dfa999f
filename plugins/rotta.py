"""RoTTA: robust test-time adaptation under temporally correlated data (``rotta``).

Yuan, Xie, Li, "Robust Test-Time Adaptation in Dynamic Scenarios", CVPR 2023; official code
BIT-DA/RoTTA (``core/adapter/rotta.py``, ``core/utils/memory.py``, ``core/utils/bn_layers.py``,
``configs/adapter/rotta.yaml``). Followed line by line:

- Robust batch normalisation (RBN): every BatchNorm keeps global statistics, initialised to the
  source running statistics; in train mode it normalises with
  ``(1 - alpha) * global + alpha * batch`` and stores that mix as the new global statistics; in
  eval mode it normalises with the global statistics. Only RBN's affine parameters train.
- Category-balanced sampling with timeliness and uncertainty (CSTU): a memory of ``memory_size``
  test images, at most ``memory_size / C`` per predicted class. A new image (pseudo-label and
  entropy from the teacher) enters if its class has room and the memory has room; else it
  replaces the item with the highest score ``lambda_t / (1 + exp(-age / capacity)) + lambda_u *
  entropy / ln C`` (from the majority classes if its own class has room, else from its own
  class) when that score is higher than the new image's. All ages grow by one per image.
- Every ``update_frequency`` images: the teacher (an EMA of the student) predicts the memory
  (its RBN in train mode, updating its statistics), the student predicts a strong augmentation
  of it (CoTTA's augmentation within the stream's label-preserving policy); loss = cross-entropy
  of the student against the teacher's softmax, weighted by the timeliness exp(-a) / (1 + exp(-a))
  with a = age / capacity; Adam; then teacher <- (1 - nu) * teacher + nu * student.
- The teacher's prediction (eval mode) on each test batch is scored, computed before the
  batch enters the memory.

Defaults: the official CIFAR configuration (Adam lr 1e-3, beta 0.9; memory 64; update every 64
images; nu 0.001; alpha 0.05; lambda_t = lambda_u = 1). The setting RoTTA was designed for is
``--setting dirichlet`` (its sampler; continual i.i.d. is the default here as for every method).
Deviations: none in the method. One device read per batch (its pseudo-labels and entropies, the
official code reads them one image at a time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from cladapt.plugins.tta import replace_batchnorm
from torch import nn

from cladapt.adaptation import ema_update, frozen_copy, soft_cross_entropy
from cladapt.augment import Augment
from cladapt.batch import Batch
from cladapt.config import param
from cladapt.context import Run
from cladapt.errors import ConfigError
from cladapt.hookspecs import hookimpl
from cladapt.protocols.base import flag_nonfinite
from cladapt.registry import StrategyRegistry
from cladapt.strategy import Strategy


class RobustBatchNorm(nn.Module):
    """RoTTA's RBN: global statistics moved towards each training batch's by ``alpha``."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, alpha: float) -> None:
        super().__init__()
        if bn.running_mean is None or bn.running_var is None:
            raise ConfigError("rotta needs BatchNorm layers with source running statistics")
        self.alpha, self.eps = alpha, bn.eps
        self.register_buffer("mean", bn.running_mean.detach().clone())
        self.register_buffer("var", bn.running_var.detach().clone())
        self.weight = nn.Parameter(bn.weight.detach().clone())
        self.bias = nn.Parameter(bn.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        xf = x.float()
        if self.training:
            dims = [0] + list(range(2, x.dim()))
            var, mean = torch.var_mean(xf, dim=dims, unbiased=False)
            mean = (1 - self.alpha) * self.mean + self.alpha * mean
            var = (1 - self.alpha) * self.var + self.alpha * var
            self.mean, self.var = mean.detach(), var.detach()
        else:
            mean, var = self.mean, self.var
        out = (xf - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        return (out * self.weight.view(shape) + self.bias.view(shape)).to(x.dtype)


@dataclass
class _Item:
    x: torch.Tensor
    uncertainty: float
    age: int = 0


@dataclass
class CategoryBalancedMemory:
    """RoTTA's CSTU memory (``core/utils/memory.py``)."""

    capacity: int
    num_classes: int
    lambda_t: float = 1.0
    lambda_u: float = 1.0
    slots: list[list[_Item]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.per_class = self.capacity / self.num_classes
        self.slots = [[] for _ in range(self.num_classes)]

    def __len__(self) -> int:
        return sum(len(s) for s in self.slots)

    def occupancy(self) -> list[int]:
        return [len(s) for s in self.slots]

    def score(self, age: int, uncertainty: float) -> float:
        return self.lambda_t / (1 + math.exp(-age / self.capacity)) + self.lambda_u * (
            uncertainty / math.log(self.num_classes)
        )

    def add(self, x: torch.Tensor, label: int, uncertainty: float) -> None:
        if self._make_room(label, self.score(0, uncertainty)):
            self.slots[label].append(_Item(x, uncertainty))
        for items in self.slots:
            for item in items:
                item.age += 1

    def _make_room(self, label: int, new_score: float) -> bool:
        if len(self.slots[label]) < self.per_class:
            if len(self) < self.capacity:
                return True
            counts = self.occupancy()
            majority = [c for c, n in enumerate(counts) if n == max(counts)]
            return self._evict(majority, new_score)
        return self._evict([label], new_score)

    def _evict(self, classes: list[int], new_score: float) -> bool:
        """Remove the highest-scoring item of ``classes`` if it scores above the newcomer."""
        best: tuple[float, int, int] | None = None
        for c in classes:
            for i, item in enumerate(self.slots[c]):
                s = self.score(item.age, item.uncertainty)
                if best is None or s >= best[0]:  # ties: the later item (as the official)
                    best = (s, c, i)
        if best is None:
            return True
        if best[0] > new_score:
            self.slots[best[1]].pop(best[2])
            return True
        return False

    def contents(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(images, ages / capacity), or None when empty."""
        items = [item for s in self.slots for item in s]
        if not items:
            return None
        ages = torch.tensor([item.age / self.capacity for item in items])
        return torch.stack([item.x for item in items]), ages


def timeliness(ages: torch.Tensor) -> torch.Tensor:
    """exp(-a) / (1 + exp(-a)): older memory items weigh less."""
    return torch.exp(-ages) / (1 + torch.exp(-ages))


@dataclass
class RoTTAConfig:
    lr: float = param(1e-3, "Adam learning rate (official CIFAR: 1e-3)", ge=0, le=1)
    momentum: float = param(0.9, "Adam beta1", ge=0, lt=1)
    memory_size: int = param(64, "category-balanced memory capacity (images)", ge=1)
    update_frequency: int = param(64, "one update every this many test images", ge=1)
    nu: float = param(0.001, "teacher EMA rate: teacher <- (1-nu) teacher + nu student", ge=0, le=1)
    alpha: float = param(0.05, "robust BN: weight of each batch's statistics", ge=0, le=1)
    lambda_t: float = param(1.0, "memory score weight of age (timeliness)", ge=0)
    lambda_u: float = param(1.0, "memory score weight of uncertainty (entropy)", ge=0)


class RoTTA(Strategy):
    """RoTTA: robust BN, a category-balanced memory and a timeliness-weighted teacher-student
    update, for temporally correlated test streams (Yuan et al., CVPR 2023)."""

    name = "rotta"
    protocols = ("test_time",)
    Config = RoTTAConfig

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        c = self.cfg
        model = run.model
        model.requires_grad_(False)
        if not replace_batchnorm(model, lambda bn: RobustBatchNorm(bn, c.alpha)):
            raise ConfigError(
                f"rotta needs a model with BatchNorm layers; {run.model_name!r} has none"
            )
        params = [
            p for m in model.modules() if isinstance(m, RobustBatchNorm) for p in (m.weight, m.bias)
        ]
        for p in params:
            p.requires_grad_(True)
        run.optimizer = torch.optim.Adam(params, lr=c.lr, betas=(c.momentum, 0.999))
        self.teacher = frozen_copy(model)
        self.augment = Augment(run.stream.input_shape[-1], policy=run.stream.tta_augmentation)
        self._new_memory(run)
        self.images = self.updates = 0

    def _new_memory(self, run: Run) -> None:
        c = self.cfg
        self.memory = CategoryBalancedMemory(
            c.memory_size, run.stream.num_classes, c.lambda_t, c.lambda_u
        )

    @hookimpl
    def cladapt_reset(self, run: Run) -> None:
        self.teacher = frozen_copy(run.model)
        self._new_memory(run)

    @hookimpl
    def cladapt_adapt(self, run: Run, batch: Batch) -> torch.Tensor:
        run.model.eval()
        self.teacher.eval()
        with torch.no_grad(), run.autocast():
            scored = self.teacher(batch.x).float()
        probs = scored.softmax(1)
        uncertainty = -(probs * torch.log(probs + 1e-6)).sum(1)  # the official's 1e-6
        labels, uncertainties = probs.argmax(1).tolist(), uncertainty.tolist()  # one read
        for x, label, u in zip(batch.x, labels, uncertainties, strict=True):
            self.memory.add(x.detach(), label, u)
            self.images += 1
            if self.images % self.cfg.update_frequency == 0:
                self._update(run)
        return scored

    def _update(self, run: Run) -> None:
        run.model.train()
        self.teacher.train()  # RBN statistics of both move towards the memory's
        contents = self.memory.contents()
        if contents is not None:
            x, ages = contents
            with torch.no_grad(), run.autocast():
                teacher_logits = self.teacher(x)
            with run.autocast():
                student_logits = run.model(self.augment(x))
            weights = timeliness(ages.to(x.device))
            loss = (soft_cross_entropy(student_logits, teacher_logits) * weights).mean()
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            run.step += 1
            flag_nonfinite(run, loss)
        ema_update(self.teacher, run.model, 1 - self.cfg.nu)
        self.updates += 1

    @hookimpl
    def cladapt_describe(self, run: Run) -> dict[str, float]:
        return {"updates": self.updates, "memory": len(self.memory)}


@hookimpl
def cladapt_register_strategies(registry: StrategyRegistry) -> None:
    registry.add(RoTTA)
