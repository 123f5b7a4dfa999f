"""The whole cladapt plugin API: every pluggy hook, in one documented module.

There are two kinds of hooks.

**Registration hooks** are implemented at module level by plugin packages (built-in ones in
``cladapt.plugins`` and ``cladapt.streams``, third-party ones found through the entry-point group
``cladapt``, or modules passed with ``--plugin``). They are called once, when the global plugin
manager is built, and add names to the registries that the CLI and the runner look up.

**Run-event hooks** are called by a protocol while it consumes a stream. For each run a fresh plugin
manager holds the strategy object, any extra loss plugins (regularisers) and observers (result
writer, ...) plus the built-in default behaviour, registered *last-called*, that a strategy
overrides by implementing the same hook. Hooks receive a :class:`cladapt.context.Run` (model,
device, optimizer, stream, params, counters) instead of long argument lists. pluggy matches
arguments by name: a hook implementation may accept any subset of the arguments listed here.

Event order, per protocol (``*`` marks hooks called for every batch)::

    continual  setup, [before_experience, train_data, train_step*, extra_losses*, after_step*,
               after_experience, predict* (evaluation of every experience), evaluated]..., teardown
    test_time  setup, [reset (episodic only), before_experience, adapt*, after_experience,
               evaluated]..., teardown
    uda        per target: setup, before_experience, train_step* (batch has x, y from the source and
               x_target from the unlabelled target), extra_losses*, after_step*, after_experience,
               predict*, evaluated; then teardown

A training step is owned by the protocol: it calls ``cladapt_train_step`` (inside autocast), adds
the sum of ``cladapt_extra_losses``, then runs backward and ``run.optimizer.step()``. A test-time
strategy owns its whole step inside ``cladapt_adapt`` (the forward-and-adapt convention of the big
TTA repositories) and returns the logits to be scored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

    from cladapt.batch import Batch, StepOutput
    from cladapt.context import Run
    from cladapt.registry import ModelRegistry, StrategyRegistry, StreamRegistry
    from cladapt.results import Record
    from cladapt.stream import Experience

PROJECT = "cladapt"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------- registration hooks
@hookspec
def cladapt_register_strategies(registry: StrategyRegistry) -> None:
    """Add strategies: ``registry.add(StrategyClass)`` (see :class:`cladapt.strategy.Strategy`)."""


@hookspec
def cladapt_register_streams(registry: StreamRegistry) -> None:
    """Add stream builders: ``registry.add(name, build, protocol=..., description=...)``."""


@hookspec
def cladapt_register_models(registry: ModelRegistry) -> None:
    """Add model factories: ``registry.add(name, factory, description=..., prepare=None)``.

    A factory is called as ``factory(num_classes=..., input_shape=..., pretrained=...,
    class_names=..., prompts=...)`` (``prompts``: per class its texts, for streams that have them;
    accept ``**kwargs``) and returns an ``nn.Module`` mapping a batch of images to logits.
    ``prepare(input_shape=..., progress=...)`` makes one-off cached artefacts (pre-trained weights)
    before a ``--pretrained`` run starts its clock.
    """


# --------------------------------------------------------------------------- run-event hooks
@hookspec
def cladapt_setup(run: Run) -> None:
    """The model is on ``run.device``: configure it (which parameters train, BN modes) and set
    ``run.optimizer`` if the strategy trains. Called once per run (once per pair for UDA)."""


@hookspec
def cladapt_reset(run: Run) -> None:
    """Restore the state right after setup. Called by the test-time protocol in the episodic
    setting before every domain but the first. The built-in default restores the model and
    optimizer state dicts; strategies with extra state (teachers, memories) restore it here."""


@hookspec
def cladapt_before_experience(run: Run, experience: Experience) -> None:
    """A new task (continual), domain (test-time) or target (UDA) begins."""


@hookspec(firstresult=True)
def cladapt_train_data(run: Run, experience: Experience) -> Dataset | None:
    """The dataset to train on for ``experience`` (continual protocol). Return None to train on
    ``experience.train``; a strategy may substitute another (joint training on all data seen so
    far, a replay buffer mixed in, ...)."""


@hookspec(firstresult=True)
def cladapt_train_step(run: Run, batch: Batch) -> StepOutput | None:
    """Compute the training loss of one labelled batch; return ``StepOutput(loss, logits)``.

    Called inside autocast. Do not call backward: the protocol adds the extra losses, calls
    backward and steps ``run.optimizer``. Return ``StepOutput(loss=None, ...)`` when the strategy
    consumed the batch without a gradient step (e.g. updating class means). The built-in default
    is cross-entropy on ``run.model(batch.x)`` with the task's logit mask applied.
    """


@hookspec
def cladapt_extra_losses(run: Run, batch: Batch, outputs: StepOutput) -> torch.Tensor | None:
    """Return an extra loss term (scalar tensor) or None. All results are summed into the loss:
    this is how regularisers (LwF, EWC, ...) compose with any strategy that trains."""


@hookspec
def cladapt_after_step(run: Run, outputs: StepOutput) -> None:
    """After ``optimizer.step()``: EMA teachers, weight averaging, schedulers."""


@hookspec
def cladapt_after_experience(run: Run, experience: Experience) -> None:
    """Training on (or adapting to) ``experience`` is finished; evaluation comes next."""


@hookspec(firstresult=True)
def cladapt_predict(run: Run, batch: Batch) -> torch.Tensor | None:
    """Logits for an evaluation batch, without adapting. The default runs the model in eval mode
    under ``torch.no_grad`` and applies the task's logit mask."""


@hookspec(firstresult=True)
def cladapt_adapt(run: Run, batch: Batch) -> torch.Tensor | None:
    """Test-time: predict then adapt on one unlabelled batch (``batch.y`` is for scoring only and
    must not be read). Return the logits to be scored. The default is ``cladapt_predict``."""


@hookspec
def cladapt_evaluated(run: Run, records: list[Record]) -> None:
    """Observers receive every group of result records as soon as it is computed (the result
    writer appends them to the CSV at once, so an interrupted run keeps them)."""


@hookspec
def cladapt_teardown(run: Run, status: str) -> None:
    """The run ended with ``status`` in {"ok", "error", "interrupted"}; release resources."""


@hookspec
def cladapt_describe(run: Run) -> dict[str, Any] | None:
    """Return extra cost facts for the summary rows, e.g. ``{"forward_passes_per_batch": 2}``."""
