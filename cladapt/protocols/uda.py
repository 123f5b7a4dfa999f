"""Unsupervised domain adaptation: labelled source + unlabelled target, scored on the target.

For every target experience a fresh model is trained (``cladapt_setup`` is called per pair).
Each training batch carries a labelled source batch (``x``, ``y``) and an unlabelled target batch
(``x_target``); the target's labels never leave this module: only ``exp.unlabelled`` images are
read for training, and ``exp.test`` is used for evaluation only. The one exception is an oracle
reference (``Strategy.uses_target_labels``, e.g. ``target-oracle``): it receives ``y_target`` and
its summary is marked ``oracle = 1``, so it is never mistaken for an adaptation method.

Training length: ``epochs`` passes over the source, or, with ``iterations`` > 0, that many steps
(both domains cycled; tllib's Office recipe is 20 x 1000). Evaluation rows (target accuracy, and
source accuracy on the source test split) are written every ``eval_every`` epochs, an "epoch"
being ``iters_per_epoch`` steps in the iteration budget; the model after the last step is scored
(no selection on target labels). ``selection=best-target-oracle`` scores instead the evaluated
epoch with the best target test accuracy, as tllib's scripts and the CDAN / MCC Office tables
report (their "best accuracy" is measured on the target test set); that reads target labels, so
such a run is marked ``oracle = 1`` like the target-oracle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from cladapt.batch import Batch
from cladapt.config import param
from cladapt.context import Run
from cladapt.data.batching import cycle, images_only, num_batches
from cladapt.device import AMP_HELP
from cladapt.errors import DataError
from cladapt.protocols.base import ProtocolResult, check_finite, evaluate, train_step
from cladapt.results import Record


@dataclass
class UDAConfig:
    epochs: int = param(10, "epochs over the labelled source data", ge=0)
    iterations: int = param(
        0, "train this many steps instead of epochs (tllib Office: 20000); 0: epochs", ge=0
    )
    iters_per_epoch: int = param(
        1000, "steps per evaluation 'epoch' when iterations is set (tllib: 1000)", ge=1
    )
    batch_size: int = param(32, "batch size per domain (source and target)", ge=1)
    eval_batch_size: int = param(256, "evaluation batch size", ge=1)
    eval_every: int = param(1, "evaluate every N epochs (learning-curve rows)", ge=1)
    amp: Literal["off", "bf16", "fp16"] = param("off", AMP_HELP)
    check_every: int = param(25, "check for NaN/inf losses every N steps", ge=1)
    selection: Literal["last", "best-target-oracle"] = param(
        "last",
        "which model is scored: the last one, or the evaluated epoch with the best target test "
        "accuracy (how the published Office tables report; it reads target labels, so the run "
        "is marked an oracle and never ranked)",
    )


class UDAProtocol:
    name = "uda"
    Config = UDAConfig
    settings = ("default",)

    def run(self, run: Run) -> ProtocolResult:
        cfg: UDAConfig = run.params
        source = run.stream.source
        if source is None or source.train is None:
            raise DataError(f"UDA stream {run.stream.name!r} has no labelled source data")
        oracle = bool(getattr(run.strategy, "uses_target_labels", False))
        picks_on_target = cfg.selection == "best-target-oracle"
        target_acc: dict[str, float] = {}
        source_acc: dict[str, float] = {}
        for i, exp in enumerate(run.stream.experiences):
            if exp.unlabelled is None or exp.test is None:
                raise DataError(
                    f"UDA target {exp.name!r} needs unlabelled training data and a test split"
                )
            run.model = run.create_model()
            run.optimizer = None
            run.hook.cladapt_setup(run=run)
            run.experience, run.experience_index = exp, i
            run.hook.cladapt_before_experience(run=run, experience=exp)
            epochs, per_epoch = self.schedule(cfg, source.train)
            run.state["total_steps"] = epochs * per_epoch
            target = exp.unlabelled if oracle else images_only(exp.unlabelled)
            for what, ds in (("source", source.train), (f"target {exp.name!r}", target)):
                if len(ds) == 0:
                    raise DataError(
                        f"UDA stream {run.stream.name!r}: the {what} training set is empty"
                    )
            if oracle and not _has_labels(target):
                raise DataError(f"target {exp.name!r} has no labels for the target-oracle")
            target_batches = cycle(target, cfg.batch_size, run.device, generator=run.generator)
            source_batches = cycle(source.train, cfg.batch_size, run.device, run.generator)
            for epoch in range(1, epochs + 1):
                run.state["epoch"] = epoch
                run.model.train()
                steps = zip(range(per_epoch), source_batches, target_batches, strict=False)
                for _, (xs, ys), (xt, yt) in run.progress.track(
                    steps, per_epoch, f"{exp.name} epoch {epoch}/{epochs}"
                ):
                    batch = Batch(x=xs, y=ys, x_target=xt, y_target=yt if oracle else None)
                    train_step(run, batch, cfg.check_every)
                check_finite(run, parameters=True)
                if epoch % cfg.eval_every == 0 or epoch == epochs:
                    scored = self.scores(run, exp, epoch)
                    best = picks_on_target and exp.name in target_acc
                    if not best or scored[0] > target_acc[exp.name]:
                        target_acc[exp.name], source_acc[exp.name] = scored
            run.hook.cladapt_after_experience(run=run, experience=exp)
            if exp.name not in target_acc:  # nothing trained (epochs = 0): score as it is
                target_acc[exp.name], source_acc[exp.name] = self.scores(run, exp, 0)
            run.hook.cladapt_evaluated(
                run=run,
                records=[
                    Record("target_error", 100.0 - target_acc[exp.name], exp.name, exp.name),
                    Record("source_accuracy", source_acc[exp.name], exp.name, source.name),
                ],
            )
        acc = float(np.mean(list(target_acc.values())))
        headline = {
            "target_accuracy": acc,
            "target_error": 100.0 - acc,
            "source_accuracy": float(np.nanmean(list(source_acc.values()))),
        }
        if oracle or picks_on_target:
            headline["oracle"] = 1.0
        tables = {"target_accuracy": target_acc, "source_accuracy": source_acc}
        return ProtocolResult(headline=headline, tables=tables)

    @staticmethod
    def schedule(cfg: UDAConfig, source_train) -> tuple[int, int]:
        """(evaluation epochs, steps per epoch): an epoch is a pass over the source in full
        batches (at least one step, as ``cycle`` yields one partial batch of a tiny source)."""
        if cfg.iterations:
            return -(-cfg.iterations // cfg.iters_per_epoch), cfg.iters_per_epoch
        return cfg.epochs, max(1, num_batches(source_train, cfg.batch_size, drop_last=True))

    def scores(self, run: Run, exp, epoch: int) -> tuple[float, float]:
        """(target accuracy, source accuracy) now, also written as learning-curve rows."""
        cfg: UDAConfig = run.params
        source = run.stream.source
        target = float(evaluate(run, exp, None, cfg.eval_batch_size))
        src = float(evaluate(run, source, None, cfg.eval_batch_size)) if source.test else np.nan
        run.hook.cladapt_evaluated(
            run=run,
            records=[
                Record("target_accuracy", target, f"epoch{epoch}", exp.name),
                Record("source_accuracy", src, f"epoch{epoch}", source.name),
            ],
        )
        return target, src


def _has_labels(ds) -> bool:
    item = ds[0]
    return isinstance(item, (tuple, list)) and len(item) > 1
