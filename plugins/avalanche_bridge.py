"""Avalanche's classic continual-learning strategies as cladapt strategies (``avl-*``).

Lomonaco et al., "Avalanche: an End-to-End Library for Continual Learning", CVPR-W 2021
(``avalanche-lib``; ``pip install 'cladapt[avalanche]'``). The bridge hands each cladapt
experience's training data to the Avalanche strategy's own training loop (``strategy.train``),
on cladapt's model, optimizer settings, epochs and batch size; cladapt's continual protocol then
evaluates and scores the model exactly as for native strategies, so the rows share the
leaderboard. One Avalanche benchmark is built from all experiences at setup, so experience ids
(used by GEM, EWC, SI for their memories) are the cladapt order.

Limits, stated: class-incremental setting only (Avalanche's classic strategies do not take
cladapt's task masks); training FLOPs are not counted (Avalanche's loop is not instrumented:
these rows have no ``train_flops``, "not measured", and stay off the FLOPs plots); data goes
through Avalanche's DataLoader on the CPU side.
Without avalanche-lib installed the strategies are still listed and a run fails with one line
saying what to install; the core never imports it.

One fix to Avalanche, stated: its ``SynapticIntelligencePlugin`` (0.6) snapshots weights and
gradients with ``param.detach().cpu().flatten()``, which on a CPU returns a *view* of the live
parameter, not a copy: the "old" weights move with the model, every trajectory step is 0, the
importances stay 0 and SI is plain fine-tuning (on the leaderboard: avl-si equal to avl-naive to
the last digit at any ``si_lambda``; on CUDA ``.cpu()`` copies and the plugin works). The bridge
replaces those two snapshot functions with copying ones (:func:`_patch_avalanche_si`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

from cladapt.config import param
from cladapt.context import Run
from cladapt.errors import ConfigError
from cladapt.hookspecs import hookimpl
from cladapt.registry import StrategyRegistry
from cladapt.strategy import Strategy

INSTALL = "pip install 'cladapt[avalanche]' (avalanche-lib)"


def _import_avalanche():
    try:
        import avalanche.training.supervised as supervised
        from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets

        # the task-aware constructor Avalanche's own benchmark generators use (task label 0):
        # LwF and the other classic strategies read per-sample task labels
        from avalanche.benchmarks.utils import (
            _make_taskaware_classification_dataset as as_classification_dataset,
        )
    except ImportError as exc:
        raise ConfigError(f"Avalanche strategies need avalanche-lib: {INSTALL} ({exc})") from None
    _patch_avalanche_si()
    return supervised, benchmark_from_datasets, as_classification_dataset


def _patch_avalanche_si() -> None:
    """Make SI's weight / gradient snapshots copies on every device (see the module docstring).
    The plugin calls them through its class name, so they are replaced on the class."""
    from avalanche.training.plugins.synaptic_intelligence import SynapticIntelligencePlugin as SI

    if getattr(SI, "_cladapt_copies", False):
        return

    @torch.no_grad()
    def extract_weights(model, target, excluded_parameters) -> None:
        for name, p in SI.allowed_parameters(model, excluded_parameters):
            target[name].data = p.detach().flatten().to("cpu", copy=True)

    @torch.no_grad()
    def extract_grad(model, target, excluded_parameters) -> None:
        for name, p in SI.allowed_parameters(model, excluded_parameters):
            target[name].data = p.grad.detach().flatten().to("cpu", copy=True)

    SI.extract_weights = staticmethod(extract_weights)
    SI.extract_grad = staticmethod(extract_grad)
    SI._cladapt_copies = True


class _Targets(Dataset):
    """A dataset with the ``targets`` list Avalanche's classification datasets require."""

    def __init__(self, ds: Dataset) -> None:
        from cladapt.data.scenarios import targets_of

        self.ds, self.targets = ds, [int(t) for t in targets_of(ds).tolist()]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        x, y = self.ds[i]
        x = x.float().div(255) if x.dtype == torch.uint8 else x
        return x, int(y)


@dataclass
class BridgeConfig:
    lr: float = param(0.01, "SGD learning rate", ge=0, le=10)
    momentum: float = param(0.9, "SGD momentum", ge=0, lt=1)


@dataclass
class EWCBridgeConfig(BridgeConfig):
    ewc_lambda: float = param(1.0, "EWC penalty weight", ge=0)


@dataclass
class LwFBridgeConfig(BridgeConfig):
    alpha: float = param(1.0, "distillation weight", ge=0, le=1)
    temperature: float = param(2.0, "softmax temperature", gt=0)


@dataclass
class ReplayBridgeConfig(BridgeConfig):
    mem_size: int = param(200, "replay buffer size (images)", ge=1)


@dataclass
class SIBridgeConfig(BridgeConfig):
    si_lambda: float = param(1e-4, "SI penalty weight", ge=0)


