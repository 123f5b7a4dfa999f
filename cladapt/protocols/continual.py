"""Continual train-then-evaluate: learn experience t, then evaluate on every experience.

Builds the accuracy matrix R[t, j] (row 0: before any training) and reports average accuracy,
forgetting, BWT and FWT. Settings: ``class-incremental`` (one head over all classes seen so far,
no task identity at test time) and ``task-incremental`` (logits masked to the task's classes in
training and evaluation).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from cladapt import metrics
from cladapt.batch import Batch
from cladapt.config import param
from cladapt.context import Run
from cladapt.data.batching import iterate, num_batches
from cladapt.device import AMP_HELP
from cladapt.errors import ConfigError, DivergenceError
from cladapt.flops import FlopMeter
from cladapt.protocols.base import ProtocolResult, check_finite, class_mask, evaluate, train_step
from cladapt.protocols.selection import (
    BestOnDev,
    Trial,
    capture,
    grid_search_space,
    load,
    random_search_space,
)
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
    batch_rule: Literal["fixed", "adaptive"] = param(
        "fixed",
        "training batch size per experience: fixed (batch_size), or dm_nevis' adaptive rule "
        "min(512, max(16, 2^int(log2(0.0025 n)))) for n training examples",
    )
    eval_batch_size: int = param(256, "evaluation batch size", ge=1)
    amp: Literal["off", "bf16", "fp16"] = param("off", AMP_HELP)
    check_every: int = param(25, "check for NaN/inf losses every N steps", ge=1)
    count_flops: bool = param(True, "count training and inference FLOPs (torch.utils.flop_counter)")
    search_trials: int = param(
        0,
        "dm_nevis model selection: trials per task (lr log-uniform in [1e-4, 1e-1], label "
        "smoothing uniform in [0, 0.3]), each kept at its best dev error; the best trial goes on, "
        "no retraining (nevis: 16); 0: off",
        ge=0,
    )
    lr_grid: tuple[float, ...] = param(
        (),
        "model selection over these learning rates instead of the random search (same trial "
        "procedure: best dev checkpoint, best trial kept, no retraining)",
        gt=0,
    )
    eval_split: Literal["test", "dev_test"] = param(
        "test",
        "what the accuracy matrix is measured on: each task's test split, or its dev_test split "
        "(dm_nevis' development evaluation; NEVIS streams only)",
    )
    validate_every: int = param(
        0, "dev validation every N steps of a selection trial (dm_nevis: 1000); 0: each epoch", ge=0
    )
    batchnorm: Literal["train", "frozen"] = param(
        "train",
        "BatchNorm while training: train (batch statistics, running statistics updated) or "
        "frozen (the running statistics, unchanged: normalisation the same in training and "
        "evaluation, as a LayerNorm tower's)",
    )


def training_mode(model: torch.nn.Module, batchnorm: str) -> None:
    """``model.train()``; with ``batchnorm="frozen"`` its BatchNorm layers stay in eval mode."""
    model.train()
    if batchnorm == "frozen":
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


class ContinualProtocol:
    name = "continual"
    Config = ContinualConfig
    settings = ("class-incremental", "task-incremental")

    def run(self, run: Run) -> ProtocolResult:
        learning = _Learning(run)
        run.model = run.create_model()
        run.hook.cladapt_setup(run=run)
        learning.start()
        learning.evaluate_all(0, "initial")  # before any training: random init or zero-shot
        for t, exp in enumerate(run.stream.experiences):
            learning.learn(t, exp, self.select)
            learning.evaluate_all(t + 1, exp.name)
        return learning.result()

    def select(self, run: Run, t: int, exp: Experience, data, mask, meter, fit) -> None:
        """dm_nevis' per-task model selection (:mod:`cladapt.protocols.selection`): every trial
        trains from the same starting state, keeping its lowest-dev-error state; the trial whose
        last dev error is lowest goes on, nothing is retrained on train + dev. Every trial's
        training counts in ``train_flops``. Strategy state outside the model and optimizer
        (teachers, anchors) is not rewound between trials."""
        cfg: ContinualConfig = run.params
        trials = (
            grid_search_space(cfg.lr_grid, cfg.label_smoothing)
            if cfg.lr_grid
            else random_search_space(t, cfg.search_trials)
        )
        dev = Experience(f"{exp.name}/dev", test=exp.dev)
        start = capture(run.model, run.optimizer)
        smoothing = cfg.label_smoothing
        best: tuple[float, int, Trial, BestOnDev] | None = None
        records = []
        diverged = 0
        for i, trial in enumerate(trials):
            load(run.model, run.optimizer, start)
            # dm_nevis trains each trial with a freshly initialised optimizer: no momentum or
            # moments carried over from the previous task's winner
            run.optimizer.state.clear()
            cfg.label_smoothing = trial.label_smoothing  # read by the default loss
            run.state["lr_override"] = trial.lr  # read by strategies with a schedule
            for group in run.optimizer.param_groups:
                group["lr"] = trial.lr
            kept = BestOnDev()

            def validate(kept: BestOnDev = kept) -> None:
                error = 100.0 - float(evaluate(run, dev, mask, cfg.eval_batch_size))
                kept.offer(error, run.model, run.optimizer)

            label = f"{exp.name}@trial{i}"
            records += [
                Record("trial_lr", trial.lr, label, dev.name),
                Record("trial_label_smoothing", trial.label_smoothing, label, dev.name),
            ]
            try:
                fit(data, mask, meter, f"trial {i + 1}/{len(trials)} {exp.name}", validate)
            except DivergenceError:
                # one trial of a search blowing up (e.g. lr 0.08 against EWC's stiff penalty)
                # is a failed trial, never selected; the search goes on with the next one
                run.state.pop("_nonfinite", None)
                records.append(Record("trial_diverged", 1.0, label, dev.name))
                diverged += 1
                continue
            records += [
                Record("trial_dev_error", kept.last_error, label, dev.name),
                Record("trial_best_dev_error", kept.best_error, label, dev.name),
            ]
            if kept.state is not None and (best is None or kept.last_error < best[0]):
                best = (kept.last_error, i, trial, kept)
        cfg.label_smoothing = smoothing
        run.state.pop("lr_override", None)
        if diverged == len(trials):
            run.hook.cladapt_evaluated(run=run, records=records)
            raise DivergenceError(
                f"every one of the {diverged} selection trials diverged on experience "
                f"{exp.name!r}; lower the learning rates (--set lr_grid=...)"
            )
        if best is None:  # no step was taken: the starting state stays
            load(run.model, run.optimizer, start)
            return
        cost, index, trial, kept = best
        load(run.model, run.optimizer, kept.state)
        records += [
            Record("selected_trial", float(index), exp.name, exp.name),
            Record("selected_lr", trial.lr, exp.name, exp.name),
            Record("selected_label_smoothing", trial.label_smoothing, exp.name, exp.name),
            Record("selected_dev_error", cost, exp.name, exp.name),
        ]
        run.hook.cladapt_evaluated(run=run, records=records)


class _Learning:
    """One continual run's state: the accuracy matrix ``R`` (row 0 before any training, row
    ``t + 1`` after learning experience ``t``), FLOP counts, dm_nevis' top-5 errors, and the
    largest number of trainable parameters."""

    def __init__(self, run: Run) -> None:
        cfg: ContinualConfig = run.params
        self.run, self.cfg = run, cfg
        experiences = run.stream.experiences
        self.R = np.full((len(experiences) + 1, len(experiences)), np.nan)
        self.masks = [class_mask(run, e) for e in experiences]
        self.scored = evaluation_views(experiences, cfg.eval_split)
        self.top5_errors: dict[str, float] = {}

    def start(self) -> None:
        """After the strategy's setup: its epoch cap, whether its training is measured."""
        run, cfg = self.run, self.cfg
        cap = getattr(run.strategy, "max_epochs", None)
        self.epochs = min(cfg.epochs, cap) if cap is not None else cfg.epochs
        self.iterations = cfg.iterations if cap is None else 0
        self.flops = {"train_flops": 0.0, "inference_flops": 0.0}
        # a strategy that trains outside the protocol's loop (Avalanche's) is not counted:
        # its training FLOPs are "not measured", never 0
        self.measured = getattr(run.strategy, "train_flops_measured", True)
        if not self.measured:
            del self.flops["train_flops"]
        self.peak_trainable = run.trainable_parameters()

    def evaluate_all(self, row: int, label: str) -> None:
        run, cfg, R = self.run, self.cfg, self.R
        if getattr(run.model, "head_stale", False):
            # CLIP: recompute the prompt head once per evaluation, outside the FLOP sample
            run.model.refresh_head()
        meter = FlopMeter() if cfg.count_flops else None
        accs = [
            evaluate(run, e, self.masks[j], cfg.eval_batch_size, meter)
            for j, e in enumerate(self.scored)
        ]
        R[row] = torch.stack(accs).cpu().numpy()  # one host sync per row
        records = [
            Record("accuracy", float(v), trained_upto=label, eval_experience=e.name)
            for v, e in zip(R[row], run.stream.experiences, strict=True)
        ]
        if meter is not None:
            self.flops["inference_flops"] += meter.total
            records.append(Record("inference_flops", meter.total, trained_upto=label))
        if row > 0:  # NEVIS-style: test error on a task right after learning it
            records += self._after_learning(row, label)
        run.hook.cladapt_evaluated(run=run, records=records)

    def _after_learning(self, row: int, label: str) -> list[Record]:
        exp = self.scored[row - 1]
        error = 100.0 - self.R[row, row - 1]
        records = [Record("error_after_learning", error, label, exp.name)]
        if exp.classes is not None and len(exp.classes) > 5:  # dm_nevis' top-5
            top5 = evaluate(self.run, exp, self.masks[row - 1], self.cfg.eval_batch_size, topk=5)
            self.top5_errors[exp.name] = 100.0 - float(top5)
            records.append(
                Record("top5_error_after_learning", self.top5_errors[exp.name], label, exp.name)
            )
        return records

    def learn(self, t: int, exp: Experience, select) -> None:
        """Train on experience ``t`` (through ``select`` when the run searches per task)."""
        run, cfg = self.run, self.cfg
        run.experience, run.experience_index = exp, t
        if hasattr(run.model, "set_task_classes"):  # CLIP: which prompts train this task
            run.model.set_task_classes(exp.classes)
        run.hook.cladapt_before_experience(run=run, experience=exp)
        data = run.hook.cladapt_train_data(run=run, experience=exp) or exp.train
        meter = FlopMeter() if cfg.count_flops else None
        if (cfg.search_trials or cfg.lr_grid) and exp.dev is not None and run.optimizer:
            select(run, t, exp, data, self.masks[t], meter, self.fit)
        else:
            self.fit(data, self.masks[t], meter, f"train {exp.name}")
        self.peak_trainable = max(self.peak_trainable, run.trainable_parameters())
        run.hook.cladapt_after_experience(run=run, experience=exp)
        if meter is not None and self.measured:
            self.flops["train_flops"] += meter.total
            run.hook.cladapt_evaluated(
                run=run, records=[Record("train_flops", meter.total, exp.name, exp.name)]
            )

    def fit(
        self,
        data,
        mask,
        meter: FlopMeter | None,
        label: str,
        validate: Callable[[], None] | None = None,
    ) -> None:
        """Train ``steps`` steps; with ``validate``: call it after the first step, every
        ``validate_every`` steps (0: every epoch) and after the last (dm_nevis)."""
        run, cfg = self.run, self.cfg
        steps = steps_per_experience(cfg, data, self.epochs, self.iterations)
        # for per-task schedules (dm_nevis' warm-up is counted in epochs of this experience)
        run.state["steps_this_experience"] = steps
        if steps == 0:
            return
        batch_size = training_batch_size(cfg, len(data))
        run.state["steps_per_epoch"] = len(data) // batch_size + 1  # dm_nevis' count
        restart = getattr(run.strategy, "restart_schedule", None)
        if restart is not None:  # step 0 of this experience's (or trial's) schedule
            restart(run)
        every = cfg.validate_every or num_batches(data, batch_size)
        training_mode(run.model, cfg.batchnorm)
        batches = self._batches(data, mask, steps, batch_size)
        for step, batch in enumerate(run.progress.track(batches, steps, label)):
            train_step(run, batch, cfg.check_every, meter)
            if validate is not None and step % every == 0 and step < steps - 1:
                validate()
                training_mode(run.model, cfg.batchnorm)
        check_finite(run, parameters=True)
        if validate is not None:
            validate()

    def _batches(self, data, mask, steps: int, batch_size: int) -> Iterator[Batch]:
        """``steps`` shuffled batches, epoch after epoch (``run.state['epoch']`` counts them)."""
        run = self.run
        epoch, done = 0, 0
        while done < steps:
            epoch += 1
            run.state["epoch"] = epoch
            for x, y in iterate(
                data, batch_size, run.device, shuffle=True, generator=run.generator
            ):
                yield Batch(x=x, y=y, class_mask=mask)
                done += 1
                if done == steps:
                    return

    def result(self) -> ProtocolResult:
        """Average accuracy, forgetting, BWT/FWT; MTIL's Transfer / Avg / Last on a prompted
        (zero-shot capable) stream (Zheng et al. 2023); NEVIS' error after learning; cost."""
        run, stream, R = self.run, self.run.stream, self.R
        sizes = [len(e.test) if e.test is not None else 0 for e in self.scored]
        headline = metrics.continual_summary(R, sizes)
        tables = {"accuracy_matrix": R, "names": [e.name for e in stream.experiences]}
        if stream.prompts is not None:
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
        headline |= metrics.nevis_summary(R, sizes, self.top5_errors)
        headline["peak_trainable_params"] = float(self.peak_trainable)
        if self.cfg.count_flops:
            headline |= self.flops
        return ProtocolResult(headline=headline, tables=tables)


