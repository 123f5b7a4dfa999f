"""Continual train-then-evaluate: learn experience t, then evaluate on every experience.

Builds the accuracy matrix R[t, j] (row 0: before any training) and reports average accuracy,
forgetting, BWT and FWT. Settings: ``class-incremental`` (one head over all classes seen so far,
no task identity at test time) and ``task-incremental`` (logits masked to the task's classes in
training and evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from cladapt import metrics
from cladapt.batch import Batch
from cladapt.config import param
from cladapt.context import Run
from cladapt.data.batching import concat_datasets, iterate, num_batches
from cladapt.flops import FlopMeter
from cladapt.protocols.base import ProtocolResult, check_finite, class_mask, evaluate, train_step
from cladapt.results import Record
from cladapt.stream import Experience


@dataclass
class ContinualConfig:
    epochs: int = param(3, "training epochs per experience", ge=0)
    iterations: int = param(
        0,
        "train this many steps per experience instead of epochs (ZSCL's MTIL: 1000); 0: epochs",
        ge=0,
    )
    label_smoothing: float = param(
        0.0, "label smoothing of the default cross-entropy step", ge=0, lt=1
    )
    batch_size: int = param(32, "training batch size", ge=1)
    eval_batch_size: int = param(256, "evaluation batch size", ge=1)
    amp: Literal["auto", "off", "bf16", "fp16"] = param(
        "auto", "autocast: auto = bf16 on CUDA, off on CPU"
    )
    check_every: int = param(25, "check for NaN/inf losses every N steps", ge=1)
    count_flops: bool = param(True, "count training and inference FLOPs (torch.utils.flop_counter)")
    lr_grid: tuple[float, ...] = param(
        (),
        "NEVIS-style selection: try each lr on the task's dev split, then retrain on train+dev",
        gt=0,
    )


class ContinualProtocol:
    name = "continual"
    Config = ContinualConfig
    settings = ("class-incremental", "task-incremental")

    def run(self, run: Run) -> ProtocolResult:
        cfg: ContinualConfig = run.params
        stream = run.stream
        T = len(stream.experiences)
        R = np.full((T + 1, T), np.nan)
        masks = [class_mask(run, e) for e in stream.experiences]

        run.model = run.create_model()
        run.hook.cladapt_setup(run=run)
        cap = getattr(run.strategy, "max_epochs", None)
        epochs = min(cfg.epochs, cap) if cap is not None else cfg.epochs
        iterations = cfg.iterations if cap is None else 0

        flops = {"train_flops": 0.0, "inference_flops": 0.0}
        top5_errors: dict[str, float] = {}
        peak_trainable = run.trainable_parameters()

        def evaluate_all(row: int, label: str) -> None:
            if getattr(run.model, "head_stale", False):
                # CLIP: recompute the prompt head once per evaluation, outside the FLOP sample
                run.model.refresh_head()
            meter = FlopMeter() if cfg.count_flops else None
            accs = [
                evaluate(run, e, masks[j], cfg.eval_batch_size, meter)
                for j, e in enumerate(stream.experiences)
            ]
            R[row] = torch.stack(accs).cpu().numpy()  # one host sync per row
            records = [
                Record("accuracy", float(v), trained_upto=label, eval_experience=e.name)
                for v, e in zip(R[row], stream.experiences, strict=True)
            ]
            if meter is not None:
                flops["inference_flops"] += meter.total
                records.append(Record("inference_flops", meter.total, trained_upto=label))
            if row > 0:  # NEVIS-style: test error on a task right after learning it
                exp = stream.experiences[row - 1]
                error = 100.0 - R[row, row - 1]
                records.append(Record("error_after_learning", error, label, exp.name))
                if exp.classes is not None and len(exp.classes) > 5:  # dm_nevis' top-5
                    top5 = evaluate(run, exp, masks[row - 1], cfg.eval_batch_size, topk=5)
                    top5_errors[exp.name] = 100.0 - float(top5)
                    records.append(
                        Record("top5_error_after_learning", top5_errors[exp.name], label, exp.name)
                    )
            run.hook.cladapt_evaluated(run=run, records=records)

        evaluate_all(0, "initial")  # before any training: random init or zero-shot

        def fit(data, mask, meter: FlopMeter | None, label: str) -> None:
            steps = steps_per_experience(cfg, data, epochs, iterations)
            run.state["steps_this_experience"] = steps  # for per-task schedules
            if steps == 0:
                return
            run.model.train()

            def batches():
                epoch, done = 0, 0
                while done < steps:
                    epoch += 1
                    run.state["epoch"] = epoch
                    for x, y in iterate(
                        data, cfg.batch_size, run.device, shuffle=True, generator=run.generator
                    ):
                        yield Batch(x=x, y=y, class_mask=mask)
                        done += 1
                        if done == steps:
                            return

            for batch in run.progress.track(batches(), steps, label):
                train_step(run, batch, cfg.check_every, meter)
            check_finite(run, parameters=True)

        for t, exp in enumerate(stream.experiences):
            run.experience, run.experience_index = exp, t
            if hasattr(run.model, "set_task_classes"):  # CLIP: which prompts train this task
                run.model.set_task_classes(exp.classes)
            run.hook.cladapt_before_experience(run=run, experience=exp)
            data = run.hook.cladapt_train_data(run=run, experience=exp) or exp.train
            meter = FlopMeter() if cfg.count_flops else None
            if cfg.lr_grid and exp.dev is not None and run.optimizer is not None:
                data = self.select_lr(run, exp, data, masks[t], meter, fit)
            fit(data, masks[t], meter, f"train {exp.name}")
            peak_trainable = max(peak_trainable, run.trainable_parameters())
            run.hook.cladapt_after_experience(run=run, experience=exp)
            if meter is not None:
                flops["train_flops"] += meter.total
                run.hook.cladapt_evaluated(
                    run=run, records=[Record("train_flops", meter.total, exp.name, exp.name)]
                )
            evaluate_all(t + 1, exp.name)

        sizes = [len(e.test) if e.test is not None else 0 for e in stream.experiences]
        headline = metrics.continual_summary(R, sizes)
        tables = {"accuracy_matrix": R, "names": [e.name for e in stream.experiences]}
        if stream.prompts is not None:  # zero-shot capable: MTIL's metrics (Zheng et al. 2023)
            headline |= metrics.mtil_summary(R)
            tables["per_task"] = metrics.mtil_per_task(R)
            run.hook.cladapt_evaluated(
                run=run,
                records=[
                    Record(label.lower(), float(v), "final", e.name)
                    for label, row in tables["per_task"].items()
                    for v, e in zip(row, stream.experiences, strict=True)
                    if not np.isnan(v)
                ],
            )
        headline |= metrics.nevis_summary(R, sizes, top5_errors)
        headline["peak_trainable_params"] = float(peak_trainable)
        if cfg.count_flops:
            headline |= flops
        return ProtocolResult(headline=headline, tables=tables)

    def select_lr(self, run: Run, exp, data, mask, meter, fit):
        """Train with each learning rate of the grid from the same starting state, score on the dev
        split, restore, set the best rate and return train + dev to train on (as NEVIS'22 does).
        The search's compute is counted in the task's ``train_flops``. Strategy state outside the
        model and optimizer (teachers, anchors) is not rewound between trials."""
        cfg: ContinualConfig = run.params
        run.snapshot()
        dev = Experience(f"{exp.name}/dev", test=exp.dev)
        scores = {}
        for lr in cfg.lr_grid:
            run.restore()
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            fit(data, mask, meter, f"search {exp.name} lr={lr:g}")
            scores[lr] = float(evaluate(run, dev, mask, cfg.eval_batch_size))
        best = max(scores, key=scores.get)  # ties: the first in the grid
        run.restore()
        for group in run.optimizer.param_groups:
            group["lr"] = best
        records = [
            Record("dev_accuracy", v, f"{exp.name}@lr={lr:g}", dev.name) for lr, v in scores.items()
        ]
        records.append(Record("selected_lr", best, exp.name, exp.name))
        run.hook.cladapt_evaluated(run=run, records=records)
        return concat_datasets([data, exp.dev])


def steps_per_experience(cfg: ContinualConfig, data, epochs: int, iterations: int) -> int:
    """Optimizer steps on one experience: ``iterations`` if set (the data is cycled), else
    ``epochs`` passes; 0 for strategies that never train (``max_epochs = 0``) or empty data."""
    if data is None or len(data) == 0:
        return 0
    if iterations:
        return iterations
    return epochs * num_batches(data, cfg.batch_size)
