"""The standard comparisons: ``finetune`` (train on each experience in turn), ``source`` (no
adaptation at test time) and ``bn-adapt`` (normalise with test-batch statistics)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cladapt.adaptation import batch_statistics
from cladapt.config import param
from cladapt.context import Run
from cladapt.hookspecs import hookimpl
from cladapt.optim import make_optimizer, warmup_cosine
from cladapt.registry import StrategyRegistry
from cladapt.strategy import Strategy


@dataclass
class FinetuneConfig:
    optimizer: Literal["sgd", "adam", "adamw"] = param("sgd", "optimizer")
    lr: float = param(0.01, "learning rate", ge=0, le=10)
    momentum: float = param(0.9, "SGD momentum (Adam: beta1)", ge=0, lt=1)
    weight_decay: float = param(0.0, "weight decay", ge=0)
    nesterov: bool = param(False, "Nesterov momentum (SGD only; dm_nevis' learners: on)")
    decay: Literal["all", "weights"] = param(
        "all",
        "what weight decay applies to: every parameter, or the conv / linear weights only "
        "(dm_nevis' default_weight_decay_mask)",
    )
    schedule: Literal["constant", "cosine"] = param(
        "constant", "learning rate per experience: constant, or linear warm-up then cosine decay"
    )
    warmup_steps: int = param(0, "warm-up steps of the cosine schedule", ge=0)
    warmup_epochs: float = param(
        0.0,
        "warm-up of the cosine schedule in epochs of each experience instead of steps "
        "(dm_nevis: 7; at most all steps but one); 0: warmup_steps",
        ge=0,
    )
    reset_optimizer: bool = param(
        False, "a fresh optimizer for every experience (ZSCL's scripts run each task anew)"
    )
    task_lr: bool = param(
        True, "use a stream's per-task learning rates where it has them (MTIL: as ZSCL's scripts)"
    )


class Finetune(Strategy):
    """Plain fine-tuning of all parameters on each experience in turn (the lower bound)."""

    name = "finetune"
    protocols = ("continual", "uda")
    Config = FinetuneConfig

    def make_optimizer(self, run: Run, lr: float | None = None) -> None:
        c = self.cfg
        run.optimizer = make_optimizer(
            c.optimizer,
            run.model.parameters(),
            lr or c.lr,
            c.momentum,
            c.weight_decay,
            c.nesterov,
            decay_weights_only=c.decay == "weights",
        )

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        run.model.requires_grad_(True)
        self.make_optimizer(run)

    def base_lr(self, run: Run) -> float:
        if "lr_override" in run.state:  # a model-selection trial's rate (protocols/selection.py)
            return float(run.state["lr_override"])
        exp = run.experience
        if self.cfg.task_lr and exp is not None and "lr" in exp.metadata:
            return float(exp.metadata["lr"])
        return self.cfg.lr

    @hookimpl
    def cladapt_before_experience(self, run: Run) -> None:
        if run.optimizer is None or run.protocol != "continual":
            return
        if self.cfg.reset_optimizer and run.experience_index > 0:
            self.make_optimizer(run, self.base_lr(run))
        self.restart_schedule(run)

    def restart_schedule(self, run: Run) -> None:
        """Back to step 0 of this experience's schedule (called again by each selection trial)."""
        self.task_step = 0
        self.set_lr(run, 0)

    @hookimpl
    def cladapt_after_step(self, run: Run) -> None:
        if run.protocol != "continual":
            return
        self.task_step = getattr(self, "task_step", 0) + 1
        self.set_lr(run, self.task_step)

    def set_lr(self, run: Run, step: int) -> None:
        """The rate for the coming step ``step`` of this experience (ZSCL's ``cosine_lr``). A
        constant rate without per-task rates is left alone (e.g. a selection trial's rate)."""
        exp = run.experience
        per_task = self.cfg.task_lr and exp is not None and "lr" in exp.metadata
        if self.cfg.schedule == "constant" and not per_task:
            return
        total = run.state.get("steps_this_experience", 0)
        factor = (
            warmup_cosine(step, total, self.warmup_steps(run, total))
            if self.cfg.schedule == "cosine"
            else 1.0
        )
        for group in run.optimizer.param_groups:
            group["lr"] = self.base_lr(run) * factor

    def warmup_steps(self, run: Run, total: int) -> int:
        """``warmup_steps``, or ``warmup_epochs`` of this experience as dm_nevis counts them
        (``learning_rate_schedules.warmup_cosine_decay_learning_rate_schedule``:
        ``min(max_steps - 1, warmup_epochs * steps_per_epoch)``)."""
        if not self.cfg.warmup_epochs:
            return self.cfg.warmup_steps
        per_epoch = run.state.get("steps_per_epoch", 1)
        return max(0, min(total - 1, int(self.cfg.warmup_epochs * per_epoch)))


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
