"""SAR: sharpness-aware and reliable entropy minimisation with model recovery (``sar``).

Niu, Wu, Zhang, Wen, Chen, Zhao, Tan, "Towards Stable Test-Time Adaptation in Dynamic Wild
World", ICLR 2023; official code mr-eggplant/SAR (``sar.py``, ``sam.py``, ``main.py``).
Followed line by line:

- Normalisation layers' affine parameters train (BatchNorm with test-batch statistics), except
  the top of the network: ResNets' ``layer4``, ViT-B's blocks 9-11 and the final norm.
- Reliable entropy (Eqn. 2): only samples with entropy < ``E0 = entropy_margin * ln C``.
- Sharpness-aware step (SAM, Eqn. 4-5): gradient of the reliable entropy at theta; move to
  theta + rho * g / ||g||; forward again, keep the first filter's samples that are still below
  E0; gradient there; back to theta and an SGD (momentum 0.9) step with that gradient.
- Model recovery: an exponential moving average (0.9) of the second loss; when it falls below
  ``reset_em`` (0.2) the model and the optimizer are reset to their initial state — a collapsed
  model (trivially confident on everything) is restored. As in the official code the optimizer
  is SAM over SGD and the recovery loads SAM's own state (``optimizer.load_state_dict``): the
  base SGD's momentum buffers live in the base optimizer and survive it, so here the recovery
  restores the weights and the learning rates and keeps SGD's momentum. The average is kept
  through the recovery, as the official ``SAR.forward`` does (``reset()`` sets it to None, then
  ``self.ema = ema`` writes the low value back), so recovery repeats on the following batches
  until the loss average rises above ``reset_em``; ``recovery_ema=cleared`` restarts it instead.
- The scored logits are those of the first forward pass.

Defaults: the peer benchmark's CIFAR configuration (mariodoebler/test-time-adaptation:
SAM over SGD, lr 1e-3, momentum 0.9, rho 0.05, E0 = 0.4 ln C, e_m = 0.2); the official repository
is ImageNet-only (lr 2.5e-4 at batch 64). Deviations, stated: for models whose stages are not
called ``layer4`` / ``blocks.N`` (the embedded SmallCNN) the last stage is the "top" that is not
adapted; an empty selection gives a zero loss (the official mean of nothing is NaN, whose
backward is also a zero gradient, and which it also leaves out of the moving average). One
number is read from the device per batch (the second loss, as the official ``.item()``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from cladapt.adaptation import batch_statistics, entropy, norm_layers
from cladapt.batch import Batch
from cladapt.config import param
from cladapt.context import Run
from cladapt.errors import ConfigError
from cladapt.hookspecs import hookimpl
from cladapt.protocols.base import flag_nonfinite
from cladapt.protocols.selection import capture
from cladapt.registry import StrategyRegistry
from cladapt.strategy import Strategy

LOSS_EMA = 0.9  # the official update_ema


@dataclass
class SARConfig:
    lr: float = param(
        1e-3, "SGD learning rate (CIFAR: 1e-3; official ImageNet: 2.5e-4)", ge=0, le=10
    )
    momentum: float = param(0.9, "SGD momentum", ge=0, lt=1)
    rho: float = param(0.05, "SAM neighbourhood radius", ge=0)
    entropy_margin: float = param(
        0.4, "reliable samples: entropy < entropy_margin * ln C (E0, Eqn. 2)", ge=0
    )
    reset_em: float = param(
        0.2, "model recovery: reset when the moving average of the loss falls below this", ge=0
    )
    recovery_ema: Literal["kept", "cleared"] = param(
        "kept",
        "the loss average after a recovery: kept (the official sar.py: reset() clears it, then "
        "forward() writes the low value back, so the next batches recover again until it rises) "
        "or cleared (restart the average)",
    )


def _is_top(name: str) -> bool:
    """The official ``collect_params`` skips: ResNets' layer4, ViT-B's blocks 9-11, the final
    norm (names may carry a wrapper's prefix, e.g. ``model.layer4``)."""
    parts = name.split(".")
    dotted = f".{name}."
    return (
        "layer4" in parts
        or any(f".blocks.{i}." in dotted for i in (9, 10, 11))
        or (parts[-1] == "norm" and len(parts) <= 2)
    )


def _top_modules(model: nn.Module) -> set[int]:
    """ids of the modules SAR leaves unadapted (the network's top)."""
    top = {id(s) for name, m in model.named_modules() if _is_top(name) for s in m.modules()}
    if not top:
        from cladapt.plugins.ecotta import stage_groups

        groups = stage_groups(model)
        if len(groups) > 1:  # e.g. SmallCNN: its last stage is the top
            top = {id(s) for unit in groups[-1] for s in unit.modules()}
    return top


def sar_parameters(model: nn.Module) -> list[nn.Parameter]:
    top = _top_modules(model)
    params = [
        p
        for m in norm_layers(model)
        if id(m) not in top
        for p in (m.weight, m.bias)
        if p is not None
    ]
    if not params:
        raise ConfigError("sar found no normalisation layers below the network's top to adapt")
    return params


def reliable_entropy(logits: torch.Tensor, margin: float, keep: torch.Tensor | None = None):
    """(mean entropy over the samples below ``margin`` [and in ``keep``], that mask)."""
    ent = entropy(logits)
    mask = ent < margin
    if keep is not None:
        mask = mask & keep
    loss = (ent * mask).sum() / mask.sum().clamp_min(1)
    return loss, mask


class SAR(Strategy):
    """SAR: sharpness-aware entropy minimisation on reliable samples, with model recovery when
    the model collapses (Niu et al., ICLR 2023)."""

    name = "sar"
    protocols = ("test_time",)
    Config = SARConfig

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        model = run.model
        model.requires_grad_(False)
        model.eval()
        batch_statistics(model)
        self.params = sar_parameters(model)
        for p in self.params:
            p.requires_grad_(True)
        run.optimizer = torch.optim.SGD(self.params, lr=self.cfg.lr, momentum=self.cfg.momentum)
        self.initial = capture(model, run.optimizer)
        self.margin = self.cfg.entropy_margin * math.log(run.stream.num_classes)
        self.loss_ema: float | None = None
        self.recoveries = 0

    def _recover(self, run: Run) -> None:
        """The official ``reset()``: the weights and SAM's state, not the base SGD's momentum."""
        weights, optimizer = self.initial
        run.model.load_state_dict(weights)  # copies: later steps never write into it
        for group, saved in zip(run.optimizer.param_groups, optimizer["param_groups"], strict=True):
            group.update({k: v for k, v in saved.items() if k != "params"})
        if self.cfg.recovery_ema == "cleared":
            self.loss_ema = None

    @hookimpl
    def cladapt_reset(self, run: Run) -> None:
        self.loss_ema = None

    @torch.no_grad()
    def _ascend(self) -> list[torch.Tensor]:
        """SAM's first step: theta += rho * g / ||g||; returns theta, to come back to."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scale = self.cfg.rho / (norm + 1e-12)
        theta = [p.detach().clone() for p in self.params]
        for p, g in zip(self.params, grads, strict=True):
            p.add_(g * scale)
            p.grad = None
        return theta

    @hookimpl
    def cladapt_adapt(self, run: Run, batch: Batch) -> torch.Tensor:
        opt = run.optimizer
        opt.zero_grad(set_to_none=True)
        with run.autocast():
            logits = run.model(batch.x)
        loss, reliable = reliable_entropy(logits, self.margin)
        loss.backward()
        theta = self._ascend()
        with run.autocast():
            logits2 = run.model(batch.x)
        loss2, second = reliable_entropy(logits2, self.margin, keep=reliable)
        loss2.backward()
        with torch.no_grad():
            for p, t in zip(self.params, theta, strict=True):
                p.copy_(t)  # back to theta; the step uses the gradient at theta + e
        opt.step()
        opt.zero_grad(set_to_none=True)
        run.step += 1
        flag_nonfinite(run, loss2)
        # one host read per batch (the official .item()): the second loss and its sample count
        value, count = torch.stack([loss2.detach().float(), second.sum().float()]).tolist()
        if count > 0 and math.isfinite(value):
            self.loss_ema = (
                value
                if self.loss_ema is None
                else (LOSS_EMA * self.loss_ema + (1 - LOSS_EMA) * value)
            )
        if self.loss_ema is not None and self.loss_ema < self.cfg.reset_em:
            self._recover(run)
            self.recoveries += 1
        return logits.detach().float()

    @hookimpl
    def cladapt_describe(self, run: Run) -> dict[str, float]:
        return {"recoveries": self.recoveries}


@hookimpl
def cladapt_register_strategies(registry: StrategyRegistry) -> None:
    registry.add(SAR)
