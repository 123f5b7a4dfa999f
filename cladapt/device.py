"""Device choice, seeding, mixed precision and memory accounting."""

from __future__ import annotations

import random
import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from cladapt.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu"
        )
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ConfigError(
            "--device mps was asked for but MPS is not available; use --device auto or cpu"
        )
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator for data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


AMP_HELP = (
    "autocast of model forwards: off = fp32 (the default: the official codes of the methods "
    "train in fp32, and bf16 changes some of their results); bf16 | fp16 opt in"
)


def amp_dtype(mode: str) -> torch.dtype | None:
    """The autocast dtype of ``--set amp``: none (fp32) unless asked for, on every device, so
    that a run gives the same answer on a GPU as on a CPU. fp16 runs without loss scaling."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)


def precision_facts(mode: str) -> dict[str, str]:
    """The effective numeric precision, for ``params_json``: the autocast mode, and PyTorch's
    TF32 switches (left at their defaults: matmuls in full fp32, cuDNN convolutions may use
    TF32 on Ampere and newer GPUs)."""
    return {
        "precision": "fp32" if amp_dtype(mode) is None else f"{mode} autocast",
        "tf32": (
            f"matmul={'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'},"
            f"cudnn={'on' if torch.backends.cudnn.allow_tf32 else 'off'}"
        ),
    }


def reset_peak_memory(device: torch.device) -> None:
    """Start a run's peak-memory window: the CUDA allocator's peak, and on Linux the process's
    peak RSS too (``clear_refs`` 5), so that a worker process that runs many runs in turn (the
    bench) reports each run's own peak, not the largest so far."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not Linux, or not permitted: the peak covers the whole process
        pass


def _linux_peak_rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return None


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """(peak MB, what was measured): CUDA allocator peak on GPU, process peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    peak = _linux_peak_rss_mb()
    if peak is not None:
        return peak, "process_peak_rss"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss / 2**20 if sys.platform == "darwin" else rss / 2**10), "process_peak_rss"


def prefer_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """Convolutional networks (two or more ``Conv2d``) in channels-last memory format: oneDNN on
    CPUs and cuDNN's tensor-core kernels are faster in NHWC (1.3x training, 1.7x inference for
    the small CNN on one CPU core, ``benchmarks/bench_time.py``). Vision transformers (one patch
    convolution) are left as they are."""
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    return model.to(memory_format=torch.channels_last) if convs >= 2 else model


@contextmanager
def kept_torch_state() -> Iterator[None]:
    """Restore torch's process-wide settings after a run, whatever a plugin set during it: the
    default dtype, grad mode, CPU thread count, deterministic-algorithm flags, float32 matmul
    precision, the TF32 and cuDNN switches and anomaly detection. Processes that run several
    runs in turn (``cladapt sweep``, tests) then give each run the same start."""
    kept = (
        torch.get_default_dtype(),
        torch.is_grad_enabled(),
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.get_float32_matmul_precision(),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.is_anomaly_enabled(),
    )
    try:
        yield
    finally:
        (
            dtype,
            grad,
            threads,
            det,
            warn_only,
            matmul,
            tf32,
            cudnn_tf32,
            cudnn_det,
            bench,
            anomaly,
        ) = kept
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.backends.cudnn.deterministic = cudnn_det
        torch.backends.cudnn.benchmark = bench
        torch.autograd.set_detect_anomaly(anomaly)