def evaluation_views(experiences: list[Experience], split: str) -> list[Experience]:
    """The experiences as evaluated: themselves (``test``), or views whose test data is their
    ``dev_test`` split; a task without one is a one-line error."""
    if split == "test":
        return list(experiences)
    missing = [e.name for e in experiences if e.dev_test is None]
    if missing:
        raise ConfigError(
            f"eval_split=dev_test: {len(missing)} tasks have no dev_test split (e.g. "
            f"{missing[0]!r}); only NEVIS streams hold one out"
        )
    return [
        dataclasses.replace(e, test=e.dev_test, train=None, dev=None, unlabelled=None)
        for e in experiences
    ]


def steps_per_experience(cfg: ContinualConfig, data, epochs: int, iterations: int) -> int:
    """Optimizer steps on one experience: ``iterations`` if set (the data is cycled), else
    ``epochs`` passes; 0 for strategies that never train (``max_epochs = 0``) or empty data."""
    if data is None or len(data) == 0:
        return 0
    if iterations:
        return iterations
    return epochs * num_batches(data, training_batch_size(cfg, len(data)))


def training_batch_size(cfg: ContinualConfig, n: int) -> int:
    """The batch size for ``n`` training examples: ``batch_size``, or dm_nevis' adaptive rule
    (``finetuning_dknn_learner._adapt_batch_size_to_dataset_size``: size proportion 0.0025,
    at least 16, at most 512; ``int`` truncates the logarithm towards zero as NumPy's does)."""
    if cfg.batch_rule == "fixed":
        return cfg.batch_size
    return min(512, max(16, int(2 ** int(math.log2(0.0025 * n))))) if n > 0 else 16
