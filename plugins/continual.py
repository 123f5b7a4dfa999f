"""Continual-learning reference points: ``independent`` and ``joint`` (NEVIS'22's baselines
around fine-tuning) and ``nmc``, the nearest-mean classifier on frozen features.

- independent: a fresh model (the initial weights) and optimizer for every task, as NEVIS's
  "independent" learner. Only the latest model is kept, so earlier tasks are evaluated with it;
  its meaningful figures are the per-task ``error_after_learning`` and the compute.
- joint: before every task, restart from the initial weights and train on the union of the
  training data of all tasks so far: the non-continual upper bound, at a cost that grows with
  the stream (visible in ``train_flops``).
- nmc: Janson et al., "A Simple Baseline that Questions the Use of Pretrained-Models in
  Continual Learning", NeurIPS 2022 workshop. Features of a frozen (pretrained) backbone; the
  class means are running sums updated with every training image (exemplar-free, single head,
  task-free), and a test image takes the class of the nearest mean. Pass ``--pretrained`` (timm)
  or ``--checkpoint`` for pretrained features; without them the features are those of a frozen,
  randomly initialised network. One pass over each task's data suffices: later epochs are skipped.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from cladapt.plugins.baselines import Finetune
from torch.utils.data import Dataset

from cladapt.batch import Batch, StepOutput, mask_logits
from cladapt.config import param
from cladapt.context import Run
from cladapt.data.batching import concat_datasets
from cladapt.defaults import cross_entropy_step
from cladapt.hookspecs import hookimpl
from cladapt.models.features import feature_dim, features
from cladapt.registry import StrategyRegistry
from cladapt.strategy import Strategy
from cladapt.stream import Experience


class Independent(Finetune):
    """A fresh model per task (initial weights, new optimizer): NEVIS's independent baseline."""

    name = "independent"
    protocols = ("continual",)

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        super().cladapt_setup(run)
        self.initial = copy.deepcopy(run.model.state_dict())

    def restart(self, run: Run) -> None:
        run.model.load_state_dict(self.initial)
        self.make_optimizer(run)

    @hookimpl
    def cladapt_before_experience(self, run: Run, experience: Experience) -> None:
        if run.experience_index > 0:
            self.restart(run)


class Joint(Independent):
    """Retrain from the initial weights on all data seen so far (the non-continual upper bound)."""

    name = "joint"
    reference = "upper bound"

    def seen(self, run: Run) -> list[Experience]:
        return run.stream.experiences[: run.experience_index + 1]

    @hookimpl
    def cladapt_train_data(self, run: Run, experience: Experience) -> Dataset:
        return concat_datasets([e.train for e in self.seen(run)])

    @hookimpl
    def cladapt_train_step(self, run: Run, batch: Batch) -> StepOutput:
        """Task-incremental: the batch mixes tasks, so each sample is trained on its own task's
        head — its logits masked to its task's classes, as it is evaluated (the multi-head joint
        upper bound). One softmax over every seen task's classes would make the tasks compete
        for each sample, which no task-incremental learner is asked to do."""
        mask = batch.class_mask
        if mask is not None:
            mask = self.task_masks(run, mask)[batch.y]
        return cross_entropy_step(run, batch, mask)

    def task_masks(self, run: Run, like: torch.Tensor) -> torch.Tensor:
        """(C x C) bool: row c allows the classes of the task that class c belongs to. The
        stream's tasks fix it, so it is built once per run (on the masks' device), not per step;
        rows of tasks not seen yet are never indexed (their labels are not in the data yet)."""
        table = getattr(self, "_task_masks", None)
        if table is None or table.device != like.device:
            table = torch.zeros(like.shape[0], like.shape[0], dtype=torch.bool)
            for e in run.stream.experiences:
                idx = torch.as_tensor(e.classes)
                table[idx.unsqueeze(1), idx.unsqueeze(0)] = True
            self._task_masks = table = table.to(like.device)
        return table


@dataclass
class NMCConfig:
    distance: Literal["normalized", "euclidean", "cosine"] = param(
        "normalized",
        "normalized (the paper's): Euclidean between L2-normalised features and the means of the "
        "normalised features (not renormalised); euclidean: raw features; cosine: both normalised",
    )


class NMC(Strategy):
    """Nearest-mean classifier on frozen features, exemplar-free (Janson et al., "A simple
    baseline that questions the use of pretrained-models in continual learning", 2022; code
    Pauljanson002/pretrained-cl: ``F.normalize`` of the features, ``np.mean`` of them per class,
    ``argmin`` of the Euclidean norm of the difference). That is ``distance=normalized``, the
    default; raw Euclidean and cosine are options."""

    name = "nmc"
    protocols = ("continual",)
    Config = NMCConfig
    max_epochs = 1  # the class means are exact after one pass

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        run.model.requires_grad_(False).eval()
        dim, n = feature_dim(run.model), run.stream.num_classes
        self.sums = torch.zeros(n, dim, device=run.device)
        self.counts = torch.zeros(n, device=run.device)

    def embed(self, run: Run, x: torch.Tensor) -> torch.Tensor:
        run.model.eval()  # frozen backbone: BatchNorm keeps its (pretrained) statistics
        with torch.no_grad(), run.autocast():
            f = features(run.model, x).float()
        return f if self.cfg.distance == "euclidean" else F.normalize(f, dim=1)

    @hookimpl
    def cladapt_train_step(self, run: Run, batch: Batch) -> StepOutput:
        if run.state.get("epoch", 1) == 1:
            f = self.embed(run, batch.x)
            self.sums.index_add_(0, batch.y, f)
            self.counts.index_add_(0, batch.y, torch.ones_like(batch.y, dtype=torch.float))
        return StepOutput(loss=None)

    @hookimpl
    def cladapt_predict(self, run: Run, batch: Batch) -> torch.Tensor:
        f = self.embed(run, batch.x)
        means = self.sums / self.counts.clamp(min=1).unsqueeze(1)
        if self.cfg.distance == "cosine":
            means = F.normalize(means, dim=1)
        logits = -torch.cdist(f, means)
        logits = logits.masked_fill(
            self.counts == 0, torch.finfo(logits.dtype).min
        )  # unseen classes
        return mask_logits(logits, batch.class_mask)


@hookimpl
def cladapt_register_strategies(registry: StrategyRegistry) -> None:
    for cls in (Independent, Joint, NMC):
        registry.add(cls)
