"""The worker rule: CPU cores, and GPUs filled with as many runs as their memory holds."""

from __future__ import annotations

import pytest

from cladapt import workers
from cladapt.workers import Machine, default_workers, runs_per_gpu


def test_a_cpu_machine_runs_one_worker_per_core():
    assert default_workers("auto", Machine(cores=2)) == 2
    assert default_workers("cpu", Machine(cores=16, gpu_free_mb=(140_000.0,))) == 16


def test_an_h200_is_filled_up_to_the_cores():
    """141 GB and runs that peak at 0.5 GB: memory would hold ~110 runs, 16 cores cap it."""
    h200 = Machine(cores=16, gpu_free_mb=(140_000.0,))
    assert default_workers("auto", h200, run_peak_mb=520) == 16
    assert default_workers("cuda", h200, run_peak_mb=520) == 16


def test_gpu_memory_caps_the_workers_with_a_margin():
    small = Machine(cores=32, gpu_free_mb=(8_000.0,))
    # (2 GB peak + 0.6 GB context) x 1.5 = 3.9 GB a run: two fit in 8 GB
    assert default_workers("cuda", small, run_peak_mb=2000) == 2
    assert runs_per_gpu(8_000, 2000) == 2
    # a run larger than the GPU still gets one worker (it fails or fits on its own)
    assert default_workers("cuda", small, run_peak_mb=50_000) == 1


def test_several_gpus_add_up_and_cuda_n_uses_one():
    two = Machine(cores=64, gpu_free_mb=(8_000.0, 16_000.0))
    assert default_workers("auto", two, run_peak_mb=2000) == 6
    assert default_workers("cuda:0", two, run_peak_mb=2000) == 2
    assert default_workers("cuda:1", two, run_peak_mb=2000) == 4


def test_without_a_measured_peak_the_default_estimate_is_used():
    gpu = Machine(cores=64, gpu_free_mb=(24_000.0,))
    expected = runs_per_gpu(24_000, workers.DEFAULT_RUN_PEAK_MB)
    assert default_workers("cuda", gpu) == expected > 1


def test_mps_gets_one_worker():
    assert default_workers("auto", Machine(cores=10, mps=True)) == 1


@pytest.mark.parametrize(
    ("text", "cores"), [("max 100000", None), ("150000 100000", 1), ("400000 100000", 4)]
)
def test_a_cgroup_cpu_quota_caps_the_cores(tmp_path, text, cores):
    path = tmp_path / "cpu.max"
    path.write_text(text + "\n")
    assert workers._cgroup_quota(path) == cores


def test_the_peak_is_read_from_earlier_cuda_runs(tmp_path):
    from cladapt.results import append_rows

    out = tmp_path / "r.csv"
    base = {
        "run_id": "r1",
        "started_at": "2026-01-01T00:00:00+00:00",
        "cladapt_version": "0",
        "stream": "s",
        "protocol": "test_time",
        "setting": "continual",
        "strategy": "tent",
        "params_json": "{}",
        "model": "m",
        "seed": 0,
        "device": "cuda",
        "row_type": "summary",
        "trained_upto": "",
        "eval_experience": "",
        "metric": "peak_memory_mb",
    }
    append_rows(
        out,
        [
            base | {"value": 300.0, "note": "cuda_max_allocated"},
            base | {"run_id": "r2", "value": 900.0, "note": "cuda_max_allocated"},
            base | {"run_id": "r3", "value": 5000.0, "note": "process_peak_rss"},
        ],
    )
    assert workers.measured_gpu_peak_mb(out) == 900.0
    assert workers.measured_gpu_peak_mb(tmp_path / "none.csv") is None


def test_a_cpu_bench_worker_gets_one_thread_whatever_the_cores(monkeypatch):
    import cladapt.bench as bench

    monkeypatch.setattr(bench, "cpu_count", lambda: 16)
    assert [bench.worker_threads("cpu", w) for w in (1, 2, 16)] == [1, 1, 1]
