"""How many runs one machine runs at once, and with how many threads each.

On a CPU: one worker per usable core (the process's CPU affinity, capped by a cgroup CPU quota),
one torch thread each. On CUDA: a GPU is filled with workers, as many as its free memory holds
at a run's measured peak (plus a CUDA context and a safety margin), capped by the cores, so that
small runs do not leave an H200 idle behind one worker; the cores are shared among the workers.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CUDA_CONTEXT_MB = 600.0  # what a process's CUDA context and cuDNN/cuBLAS workspaces take
MEMORY_MARGIN = 1.5  # a run's peak times this: other streams, models or batch sizes peak higher
DEFAULT_RUN_PEAK_MB = 1024.0  # no GPU run measured yet (the embedded runs peak near 0.5 GB)


@dataclass(frozen=True)
class Machine:
    """What the worker rule reads of a machine (a test builds one by hand)."""

    cores: int
    gpu_free_mb: tuple[float, ...] = ()  # free memory of each visible CUDA GPU
    mps: bool = False


def cpu_count() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a
    container's ``--cpus``), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, quota) if quota else cores)


def _cgroup_quota(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    try:
        limit, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if limit == "max":
        return None
    return max(1, math.floor(int(limit) / int(period)))


def probe_machine() -> Machine:
    import torch

    free: tuple[float, ...] = ()
    if torch.cuda.is_available():
        free = tuple(
            torch.cuda.mem_get_info(i)[0] / 2**20 for i in range(torch.cuda.device_count())
        )
    mps = getattr(torch.backends, "mps", None)
    return Machine(cpu_count(), free, bool(mps and mps.is_available()))


def runs_per_gpu(free_mb: float, run_peak_mb: float) -> int:
    """Runs whose peak (with a context and the margin) fit in ``free_mb`` at once (at least 1)."""
    per_run = (max(run_peak_mb, 1.0) + CUDA_CONTEXT_MB) * MEMORY_MARGIN
    return max(1, int(free_mb // per_run))


def default_workers(device: str, machine: Machine, run_peak_mb: float | None = None) -> int:
    """Workers for ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) on ``machine``."""
    peak = run_peak_mb or DEFAULT_RUN_PEAK_MB
    if device.startswith("cuda") or (device == "auto" and machine.gpu_free_mb):
        if not machine.gpu_free_mb:
            return 1
        if device in ("auto", "cuda"):
            gpus = machine.gpu_free_mb
        else:  # cuda:N: that GPU alone
            index = int(device.split(":", 1)[1])
            gpus = machine.gpu_free_mb[index : index + 1] or machine.gpu_free_mb[:1]
        fit = sum(runs_per_gpu(free, peak) for free in gpus)
        return max(1, min(machine.cores, fit))
    if device == "mps" or (device == "auto" and machine.mps):
        return 1
    return machine.cores


def threads_per_worker(machine: Machine, workers: int) -> int:
    return max(1, machine.cores // max(1, workers))


def measured_gpu_peak_mb(path: Path) -> float | None:
    """The largest CUDA peak (``peak_memory_mb`` measured as ``cuda_max_allocated``) among the
    runs in an earlier results CSV, if any."""
    from cladapt.leaderboard.aggregate import load

    try:
        df = load([path])
    except Exception:  # no file yet, or not ours: the default estimate is used
        return None
    rows = df[
        (df.row_type == "summary")
        & (df.metric == "peak_memory_mb")
        & (df.note.fillna("") == "cuda_max_allocated")
    ]
    return float(rows.value.max()) if len(rows) else None
