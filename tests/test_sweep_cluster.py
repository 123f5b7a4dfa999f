"""``cladapt sweep --address`` on a real three-node Ray cluster on this machine (a head that runs no
tasks and two one-CPU worker nodes, each in its own working directory): rows reach the driver's
CSV only, a node killed mid-sweep costs no run and duplicates none, and the rows equal a
sequential sweep's."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from cladapt.results import read_results

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

from ray_cluster import ENV, LocalCluster  # noqa: E402

STREAMS, STRATEGIES, SEEDS = ["digits-shift", "digits-c"], ["source", "bn-adapt"], [0, 1]


def _args(out, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cladapt.cli",
        "sweep",
        "--stream",
        ",".join(STREAMS),
        "--strategy",
        ",".join(STRATEGIES),
        "--seeds",
        ",".join(map(str, SEEDS)),
        "--set",
        "batch_size=128",
        "--out",
        str(out),
        *extra,
    ]


def _sweep(out, *extra, cwd):
    return subprocess.run(
        _args(out, *extra),
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
        cwd=cwd,
        timeout=420,
    )


def _finished(df: pd.DataFrame) -> pd.DataFrame:
    return df[df.row_type == "summary"].drop_duplicates("run_id")


def _comparable(df: pd.DataFrame) -> pd.DataFrame:
    """Every recorded value of the finished runs but the measured costs and the thread count each
    process ran with, keyed by run content."""
    ok = set(_finished(df).run_id)
    measured = ["wall_time_s", "images_per_s", "peak_memory_mb", "torch_threads"]
    rows = df[df.run_id.isin(ok) & ~df.metric.isin(measured)]
    keys = ["stream", "strategy", "seed", "row_type", "trained_upto", "eval_experience", "metric"]
    return rows.set_index(keys).value.sort_index()


@pytest.mark.slow
def test_sweep_on_a_three_node_cluster_survives_a_lost_node(tmp_path):
    expected = {(st, s, seed) for st in STREAMS for s in STRATEGIES for seed in SEEDS}
    driver = tmp_path / "driver"
    driver.mkdir()

    # (c) first, sequentially: it also prepares the cached source models the nodes share
    seq = _sweep(driver / "seq.csv", "--backend", "sequential", cwd=driver)
    assert seq.returncode == 0, seq.stderr
    sequential = read_results(driver / "seq.csv")

    with LocalCluster(workers=2) as cluster:
        # (a) every run once, in the driver's CSV only
        r = _sweep(driver / "a.csv", "--address", cluster.address, cwd=driver)
        assert r.returncode == 0, r.stderr + cluster.logs()
        assert "8 runs (ray), 8 done, 0 failed" in r.stdout
        df = read_results(driver / "a.csv")
        done = _finished(df)
        assert len(done) == 8
        assert set(zip(done.stream, done.strategy, done.seed, strict=True)) == expected
        assert set(df.row_type) == {"eval", "summary"}
        for node in cluster.node_dirs:
            assert not list(node.rglob("*.csv")), f"a worker wrote a CSV in {node}"
        assert not list(cluster.root.rglob("*.csv"))
        # (c) the same values as the sequential sweep (source and bn-adapt are deterministic)
        pd.testing.assert_series_equal(_comparable(df), _comparable(sequential), atol=1e-6)

        # (b) a worker node's raylet killed mid-sweep: its run is retried on the other node
        out = driver / "b.csv"
        proc = subprocess.Popen(
            _args(out, "--address", cluster.address),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **ENV},
            cwd=driver,
        )
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None:
                if out.is_file() and (read_results(out).row_type == "eval").any():
                    break
                time.sleep(0.2)
            assert proc.poll() is None, "the sweep ended before a node could be killed"
            cluster.kill_raylet(0)
            stdout, stderr = proc.communicate(timeout=420)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, stderr + cluster.logs()
        assert "retried" in stderr  # the lost node had a run in flight
        df = read_results(out)
        done = _finished(df)
        assert len(done) == 8, "a run finished twice or not at all"
        assert set(zip(done.stream, done.strategy, done.seed, strict=True)) == expected
        # every attempt is either finished or closed with an error row naming why
        errors = df[df.row_type == "error"]
        assert set(df.run_id) == set(done.run_id) | set(errors.run_id)
        assert not set(done.run_id) & set(errors.run_id)
        assert errors.note.str.startswith("incomplete").all() and len(errors) >= 1
        pd.testing.assert_series_equal(_comparable(df), _comparable(sequential), atol=1e-6)

        again = _sweep(out, "--address", cluster.address, cwd=driver)
        assert again.returncode == 0 and "0 runs" in again.stdout and "8 skipped" in again.stdout
        assert len(read_results(out)) == len(df)
