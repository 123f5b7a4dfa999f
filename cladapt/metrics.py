"""Metrics over an accuracy matrix and per-domain errors (see docs/metrics.md for formulas).

Convention: ``R`` has shape (T + 1, T). Row 0 holds accuracies *before* any training (random
init or zero-shot); row t (1..T) holds accuracies on every experience j after training on
experience t. Entries are percentages; NaN marks evaluations that were not made.
"""

from __future__ import annotations

import numpy as np


def _check(R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] + 1:
        raise ValueError(f"accuracy matrix must have shape (T+1, T), got {R.shape}")
    return R[0], R[1:]


def average_accuracy(R: np.ndarray) -> float:
    """ACC = (1/T) sum_j A[T, j]: mean accuracy over all experiences after the last one."""
    _, A = _check(R)
    return float(np.nanmean(A[-1]))


def forgetting(R: np.ndarray) -> float:
    """Chaudhry et al. 2018: F = 1/(T-1) sum_{j<T} max_{t in [j, T-1]} A[t, j] - A[T, j]."""
    _, A = _check(R)
    T = A.shape[1]
    if T < 2:
        return float("nan")
    drops = [np.nanmax(A[j : T - 1, j]) - A[T - 1, j] for j in range(T - 1)]
    return float(np.nanmean(drops))


def stream_forgetting(R: np.ndarray) -> float:
    """Accuracy right after training minus final accuracy, averaged over all but the last
    experience: F_s = 1/(T-1) sum_{j<T} A[j, j] - A[T, j] (Avalanche's ``StreamForgetting``
    definition, = -BWT; Avalanche's plugin also counts the last experience's pre-training
    accuracy when the whole stream was evaluated before it was learned: not copied)."""
    _, A = _check(R)
    T = A.shape[1]
    if T < 2:
        return float("nan")
    return float(np.nanmean([A[j, j] - A[T - 1, j] for j in range(T - 1)]))


def average_incremental_accuracy(R: np.ndarray) -> float:
    """Rebuffi et al. (iCaRL) 2017 / Janson et al. 2022: the mean over steps t of the average
    accuracy on the experiences seen so far, 1/T sum_t (1/t) sum_{j<=t} A[t, j]."""
    _, A = _check(R)
    T = A.shape[1]
    return float(np.nanmean([np.nanmean(A[t, : t + 1]) for t in range(T)]))


def weighted_average_accuracy(R: np.ndarray, sizes: list[int] | np.ndarray) -> float:
    """Final accuracy over all test samples pooled (each experience weighted by its test size),
    beside the unweighted mean over experiences of ``average_accuracy``."""
    _, A = _check(R)
    w = np.asarray(sizes, dtype=float)
    ok = ~np.isnan(A[-1])
    return float((A[-1][ok] * w[ok]).sum() / w[ok].sum()) if w[ok].sum() else float("nan")


def backward_transfer(R: np.ndarray) -> float:
    """Lopez-Paz & Ranzato 2017: BWT = 1/(T-1) sum_{j<T} A[T, j] - A[j, j]."""
    _, A = _check(R)
    T = A.shape[1]
    if T < 2:
        return float("nan")
    return float(np.nanmean([A[T - 1, j] - A[j, j] for j in range(T - 1)]))


def forward_transfer(R: np.ndarray) -> float:
    """Lopez-Paz & Ranzato 2017: FWT = 1/(T-1) sum_{j>1} A[j-1, j] - b_j, with b_j = R[0, j]
    the accuracy of the model before any training."""
    b, A = _check(R)
    T = A.shape[1]
    if T < 2:
        return float("nan")
    return float(np.nanmean([A[j - 1, j] - b[j] for j in range(1, T)]))


def mtil_transfer(R: np.ndarray) -> float:
    """ZSCL's Transfer: for every task j but the first, the mean accuracy on j over the steps
    *before* j is learned (A[0..j-1, j], the upper triangle), averaged over those tasks. The
    zero-shot row R[0] is not part of it (as in the ZSCL code, whose matrix starts after task 1)."""
    _, A = _check(R)
    T = A.shape[1]
    if T < 2:
        return float("nan")
    return float(np.nanmean([np.nanmean(A[:j, j]) for j in range(1, T)]))


def mtil_avg(R: np.ndarray) -> float:
    """ZSCL's Avg: the mean accuracy on each task over all T steps, averaged over tasks."""
    _, A = _check(R)
    return float(np.nanmean(np.nanmean(A, axis=0)))


def mtil_last(R: np.ndarray) -> float:
    """ZSCL's Last: the mean accuracy over all tasks after the final step (= ``avg_accuracy``)."""
    _, A = _check(R)
    return float(np.nanmean(A[-1]))


def mtil_per_task(R: np.ndarray) -> dict[str, np.ndarray]:
    """Per task j, the values the three MTIL metrics average (the rows of ZSCL's Table 1);
    Transfer is undefined (NaN) for the first task."""
    _, A = _check(R)
    T = A.shape[1]
    transfer = np.array([np.nanmean(A[:j, j]) if j else np.nan for j in range(T)])
    return {"Transfer": transfer, "Avg": np.nanmean(A, axis=0), "Last": A[-1].copy()}


def mtil_summary(R: np.ndarray) -> dict[str, float]:
    return {"transfer": mtil_transfer(R), "avg": mtil_avg(R), "last": mtil_last(R)}


def continual_summary(R: np.ndarray, sizes: list[int] | None = None) -> dict[str, float]:
    out = {
        "avg_accuracy": average_accuracy(R),
        "avg_incremental_accuracy": average_incremental_accuracy(R),
        "forgetting": forgetting(R),
        "stream_forgetting": stream_forgetting(R),
        "bwt": backward_transfer(R),
        "fwt": forward_transfer(R),
    }
    if sizes is not None:
        out["weighted_avg_accuracy"] = weighted_average_accuracy(R, sizes)
    return out


def nevis_summary(
    R: np.ndarray, sizes: list[int], top5_errors: dict[str, float]
) -> dict[str, float]:
    """NEVIS'22's stream metrics (dm_nevis ``experiments_jax/metrics/nevis_metrics.py``), from
    each task's test error right after learning it (the diagonal R[t+1, t]): the mean over tasks,
    the dataset-size-weighted mean (all tasks' correct predictions over all their examples) and
    the mean top-5 error over the tasks with more than 5 classes (absent if there is none)."""
    diag = np.diag(R[1:])
    n = np.asarray(sizes, dtype=float)
    out = {
        "avg_error_after_learning": float(np.mean(100.0 - diag)),
        "weighted_avg_error_after_learning": float(100.0 - (diag * n).sum() / n.sum())
        if n.sum() > 0
        else float("nan"),
    }
    if top5_errors:
        out["avg_top5_error_after_learning"] = float(np.mean(list(top5_errors.values())))
    return out


def mean_error(errors: dict[str, float]) -> float:
    """Mean of per-domain errors (the headline of test-time adaptation)."""
    return float(np.mean(list(errors.values()))) if errors else float("nan")
