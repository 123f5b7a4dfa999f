"""Per-task hyper-parameter selection as dm_nevis's learners do it.

dm_nevis (google-deepmind/dm_nevis, ``experiments_jax/configs/finetuning_dknn.py``,
``learners/finetuning_dknn/finetuning_dknn_learner.py``, ``training/hype.py``,
``learners/finetuning/finetuning_learner.py`` ``fit_with_early_stopping``):

- the search space of task k (k = the number of tasks trained before it) is ``trials`` points,
  zipped: learning rates log-uniform in [1e-4, 1e-1] drawn by ``random.Random(k + 1)`` and
  label smoothing uniform in [0, 0.3] drawn by ``random.Random(k + 2)``
  (``hype.log_uniform_random_values`` / ``uniform_random_values``; 16 trials per task);
- every trial trains from the same starting weights, with a fresh optimizer state (no momentum
  carried over from the previous task), on the train split, validating on the dev split
  after the first step, every ``validate_every`` steps and once at the end, and keeps the state
  with the lowest dev error seen (checkpoint selection; the configs' early-stopping grace equals
  the step budget, so training is never cut short);
- a trial's cost is its *last* validation's dev error (``fit_with_early_stopping`` returns the
  final ``validation_metric`` with the best state), the lowest-cost trial's kept state goes on,
  and nothing is retrained on train + dev;
- a trial whose loss or weights become NaN/inf is a failed trial, never selected (recorded as
  ``trial_diverged``); the run stops with an error only if every trial of a task diverges;
- the compute of every trial counts (the searcher sums ``resources_used``); dev evaluations do
  not (dm_nevis: "TODO: Take validation FLOPs into account").
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from typing import Any

LR_RANGE = (1e-4, 1e-1)
LABEL_SMOOTHING_RANGE = (0.0, 0.3)


@dataclass(frozen=True)
class Trial:
    lr: float
    label_smoothing: float


def uniform_values(lo: float, hi: float, n: int, seed: int) -> list[float]:
    """dm_nevis' ``hype.uniform_random_values``: n draws of ``random.Random(seed).uniform``."""
    rng = random.Random(seed)
    return [rng.uniform(lo, hi) for _ in range(n)]


def log_uniform_values(lo: float, hi: float, n: int, seed: int) -> list[float]:
    """dm_nevis' ``hype.log_uniform_random_values``: uniform in log space, exponentiated."""
    return [math.exp(v) for v in uniform_values(math.log(lo), math.log(hi), n, seed)]


def random_search_space(task_index: int, trials: int) -> list[Trial]:
    """dm_nevis' per-task search space (``search_space_creator(seed=task_index, num_trials)``)."""
    lrs = log_uniform_values(*LR_RANGE, trials, seed=task_index + 1)
    smoothing = uniform_values(*LABEL_SMOOTHING_RANGE, trials, seed=task_index + 2)
    return [Trial(lr, ls) for lr, ls in zip(lrs, smoothing, strict=True)]


def grid_search_space(lrs: tuple[float, ...], label_smoothing: float) -> list[Trial]:
    """The grid option: one trial per learning rate, the protocol's label smoothing."""
    return [Trial(lr, label_smoothing) for lr in lrs]


class BestOnDev:
    """The state with the lowest dev error seen in one trial, and the last error (the cost)."""

    def __init__(self) -> None:
        self.best_error = math.inf
        self.last_error = math.inf
        self.state: tuple[dict[str, Any], dict[str, Any] | None] | None = None

    def offer(self, error: float, model, optimizer) -> None:
        self.last_error = error
        if error < self.best_error:  # ties keep the earlier state, as dm_nevis' strict <
            self.best_error = error
            self.state = capture(model, optimizer)


def capture(model, optimizer) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Deep copies of the model's and the optimizer's state (on their device)."""
    return (
        copy.deepcopy(model.state_dict()),
        copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None,
    )


def load(model, optimizer, state: tuple[dict[str, Any], dict[str, Any] | None]) -> None:
    """Put a captured state back, leaving ``state`` intact: ``Optimizer.load_state_dict`` keeps
    the given tensors (momentum buffers, Adam moments) as its own, so without the copy the next
    steps would write into the capture and every later trial would start from the previous
    trial's momentum."""
    model.load_state_dict(state[0])
    if optimizer is not None and state[1] is not None:
        optimizer.load_state_dict(copy.deepcopy(state[1]))
