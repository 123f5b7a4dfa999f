"""The standard comparisons: ``finetune`` (train on each experience in turn), ``source`` (no
adaptation at test time) and ``bn-adapt`` (normalise with test-batch statistics)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cladapt.adaptation import batch_statistics
from cladapt.config import param
from cladapt.context import Run
from cladapt.hookspecs import hookimpl
from cladapt.optim import make_optimizer
from cladapt.registry import StrategyRegistry
from cladapt.strategy import Strategy


@dataclass
class FinetuneConfig:
    optimizer: Literal["sgd", "adam", "adamw"] = param("sgd", "optimizer")
    lr: float = param(0.01, "learning rate")
    momentum: float = param(0.9, "SGD momentum (Adam: beta1)")
    weight_decay: float = param(0.0, "weight decay")


class Finetune(Strategy):
    """Plain fine-tuning of all parameters on each experience in turn (the lower bound)."""

    name = "finetune"
    protocols = ("continual", "uda")
    Config = FinetuneConfig

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        run.model.requires_grad_(True)
        c = self.cfg
        run.optimizer = make_optimizer(
            c.optimizer, run.model.parameters(), c.lr, c.momentum, c.weight_decay
        )


class Source(Strategy):
    """The source model as it is: no adaptation (the test-time lower bound)."""

    name = "source"
    protocols = ("test_time",)


class BNAdapt(Strategy):
    """Test-time BN adaptation: normalise with each test batch's statistics, no parameter updates.

    Schneider et al., "Improving robustness against common corruptions by covariate shift
    adaptation", NeurIPS 2020, with N = 0 (no source prior; ``alpha-bn`` mixes in the source
    statistics); this is the "BN" baseline of Tent (Wang et al., ICLR 2021).
    """

    name = "bn-adapt"
    protocols = ("test_time",)

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        run.model.requires_grad_(False)
        if not batch_statistics(run.model):
            from cladapt.errors import ConfigError

            raise ConfigError(
                f"bn-adapt needs a model with BatchNorm layers; {run.model_name!r} has none"
            )


@hookimpl
def cladapt_register_strategies(registry: StrategyRegistry) -> None:
    for cls in (Finetune, Source, BNAdapt):
        registry.add(cls)