@dataclass
class GEMBridgeConfig(BridgeConfig):
    patterns_per_exp: int = param(32, "memory images per experience", ge=1)
    memory_strength: float = param(0.5, "gradient projection margin", ge=0)


@dataclass
class AGEMBridgeConfig(BridgeConfig):
    patterns_per_exp: int = param(32, "memory images per experience", ge=1)
    sample_size: int = param(64, "memory images per reference gradient", ge=1)


class AvalancheStrategy(Strategy):
    """Base: train each experience with an Avalanche strategy, score with cladapt."""

    protocols = ("continual",)
    max_epochs = 0  # the protocol's own loop does nothing: Avalanche trains in before_experience
    train_flops_measured = False  # Avalanche's loop is not instrumented
    requires = ("avalanche",)
    install_hint = INSTALL
    avalanche_class: ClassVar[str] = "Naive"
    extra_args: ClassVar[tuple[str, ...]] = ()

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        supervised, benchmark_from_datasets, as_classification = _import_avalanche()
        if run.setting != "class-incremental" and run.setting != "default":
            raise ConfigError(f"{self.name} runs in the class-incremental setting only")
        c = self.cfg
        train = [
            as_classification(_Targets(e.train), task_labels=0) for e in run.stream.experiences
        ]
        self.benchmark = benchmark_from_datasets(train=train, test=train)
        # Avalanche's plugins flatten gradients with .view(-1) (A-GEM, GEM), which needs the
        # default memory format; the harness runs CNNs channels-last
        run.model.to(memory_format=torch.contiguous_format)
        run.model.requires_grad_(True)
        run.optimizer = torch.optim.SGD(run.model.parameters(), lr=c.lr, momentum=c.momentum)
        kwargs: dict[str, Any] = {a: getattr(c, a) for a in self.extra_args}
        cls = getattr(supervised, self.avalanche_class)
        with warnings.catch_warnings():  # "no loggers", deprecations: Avalanche's own business
            warnings.simplefilter("ignore")
            self.avl = self._build(cls, run, kwargs)

    def _build(self, cls, run: Run, kwargs: dict[str, Any]):
        return cls(
            model=run.model,
            optimizer=run.optimizer,
            criterion=torch.nn.CrossEntropyLoss(),
            train_mb_size=run.params.batch_size,
            train_epochs=run.params.epochs,
            eval_mb_size=run.params.batch_size,
            device=run.device,
            evaluator=None,
            **kwargs,
        )

    @hookimpl
    def cladapt_before_experience(self, run: Run, experience) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.avl.train(self.benchmark.train_stream[run.experience_index], num_workers=0)
        run.step = int(self.avl.clock.train_iterations)


def _make(
    name: str,
    cls_name: str,
    config: type,
    args: tuple[str, ...],
    doc: str,
    requires: tuple[str, ...] = ("avalanche",),
) -> type:
    return type(
        f"Avalanche{cls_name}",
        (AvalancheStrategy,),
        {
            "name": name,
            "avalanche_class": cls_name,
            "Config": config,
            "extra_args": args,
            "__doc__": doc,
            "requires": requires,
        },
    )


BRIDGED = [
    _make(
        "avl-naive",
        "Naive",
        BridgeConfig,
        (),
        "Avalanche Naive: plain fine-tuning (Avalanche's loop).",
    ),
    _make(
        "avl-ewc",
        "EWC",
        EWCBridgeConfig,
        ("ewc_lambda",),
        "Avalanche EWC (Kirkpatrick et al. 2017).",
    ),
    _make(
        "avl-lwf",
        "LwF",
        LwFBridgeConfig,
        ("alpha", "temperature"),
        "Avalanche LwF (Li & Hoiem 2017).",
    ),
    _make(
        "avl-replay", "Replay", ReplayBridgeConfig, ("mem_size",), "Avalanche experience replay."
    ),
    _make(
        "avl-si",
        "SynapticIntelligence",
        SIBridgeConfig,
        ("si_lambda",),
        "Avalanche Synaptic Intelligence (Zenke et al. 2017).",
    ),
    _make(
        "avl-gem",
        "GEM",
        GEMBridgeConfig,
        ("patterns_per_exp", "memory_strength"),
        "Avalanche GEM (Lopez-Paz & Ranzato 2017); needs a QP solver (quadprog).",
        ("avalanche", "quadprog"),
    ),
    _make(
        "avl-agem",
        "AGEM",
        AGEMBridgeConfig,
        ("patterns_per_exp", "sample_size"),
        "Avalanche A-GEM (Chaudhry et al. 2019).",
    ),
]


@hookimpl
def cladapt_register_strategies(registry: StrategyRegistry) -> None:
    for cls in BRIDGED:
        registry.add(cls)
