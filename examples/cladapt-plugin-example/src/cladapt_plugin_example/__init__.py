"""Example cladapt plugin: one strategy (``bn-ema``) and one stream (``digits-inverted``).

cladapt finds this module through the entry point in pyproject.toml and calls the registration
hooks below, exactly as it does for its built-in plugins.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import TensorDataset

from cladapt.config import param
from cladapt.hookspecs import hookimpl
from cladapt.strategy import Strategy
from cladapt.stream import Experience, Stream


@dataclass
class BNEMAConfig:
    momentum: float = param(
        0.05, "weight of each test batch in the running BN statistics", ge=0, le=1
    )


class BNEMA(Strategy):
    """BN statistics as an EMA over the test stream (between source and bn-adapt)."""

    name = "bn-ema"
    protocols = ("test_time",)
    Config = BNEMAConfig

    @hookimpl
    def cladapt_setup(self, run) -> None:
        run.model.requires_grad_(False)
        run.model.eval()
        self.layers = [m for m in run.model.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in self.layers:
            m.momentum = self.cfg.momentum

    @hookimpl
    def cladapt_adapt(self, run, batch) -> torch.Tensor:
        with torch.no_grad():
            for m in self.layers:  # update the running statistics with this batch...
                m.train()
            run.model(batch.x)
            for m in self.layers:  # ...then predict with them
                m.eval()
            return run.model(batch.x).float()


def digits_inverted(data_root=None, seed=0) -> Stream:
    from cladapt.data.digits import CLASS_NAMES, digits_split

    train, test = digits_split()
    x, y = test.tensors
    domains = [
        Experience(
            f"inverted-{int(s * 100)}", "domain", test=TensorDataset((1 - s) * x + s * (1 - x), y)
        )
        for s in (0.25, 0.5, 0.75)
    ]
    source = Experience("clean", "domain", train=train, test=test, classes=list(range(10)))
    return Stream(
        name="digits-inverted",
        protocol="test_time",
        experiences=domains,
        class_names=list(CLASS_NAMES),
        input_shape=(3, 32, 32),
        source=source,
        source_id="digits-clean-v1",  # reuse cladapt's cached clean-digits source model
        settings=("continual", "episodic"),
        defaults={"batch_size": 64, "model": "small-cnn"},
        description="digits with partly inverted intensities (example plugin)",
    )


@hookimpl
def cladapt_register_strategies(registry) -> None:
    registry.add(BNEMA)


@hookimpl
def cladapt_register_streams(registry) -> None:
    registry.add(
        "digits-inverted",
        digits_inverted,
        protocol="test_time",
        description="digits with partly inverted intensities (example plugin)",
        embedded=True,
    )
