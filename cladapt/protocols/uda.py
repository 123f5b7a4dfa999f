"""Unsupervised domain adaptation: labelled source + unlabelled target, scored on the target.

For every target experience a fresh model is trained (``cladapt_setup`` is called per pair).
Each training batch carries a labelled source batch (``x``, ``y``) and an unlabelled target batch
(``x_target``); the target's labels never leave this module: only ``exp.unlabelled`` images are
read for training, and ``exp.test`` is used for evaluation only. Per-epoch target accuracy is
recorded as a curve; the final target accuracy/error and the source accuracy are the headline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from cladapt.batch import Batch
from cladapt.config import param
from cladapt.context import Run
from cladapt.data.batching import cycle, images_only, iterate, num_batches
from cladapt.errors import DataError
from cladapt.protocols.base import ProtocolResult, check_finite, evaluate, train_step
from cladapt.results import Record


@dataclass
class UDAConfig:
    epochs: int = param(10, "epochs over the labelled source data", ge=0)
    batch_size: int = param(32, "batch size per domain (source and target)", ge=1)
    eval_batch_size: int = param(256, "evaluation batch size", ge=1)
    eval_every: int = param(1, "evaluate the target every N epochs (learning curve rows)", ge=1)
    amp: Literal["auto", "off", "bf16", "fp16"] = param(
        "auto", "autocast: auto = bf16 on CUDA, off on CPU; off | bf16 | fp16"
    )
    check_every: int = param(25, "check for NaN/inf losses every N steps", ge=1)


class UDAProtocol:
    name = "uda"
    Config = UDAConfig
    settings = ("default",)

    def run(self, run: Run) -> ProtocolResult:
        cfg: UDAConfig = run.params
        source = run.stream.source
        if source is None or source.train is None:
            raise DataError(f"UDA stream {run.stream.name!r} has no labelled source data")
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
            per_epoch = num_batches(source.train, cfg.batch_size, drop_last=True)
            target_batches = cycle(
                images_only(exp.unlabelled), cfg.batch_size, run.device, generator=run.generator
            )
            run.state["total_steps"] = cfg.epochs * per_epoch
            for epoch in range(1, cfg.epochs + 1):
                run.state["epoch"] = epoch
                run.model.train()
                src = iterate(
                    source.train, cfg.batch_size, run.device, True, run.generator, drop_last=True
                )
                for (xs, ys), (xt, _) in run.progress.track(
                    zip(src, target_batches, strict=False),
                    per_epoch,
                    f"{exp.name} epoch {epoch}/{cfg.epochs}",
                ):
                    train_step(run, Batch(x=xs, y=ys, x_target=xt), cfg.check_every)
                check_finite(run, parameters=True)
                if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                    target_acc[exp.name] = float(evaluate(run, exp, None, cfg.eval_batch_size))
                    run.hook.cladapt_evaluated(
                        run=run,
                        records=[
                            Record(
                                "target_accuracy",
                                target_acc[exp.name],
                                trained_upto=f"epoch{epoch}",
                                eval_experience=exp.name,
                            )
                        ],
                    )
            run.hook.cladapt_after_experience(run=run, experience=exp)
            source_acc[exp.name] = (
                float(evaluate(run, source, None, cfg.eval_batch_size))
                if source.test
                else float("nan")
            )
            run.hook.cladapt_evaluated(
                run=run,
                records=[
                    Record(
                        "target_error",
                        100.0 - target_acc[exp.name],
                        trained_upto=exp.name,
                        eval_experience=exp.name,
                    ),
                    Record(
                        "source_accuracy",
                        source_acc[exp.name],
                        trained_upto=exp.name,
                        eval_experience=source.name,
                    ),
                ],
            )
        acc = float(np.mean(list(target_acc.values())))
        return ProtocolResult(
            headline={
                "target_accuracy": acc,
                "target_error": 100.0 - acc,
                "source_accuracy": float(np.nanmean(list(source_acc.values()))),
            },
            tables={"target_accuracy": target_acc},
        )
