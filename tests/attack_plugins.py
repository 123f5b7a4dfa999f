"""Hostile strategies from a misuse attack on the harness (``atk-*``): each misbehaves in one way
a third-party plugin could, and the harness must keep every other run's result and never score
the hostile run's (loaded with ``--plugin attack_plugins`` or ``load_catalog``)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass

import torch
from cladapt.plugins.baselines import Source as SourceOnly
from cladapt.plugins.continual import Independent
from cladapt.plugins.tta import Tent

from cladapt.adaptation import adapt_step, entropy
from cladapt.config import param
from cladapt.hookspecs import hookimpl


class LeavesDoubleDtype(SourceOnly):
    """Behaves like ``source``; its teardown switches torch's default dtype to float64."""

    name = "atk-dtype"

    @hookimpl
    def cladapt_teardown(self, run, status):
        torch.set_default_dtype(torch.float64)


class LeavesGradOff(SourceOnly):
    name = "atk-gradoff"

    @hookimpl
    def cladapt_teardown(self, run, status):
        torch.set_grad_enabled(False)


class LeavesTwoThreads(SourceOnly):
    name = "atk-threads"

    @hookimpl
    def cladapt_teardown(self, run, status):
        torch.set_num_threads(2)


class MisspeltHook(SourceOnly):
    """Its adaptation hook is misspelt: pluggy would register it and never call it."""

    name = "atk-typo"

    @hookimpl
    def cladapt_adpat(self, run, batch):
        return run.hook.cladapt_predict(run=run, batch=batch)


class DropsDomains(Tent):
    """Keeps only the stream's second domain, to be scored on it alone."""

    name = "atk-dropdomains"

    @hookimpl
    def cladapt_setup(self, run):
        super().cladapt_setup(run)
        run.stream.experiences[:] = run.stream.experiences[1:2]


class DescribesMTIL(Independent):
    """A continual strategy on digits whose describe fabricates MTIL's headline metrics."""

    name = "atk-describe-mtil"

    @hookimpl
    def cladapt_describe(self, run):
        return {"avg": 100.0, "transfer": 100.0, "last": 100.0}


class DescribesAColumn(Tent):
    """Its describe returns a metric named like a column (``ATK_KEY``: seed, run_id, stream)."""

    name = "atk-describe-seed"

    @hookimpl
    def cladapt_describe(self, run):
        return {os.environ.get("ATK_KEY", "seed"): 1.0}


class RMSpropTent(Tent):
    """Tent's loss with RMSprop at ``ATK_LR``."""

    name = "atk-rmsprop"

    @hookimpl
    def cladapt_setup(self, run):
        super().cladapt_setup(run)
        params = [p for g in run.optimizer.param_groups for p in g["params"]]
        run.optimizer = torch.optim.RMSprop(params, lr=float(os.environ.get("ATK_LR", "10")))


class RaisesLrLater(Tent):
    """Tent whose Adam rate is raised to ``ATK_LR`` after the setup-time check."""

    name = "atk-lr-after"

    @hookimpl
    def cladapt_before_experience(self, run, experience):
        for group in run.optimizer.param_groups:
            group["lr"] = float(os.environ.get("ATK_LR", "5"))


class TwoClasses(Tent):
    """Adapts like Tent, then predicts class 0 and class 1 for alternate images."""

    name = "atk-twoclass"

    @hookimpl
    def cladapt_adapt(self, run, batch):
        logits = run.model(batch.x)
        adapt_step(run, entropy(logits).mean())
        fake = torch.zeros_like(logits.detach())
        fake[torch.arange(len(fake)), torch.arange(len(fake)) % 2] = 10.0
        return fake


class MutatesParams(Tent):
    """Sets the protocol's batch size to 1 in setup: the rows would record the planned 64."""

    name = "atk-mutate-params"

    @hookimpl
    def cladapt_setup(self, run):
        super().cladapt_setup(run)
        run.params.batch_size = 1


class RaisesCancelled(Tent):
    name = "atk-baseexc"

    @hookimpl
    def cladapt_before_experience(self, run, experience):
        raise asyncio.CancelledError("cancelled by a library")


class RaisesGeneratorExit(Tent):
    name = "atk-genexit"

    @hookimpl
    def cladapt_before_experience(self, run, experience):
        raise GeneratorExit()


class LeavesAThread(SourceOnly):
    """Starts a non-daemon thread that sleeps for an hour."""

    name = "atk-thread"

    @hookimpl
    def cladapt_setup(self, run):
        threading.Thread(target=time.sleep, args=(3600,), name="atk-sleeper").start()


class ThreadRaises(SourceOnly):
    """A thread of its own raises during the run."""

    name = "atk-thread-raise"

    @hookimpl
    def cladapt_setup(self, run):
        def fail() -> None:
            raise RuntimeError("the plugin's worker thread failed")

        thread = threading.Thread(target=fail, name="atk-worker")
        thread.start()
        thread.join()


@dataclass
class BigConfig:
    note: str = param("x" * 150_000, "a default far longer than a CSV cell can hold")


class BigConfigTent(Tent):
    name = "atk-bigconfig"
    Config = BigConfig


class ReadsLabels(Tent):
    """A test-time method written as if it were supervised: reads batch.y."""

    name = "atk-reads-labels"

    @hookimpl
    def cladapt_adapt(self, run, batch):
        logits = run.model(batch.x)
        return logits.detach() + 0 * batch.y.float().mean()


@hookimpl
def cladapt_register_strategies(registry):
    for cls in (
        LeavesDoubleDtype,
        LeavesGradOff,
        LeavesTwoThreads,
        MisspeltHook,
        DropsDomains,
        DescribesMTIL,
        DescribesAColumn,
        RMSpropTent,
        RaisesLrLater,
        TwoClasses,
        MutatesParams,
        RaisesCancelled,
        RaisesGeneratorExit,
        LeavesAThread,
        ThreadRaises,
        BigConfigTent,
        ReadsLabels,
    ):
        registry.add(cls)
