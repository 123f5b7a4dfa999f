"""Third-party plugins for real: the example package through its entry point, the new-plugin
scaffold, the Avalanche bridge, and sweeps (Ray and sequential)."""

import importlib.metadata
import multiprocessing as mp
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cladapt.results import append_rows, read_results

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cladapt-plugin-example"


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _pip_target(src: Path, target: Path) -> None:
    """Install a plugin package into ``target`` (no deps: cladapt is already here)."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def example_installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("example-site")
    _pip_target(EXAMPLE, target)
    return target


def test_example_plugin_is_discovered_through_its_entry_point(example_installed, run_cli, tmp_path):
    env = {"PYTHONPATH": str(example_installed)}
    r = run_cli("list", "strategies", env=env)
    assert r.returncode == 0 and "bn-ema" in r.stdout and "example" in r.stdout
    if not _installed("cladapt-plugin-example"):  # CI's second pass runs with it installed
        assert "bn-ema" not in run_cli("list", "strategies").stdout  # absent without the package
    out = tmp_path / "r.csv"
    for strategy in ("source", "bn-ema"):
        r = run_cli(
            "run",
            "--stream",
            "digits-inverted",
            "--strategy",
            strategy,
            "--out",
            str(out),
            "-q",
            env=env,
        )
        assert r.returncode == 0, r.stderr
    df = read_results(out)
    err = df[(df.row_type == "summary") & (df.metric == "mean_error")].set_index("strategy").value
    assert err["bn-ema"] < err["source"]


def test_new_plugin_scaffold_installs_and_runs(tmp_path, run_cli):
    r = run_cli("new-plugin", "my-method", "--dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    pkg = tmp_path / "cladapt-my-method"
    assert (pkg / "src" / "cladapt_my_method" / "__init__.py").is_file()
    assert "[test]" in r.stdout
    site = tmp_path / "site"
    _pip_target(pkg, site)
    r = run_cli(
        "run",
        "--stream",
        "my-method-digits",
        "--strategy",
        "my-method-finetune",
        "--out",
        str(tmp_path / "r.csv"),
        "-q",
        env={"PYTHONPATH": str(site)},
    )
    assert r.returncode == 0, r.stderr
    assert "avg_accuracy" in r.stdout
    again = run_cli("new-plugin", "my-method", "--dir", str(tmp_path))
    assert again.returncode != 0 and "already exists" in again.stderr
    bad = run_cli("new-plugin", "9lives", "--dir", str(tmp_path))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


def test_avalanche_strategies_are_scored_by_cladapt(catalog, out):
    pytest.importorskip("avalanche", reason="the avalanche extra is not installed")
    from cladapt.runner import RunSpec, execute

    final = {}
    for strategy in ("avl-naive", "avl-lwf", "avl-agem", "avl-replay"):
        spec = RunSpec("digits", strategy, out=out, device="cpu")
        R = execute(spec, catalog).result.tables["accuracy_matrix"]
        assert R.shape == (6, 5)
        assert R[1, 0] > 60, strategy  # it learned task 0 (chance: 10 % over all classes)
        assert R[-1, -1] > 40, strategy  # and the last one (chance: 10 %)
        final[strategy] = R[-1, :-1].mean()
    # Avalanche alone trains (the protocol's loop must not fine-tune again on the current task):
    # replay keeps the old tasks, naive fine-tuning does not
    assert final["avl-replay"] > final["avl-naive"] + 20
    df = read_results(out)
    for strategy in ("avl-naive", "avl-lwf", "avl-agem", "avl-replay"):
        metrics = set(df[df.strategy == strategy].metric)
        # Avalanche's loop is not instrumented: its training FLOPs are not measured, never 0
        assert "avg_accuracy" in metrics and "train_flops" not in metrics


def test_avalanche_missing_is_a_one_line_error(run_cli, tmp_path):
    # a sitecustomize that hides avalanche, as on an install without the extra
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\nclass _Block:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'avalanche':\n"
        "            raise ImportError('No module named avalanche')\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    r = run_cli(
        "run",
        "--stream",
        "digits",
        "--strategy",
        "avl-ewc",
        "--out",
        str(tmp_path / "r.csv"),
        env={"PYTHONPATH": str(hide)},
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "cladapt[avalanche]" in r.stderr
    # refused before the run starts, like any other input it cannot start without: no row
    assert not (tmp_path / "r.csv").exists()


def _writer(path: str, worker: int, n: int) -> None:
    for i in range(n):
        append_rows(
            path,
            [
                {
                    "run_id": f"w{worker}",
                    "row_type": "eval",
                    "metric": "m",
                    "value": float(i),
                    "note": "x" * 200,
                }
                for _ in range(5)
            ],
        )


def test_concurrent_writers_lose_no_row(tmp_path):
    path = str(tmp_path / "r.csv")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    df = read_results(path)
    assert len(df) == 4 * 40 * 5
    assert df.groupby("run_id").size().to_dict() == {f"w{w}": 200 for w in range(4)}
    assert (df.note.str.len() == 200).all()  # no torn rows


def _sweep(run_cli, out, *extra):
    return run_cli(
        "sweep",
        "--stream",
        "digits-shift",
        "--strategy",
        "source,bn-adapt",
        "--seeds",
        "0,1",
        "--set",
        "batch_size=128",
        "--out",
        str(out),
        *extra,
    )


def test_sweep_on_two_ray_workers_runs_each_run_once_and_skips_on_rerun(run_cli, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    out = tmp_path / "r.csv"
    r = _sweep(run_cli, out, "--backend", "ray", "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "4 runs (ray), 4 done, 0 failed, 0 skipped" in r.stdout
    df = read_results(out)
    summaries = df[(df.row_type == "summary") & (df.metric == "mean_error")]
    assert len(summaries) == 4
    assert sorted(zip(summaries.strategy, summaries.seed, strict=True)) == [
        ("bn-adapt", 0),
        ("bn-adapt", 1),
        ("source", 0),
        ("source", 1),
    ]
    assert (df[df.row_type == "eval"].groupby("run_id").size() == 5).all()  # 5 domains each
    rows = len(df)
    again = _sweep(run_cli, out, "--backend", "ray", "--workers", "2")
    assert again.returncode == 0 and "0 runs" in again.stdout and "4 skipped" in again.stdout
    assert len(read_results(out)) == rows
    # a different swept value is a different run key
    other = run_cli(
        "sweep",
        "--stream",
        "digits-shift",
        "--strategy",
        "source",
        "--seeds",
        "1",
        "--set",
        "batch_size=64",
        "--out",
        str(out),
        "--backend",
        "sequential",
    )
    assert "1 runs (sequential), 1 done" in other.stdout


def test_sequential_sweep_records_failures_and_goes_on(run_cli, tmp_path):
    out = tmp_path / "r.csv"
    r = run_cli(
        "sweep",
        "--stream",
        "digits-shift,cifar10-c",  # cifar10-c fails at run time: no --data-root
        "--strategy",
        "source",
        "--seeds",
        "1",
        "--out",
        str(out),
        "--backend",
        "sequential",
    )
    assert r.returncode == 1 and "1 failed" in r.stdout and "Traceback" not in r.stderr
    assert "1 done" in r.stdout and "--data-root" in r.stderr
    r2 = run_cli("sweep", "--stream", "digits-shift", "--strategy", "nope", "--out", str(out))
    assert r2.returncode != 0 and "unknown strategy" in r2.stderr
    r3 = run_cli(
        "sweep",
        "--stream",
        "digits-shift",
        "--strategy",
        "source,tent",
        "--set",
        "lr=0.1",
        "--out",
        str(out),
    )  # a parameter the grid's strategies do not all have: refused before anything runs
    assert r3.returncode == 2 and "unknown parameter 'lr'" in r3.stderr and "source" in r3.stderr


def test_sweep_on_ray_with_a_data_root_missing_on_the_workers_records_one_error_row(
    run_cli, tmp_path
):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    out = tmp_path / "r.csv"
    r = run_cli(
        "sweep",
        "--stream",
        "digits-shift",
        "--strategy",
        "source",
        "--data-root",
        str(tmp_path / "not-here"),
        "--out",
        str(out),
        "--backend",
        "ray",
        "--workers",
        "1",
    )
    assert r.returncode == 1 and "1 failed" in r.stdout, r.stderr
    assert "Traceback" not in r.stderr and "does not exist on node" in r.stderr
    df = read_results(out)
    assert list(df.row_type) == ["error"]
    assert df.note[0].startswith(f"--data-root {tmp_path / 'not-here'} does not exist on node")
    assert (df.stream[0], df.strategy[0], df.protocol[0]) == ("digits-shift", "source", "test_time")


def test_ctrl_c_on_a_ray_sweep_driver_closes_every_run_in_flight_with_an_error_row(tmp_path):
    """The driver owns the CSV: after Ctrl-C it cancels the tasks and writes an ``interrupted``
    row for each started run, under the rows that run had already sent."""
    pytest.importorskip("ray", reason="the ray extra is not installed")
    out = tmp_path / "r.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cladapt.cli", "sweep", "--stream", "digits-shift"]
        + ["--strategy", "cotta,vida", "--seeds", "0,1", "--backend", "ray", "--workers", "2"]
        + ["--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and read_results(out).run_id.nunique() >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep should still be running"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    df = read_results(out)
    finished = set(df.loc[df.row_type == "summary", "run_id"])
    errors = df[df.row_type == "error"]
    assert len(errors) >= 2 and errors.note.str.startswith("interrupted").all()
    assert set(df.run_id) == finished | set(errors.run_id)  # no run left open
    assert errors.run_id.is_unique


def test_avalanche_si_snapshots_are_copies_so_importances_grow_on_a_cpu():
    """Avalanche 0.6's SI snapshots weights with ``.cpu().flatten()``: a view of the live
    parameter on a CPU, so the trajectory and the importances stay 0 and SI is fine-tuning. The
    bridge's patch makes them copies: one SGD step gives a non-zero trajectory and importance."""
    pytest.importorskip("avalanche", reason="the avalanche extra is not installed")
    import torch
    from avalanche.training.plugins.synaptic_intelligence import (
        SynapticIntelligencePlugin as SI,
    )
    from cladapt.plugins.avalanche_bridge import _import_avalanche

    _import_avalanche()  # applies the patch
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    ewc_data, syn_data = (
        (dict(), dict()),
        {k: dict() for k in ("old_theta", "new_theta", "grad", "trajectory", "cum_trajectory")},
    )
    SI.create_syn_data(model, ewc_data, syn_data, set())
    SI.init_batch(model, ewc_data, syn_data, set())
    start = model.weight.detach().clone().flatten()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        SI.pre_update(model, syn_data, set())
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.arange(8) % 3).backward()
        opt.step()
        SI.post_update(model, syn_data, set())
    assert torch.equal(ewc_data[0]["weight"].data, start)  # the snapshot did not move
    assert (syn_data["trajectory"]["weight"].data < 0).any()  # grad . delta < 0 for SGD
    SI.update_ewc_data(model, ewc_data, syn_data, 0.001, set(), 1)
    assert ewc_data[1]["weight"].data.max() > 0
    penalty = SI.compute_ewc_loss(model, ewc_data, set(), "cpu", lambd=1.0)
    with torch.no_grad():
        model.weight.add_(1.0)
    assert SI.compute_ewc_loss(model, ewc_data, set(), "cpu", lambd=1.0) > penalty


def test_sweep_asking_for_more_than_any_node_has_is_refused_not_left_waiting(run_cli, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    r = run_cli(
        "sweep",
        "--stream",
        "digits-shift",
        "--strategy",
        "source",
        "--gpus-per-run",
        "1000",  # no node has that many: the task could never be scheduled
        "--out",
        str(tmp_path / "r.csv"),
        "--backend",
        "ray",
        "--workers",
        "1",
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "1000 GPUs" in r.stderr and "--gpus-per-run" in r.stderr
    assert not (tmp_path / "r.csv").exists()
