"""The harness under a misuse attack: hostile plugins (``attack_plugins.py``), broken files and
paths. Each test names the guarantee it holds; docs/metrics.md lists them in its promise tables.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cladapt.cli import main
from cladapt.errors import CladaptError, ConfigError, DataError, DivergenceError
from cladapt.leaderboard.aggregate import aggregate, load
from cladapt.manager import load_catalog
from cladapt.results import append_rows, read_results
from cladapt.runner import RunSpec, execute

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": str(TESTS)}


@pytest.fixture(scope="module")
def attack():
    return load_catalog(["attack_plugins"])


def _run(catalog, strategy, out=None, stream="digits-shift", sets=None, **kw):
    return execute(RunSpec(stream, strategy, sets or {}, out=out, device="cpu", **kw), catalog)


def _cli(tmp_path, *args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "cladapt.cli", *args],
        capture_output=True,
        text=True,
        env={**ENV, **(env or {})},
        cwd=tmp_path,
        timeout=timeout,
    )


# ------------------------------------------------------------------- one run cannot change another


@pytest.mark.parametrize("hostile", ["atk-dtype", "atk-gradoff", "atk-threads"])
def test_a_plugins_global_torch_state_ends_with_its_run(attack, hostile, out):
    threads = torch.get_num_threads()
    _run(attack, hostile, out)
    assert torch.get_default_dtype() == torch.float32
    assert torch.is_grad_enabled() and torch.get_num_threads() == threads
    outcome = _run(attack, "tent", out)  # the next, innocent run is unharmed
    assert outcome.summary["torch_threads"] == threads


def test_a_bench_runs_each_job_in_its_own_process(tmp_path):
    """A plugin that switches the default dtype to float64 in one run: the next built-in run of
    the same bench worker neither fails nor changes."""
    res = _cli(
        tmp_path,
        *("bench", "--stream", "digits-shift", "--strategy", "atk-dtype,tent"),
        *("--seeds", "1", "--workers", "1", "--plugin", "attack_plugins"),
        *("--out", "b.csv", "--site", "site"),
    )
    assert res.returncode == 0, res.stderr
    df = read_results(tmp_path / "b.csv")
    assert set(df[df.row_type == "summary"].strategy) == {"atk-dtype", "tent"}
    assert "error" not in set(df.row_type)


def test_the_workers_of_a_killed_bench_stop_and_write_no_more(tmp_path):
    out = tmp_path / "k.csv"
    bench = subprocess.Popen(
        [sys.executable, "-m", "cladapt.cli", "bench", "--stream", "digits-shift"]
        + ["--strategy", "source,bn-adapt,tent,eata,sar,lame", "--seeds", "2", "--workers", "2"]
        + ["--out", str(out), "--site", str(tmp_path / "s")],
        env=ENV,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # until the first run has finished
        if out.exists() and "summary" in out.read_text():
            break
        time.sleep(0.2)
    bench.send_signal(signal.SIGKILL)
    bench.wait()
    time.sleep(4)  # the workers notice within a second, then write their error rows
    size = out.stat().st_size
    time.sleep(6)
    assert out.stat().st_size == size  # nothing more is appended
    df = read_results(out)
    finished = df[df.row_type == "summary"].run_id.nunique()
    assert finished < 12  # the rest of the suite was never run unattended
    stopped = df[df.row_type == "error"].note
    assert all("SIGTERM" in n for n in stopped)


def test_a_second_bench_on_the_same_results_file_is_refused(tmp_path):
    from cladapt.bench import bench_lock

    out = tmp_path / "r.csv"
    with bench_lock(out):
        res = CliRunner().invoke(
            main,
            ["bench", "--stream", "digits-shift", "--strategy", "source", "--seeds", "1"]
            + ["--out", str(out), "--site", str(tmp_path / "s")],
        )
    assert res.exit_code == 2
    assert "another cladapt bench is writing to" in res.output
    assert not out.exists()


def test_a_bench_summarises_only_the_runs_it_made(tmp_path, monkeypatch):
    """Rows another process appends to the bench's file meanwhile are neither in its
    leaderboard nor in its site."""
    from test_leaderboard import summary_rows

    from cladapt import bench

    real = bench.run_jobs

    def with_an_intruder(jobs, *, out, **kw):
        append_rows(out, summary_rows("intruder", "lame", 0, {"mean_error": 1.0}))
        return real(jobs, out=out, **kw)

    monkeypatch.setattr(bench, "run_jobs", with_an_intruder)
    site = tmp_path / "site"
    res = CliRunner().invoke(
        main,
        ["bench", "--stream", "digits-shift", "--strategy", "source", "--seeds", "1"]
        + ["--workers", "1", "--out", str(tmp_path / "r.csv"), "--site", str(site)],
    )
    assert res.exit_code == 0, res.output
    published = read_results(site / "results.csv")
    assert "intruder" not in set(published.run_id)
    assert "intruder" in set(read_results(tmp_path / "r.csv").run_id)  # kept, not summarised


# ------------------------------------------------------------------- a run is scored as planned


def test_a_misspelt_hook_refuses_the_run(attack, out):
    with pytest.raises(ConfigError, match="cladapt_adpat.*did you mean cladapt_adapt"):
        _run(attack, "atk-typo", out)
    assert not out.exists()  # refused at planning, before any row


def test_a_strategy_cannot_drop_domains_and_be_scored(attack, out):
    with pytest.raises(CladaptError, match="changed the stream's experiences"):
        _run(attack, "atk-dropdomains", out)
    assert "summary" not in set(read_results(out).row_type)


def test_a_plugin_cannot_fabricate_a_ranking_metric(attack, out):
    with pytest.raises(CladaptError, match="returned 'avg'"):
        _run(attack, "atk-describe-mtil", out, stream="digits", sets={"epochs": "1"})
    assert "summary" not in set(read_results(out).row_type)


@pytest.mark.parametrize("key", ["seed", "run_id", "stream"])
def test_a_described_metric_named_like_a_column_is_refused(attack, out, key, monkeypatch):
    monkeypatch.setenv("ATK_KEY", key)
    with pytest.raises(CladaptError, match=f"returned '{key}'"):
        _run(attack, "atk-describe-seed", out)
    aggregate(load([out]))  # the file stays readable


def test_parameters_are_read_only_during_a_run(attack, out):
    with pytest.raises(CladaptError, match="changed run.params.batch_size from 64 to 1"):
        _run(attack, "atk-mutate-params", out)
    assert "summary" not in set(read_results(out).row_type)


@pytest.mark.parametrize(
    "strategy, env",
    [("atk-rmsprop", {"ATK_LR": "10"}), ("atk-lr-after", {"ATK_LR": "5"})],
)
def test_every_optimizer_and_each_experience_has_its_rate_checked(
    attack, out, strategy, env, monkeypatch
):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match="outside the sane range"):
        _run(attack, strategy, out)


def test_a_near_constant_prediction_is_a_collapse(attack, out):
    with pytest.raises(DivergenceError, match="collapsed on .*effective classes"):
        _run(attack, "atk-twoclass", out)
    assert "summary" not in set(read_results(out).row_type)


def test_cotta_at_a_rate_that_collapses_it_is_not_scored(catalog, out):
    with pytest.raises(DivergenceError, match="collapsed"):
        _run(catalog, "cotta", out, sets={"lr": "1"})


def test_a_source_model_that_maps_a_domain_to_one_class_is_no_collapse(catalog):
    """RoTTA on digits-c's contrast keeps the source model's own concentration (the source
    model puts 91 % of that domain in one class): a result, not a divergence."""
    from cladapt.protocols.base import check_collapse

    class Run:
        optimizer = object()

    labels = torch.full((10,), 54)
    predicted = torch.tensor([0, 0, 356, 0, 60, 0, 0, 124, 0, 0])
    source = torch.tensor([0, 0, 492, 0, 20, 0, 0, 28, 0, 0])
    check_collapse(
        Run(), predicted, labels, "contrast", correct=65, source_predicted=lambda: source
    )
    with pytest.raises(DivergenceError):  # the same predictions from a source that spread
        check_collapse(Run(), predicted, labels, "contrast", 65, lambda: torch.full((10,), 54))


def test_base_exceptions_from_plugins_are_error_rows_and_one_line(tmp_path):
    for strategy, name in (("atk-baseexc", "CancelledError"), ("atk-genexit", "GeneratorExit")):
        res = _cli(
            tmp_path,
            *("run", "-s", "digits-shift", "-a", strategy, "--plugin", "attack_plugins"),
            *("-q", "--out", "r.csv"),
        )
        assert res.returncode == 2, res.stderr
        assert "Traceback" not in res.stderr and name in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
        df = read_results(tmp_path / "r.csv")
        assert df.row_type.iloc[-1] == "error" and name in df.note.iloc[-1]


def test_a_test_time_plugin_that_reads_labels_is_told_why_they_are_none(tmp_path, catalog):
    plugged = load_catalog(["attack_plugins"])
    spec = RunSpec("digits-shift", "atk-reads-labels", {}, out=tmp_path / "r.csv", device="cpu")
    with pytest.raises(CladaptError, match="batch.y is None, labels are never shown"):
        execute(spec, plugged)
    assert read_results(tmp_path / "r.csv").row_type.iloc[-1] == "error"


def test_the_harness_own_worker_threads_are_not_blamed_on_a_plugin(tmp_path):
    """The CPU corruptions sample Poisson noise in a pool of worker threads: they are the
    harness's, closed before the exit check, so a plain command warns about no thread."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from cladapt.data import corruptions\n"
        "corruptions.shot_noise(torch.rand(4, 3, 128, 128), 60.0, torch.Generator())\n"
        "assert corruptions._threads.cache_info().currsize == 1\n"
        "from cladapt.cli import entry\n"
        "sys.argv = ['cladapt', 'list', 'models']\n"
        "entry()\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "small-cnn" in res.stdout and "left running" not in res.stderr


def test_a_plugins_thread_neither_hangs_the_command_nor_hides_its_error(tmp_path):
    start = time.monotonic()
    res = _cli(
        tmp_path,
        *("run", "-s", "digits-shift", "-a", "atk-thread", "--plugin", "attack_plugins"),
        *("-q", "--out", "r.csv"),
        timeout=120,
    )
    assert res.returncode == 0 and time.monotonic() - start < 100
    assert "thread(s) left running by a plugin (atk-sleeper)" in res.stderr
    res = _cli(
        tmp_path,
        *("run", "-s", "digits-shift", "-a", "atk-thread-raise", "--plugin", "attack_plugins"),
        *("-q", "--out", "t.csv"),
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "a plugin's thread 'atk-worker': RuntimeError" in res.stderr
    assert "summary" not in set(read_results(tmp_path / "t.csv").row_type)


def test_a_config_too_long_for_a_csv_cell_is_refused_before_the_run(attack, out):
    with pytest.raises(CladaptError, match="params_json would be .* characters"):
        _run(attack, "atk-bigconfig", out)
    assert not out.exists()


# ------------------------------------------------------------------- identity


def test_a_run_at_another_thread_count_is_another_configuration(catalog, tmp_path):
    out = tmp_path / "r.csv"
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            _run(catalog, "bn-adapt", out)
    finally:
        torch.set_num_threads(before)
    strategies = set(aggregate(load([out])).strategy)
    assert strategies == {"bn-adapt", "bn-adapt [threads=2]"}


def test_runs_from_other_source_weights_never_replace_each_other(tmp_path):
    from test_leaderboard import summary_rows

    rows = []
    for run, digest in (("a", "6f7d1b1e00000000"), ("b", "17fb926c00000000")):
        part = summary_rows(
            run, "source", 0, {"mean_error": 10.0}, started=f"2026-01-0{1 + (run == 'b')}"
        )
        for r in part:
            r["params_json"] = json.dumps({"source_model": digest})
        rows += part
    append_rows(tmp_path / "r.csv", rows)
    models = set(aggregate(load([tmp_path / "r.csv"])).model)
    assert models == {"m (weights 6f7d1b1e)", "m (weights 17fb926c)"}


def test_two_releases_of_a_plugin_never_merge_into_one_row(tmp_path):
    from test_leaderboard import summary_rows

    rows = []
    for run, version in (("a", "0.1.0"), ("b", "0.2.0")):
        part = summary_rows(run, "my-tent", 0, {"mean_error": 10.0})
        for r in part:
            r["params_json"] = json.dumps(
                {"plugin": {"plugin": "my_tta", "package": "my-tta", "version": version}}
            )
        rows += part
    append_rows(tmp_path / "r.csv", rows)
    strategies = set(aggregate(load([tmp_path / "r.csv"])).strategy)
    assert strategies == {"my-tent (my-tta 0.1.0)", "my-tent (my-tta 0.2.0)"}


def test_a_plugin_modules_rows_record_its_release(tmp_path, catalog):
    """A strategy from a module passed with --plugin (no installed distribution) records the
    module and its file's SHA-256; the built-ins record nothing (cladapt_version says)."""
    import hashlib

    from cladapt.manager import load_catalog, plugin_release

    load_catalog(["attack_plugins"])
    release = plugin_release("attack_plugins")
    source = (Path(__file__).parent / "attack_plugins.py").read_bytes()
    assert release["version"] == "sha256:" + hashlib.sha256(source).hexdigest()[:12]
    assert plugin_release("cladapt.plugins.tta") == {}


def test_a_cache_file_replaced_by_another_artefact_is_rebuilt(tmp_path):
    from cladapt.models.checkpoints import load_cached, save_checkpoint
    from cladapt.models.small_cnn import SmallCNN

    model = SmallCNN(10)
    a, b = tmp_path / "models" / "a.pt", tmp_path / "models" / "b.pt"
    save_checkpoint(a, model.state_dict(), {})
    save_checkpoint(b, SmallCNN(10).state_dict(), {})
    b.write_bytes(a.read_bytes())  # another artefact copied over b
    os.environ["CLADAPT_CACHE"], old = str(tmp_path), os.environ["CLADAPT_CACHE"]
    try:
        with pytest.warns(UserWarning, match="holds a.pt, not b.pt"):
            assert not load_cached(SmallCNN(10), b)
    finally:
        os.environ["CLADAPT_CACHE"] = old
    assert not b.exists()


def test_a_duplicated_grid_entry_runs_once(tmp_path):
    res = CliRunner().invoke(
        main,
        ["sweep", "--backend", "sequential", "--stream", "digits-shift,digits-shift"]
        + ["--strategy", "source,source", "--seeds", "0,", "--out", str(tmp_path / "d.csv")],
    )
    assert res.exit_code == 0, res.output
    assert "1 runs (sequential), 1 done" in res.output
    assert read_results(tmp_path / "d.csv").run_id.nunique() == 1


# ------------------------------------------------------------------- names, numbers, files


@pytest.mark.parametrize(
    "name",
    [
        "source\U0001d173",  # musical format character
        "source\U0001bca0",  # shorthand format control
        "\u3164source",  # Hangul filler
        "source\u2800",  # blank Braille pattern
        "source\ufe0f",  # variation selector
        "source\u034f",  # combining grapheme joiner
        "sourc\u0065\u0301",  # NFD accent
        "sour\u0441e",  # Cyrillic es
        "source\u2028",  # line separator
        "_private",
        "-finetune",
    ],
)
def test_look_alike_and_option_like_names_are_refused(name):
    from cladapt.plugins.baselines import Source

    from cladapt.registry import StrategyRegistry

    with pytest.raises(CladaptError, match="refused"):
        StrategyRegistry().add(Source, name=name)


def test_names_that_read_alike_in_a_csv_are_one_entry(tmp_path):
    from test_leaderboard import summary_rows

    rows = summary_rows("a", "source", 0, {"mean_error": 1.0})
    rows += summary_rows("b", "source\u200b", 1, {"mean_error": 3.0})
    append_rows(tmp_path / "r.csv", rows)
    table = aggregate(load([tmp_path / "r.csv"]))
    assert list(table.strategy) == ["source"] and table.seeds.item() == 2


@pytest.mark.parametrize(
    "value, match",
    [
        ("1e-400", "too small for a float"),
        ("1_0", "without underscores"),
    ],
)
def test_numbers_in_set_are_read_strictly(value, match):
    from cladapt.config import coerce

    with pytest.raises(ConfigError, match=match):
        coerce(value, float, "lr")


def test_a_nested_list_in_set_is_refused_as_such():
    from cladapt.config import coerce

    with pytest.raises(ConfigError, match="one flat list of numbers"):
        coerce("[0.1,[0.2]]", tuple[float, ...], "lr_grid")


def test_hostile_csv_cells_never_crash_a_reader(tmp_path):
    from test_leaderboard import summary_rows

    from cladapt.leaderboard.provenance import describe

    rows = summary_rows("a", "source", 0, {"mean_error": 1.0, "torch_threads": float("nan")})
    deep = summary_rows("b", "tent", 0, {"mean_error": 2.0, "torch_threads": 1e300})
    for r in deep:
        r["params_json"] = "[" * 50_000
    append_rows(tmp_path / "r.csv", rows + deep)
    df = load([tmp_path / "r.csv"])
    aggregate(df)
    made = describe(df, load_catalog(entry_points=False))
    assert "invalid" in made["threads"]


def test_an_interrupted_runs_rows_alone_never_crash_the_leaderboard(tmp_path):
    from test_leaderboard import eval_row

    rows = [eval_row("r", "tent", 0, "gaussian_noise", 10.0, stream="digits-c")]
    rows.append({**rows[0], "row_type": "error", "metric": "run_failed", "value": float("nan")})
    append_rows(tmp_path / "r.csv", rows)
    res = CliRunner().invoke(main, ["leaderboard", "--results", str(tmp_path / "r.csv")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        main,
        ["leaderboard", "build", "--results", str(tmp_path / "r.csv")]
        + ["--site", str(tmp_path / "site")],
    )
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("where", ["root", "home"])
def test_the_root_and_home_folders_are_never_a_site(tmp_path, where, monkeypatch):
    from cladapt.leaderboard.site import check_site

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(DataError, match=f"is the {where} folder"):
        check_site(Path("/") if where == "root" else Path("~"))
    assert not list(home.iterdir())


def test_site_pages_are_never_written_through_a_symlink_out_of_the_site(tmp_path):
    from test_leaderboard import summary_rows

    from cladapt.leaderboard.site import build_site

    append_rows(tmp_path / "r.csv", summary_rows("a", "source", 0, {"mean_error": 1.0}))
    site = tmp_path / "site"
    build_site(load([tmp_path / "r.csv"]), site)
    victim = tmp_path / "victim"
    victim.mkdir()
    for page in (site / "streams").iterdir():
        page.unlink()
    (site / "streams").rmdir()
    (site / "streams").symlink_to(victim)
    with pytest.raises(DataError, match="through a symlink out of the site"):
        build_site(load([tmp_path / "r.csv"]), site)
    assert not list(victim.iterdir())


def test_a_published_csv_that_received_runs_is_kept(tmp_path):
    from test_leaderboard import summary_rows

    from cladapt.leaderboard.site import build_site

    append_rows(tmp_path / "main.csv", summary_rows("a", "source", 0, {"mean_error": 1.0}))
    site = tmp_path / "site"
    build_site(load([tmp_path / "main.csv"]), site)
    append_rows(site / "results.csv", summary_rows("t", "tent", 0, {"mean_error": 2.0}))
    with pytest.warns(UserWarning, match="changed since the last build wrote it"):
        build_site(load([tmp_path / "main.csv"]), site)
    (backup,) = site.glob("results.csv.*.bak")
    assert "t" in set(read_results(backup).run_id)


def test_a_site_build_that_cannot_write_changes_nothing(tmp_path, monkeypatch):
    """A folder of the site that cannot be written (a chmod 555 the build cannot override) is
    found before the commit: nothing in the site changes (the check is os.access, made to say
    no here so that the test holds when it runs as root)."""
    from test_leaderboard import summary_rows

    from cladapt.leaderboard import site as site_module
    from cladapt.leaderboard.site import build_site

    append_rows(tmp_path / "r.csv", summary_rows("a", "source", 0, {"mean_error": 1.0}))
    site = tmp_path / "site"
    build_site(load([tmp_path / "r.csv"]), site)
    before = {p: p.read_bytes() for p in site.rglob("*") if p.is_file()}
    append_rows(tmp_path / "r.csv", summary_rows("b", "tent", 0, {"mean_error": 2.0}, stream="t"))
    real = os.access
    streams = site / "streams"
    monkeypatch.setattr(
        site_module.os, "access", lambda p, m: False if Path(p) == streams else real(p, m)
    )
    with pytest.raises(DataError, match="permission denied"):
        build_site(load([tmp_path / "r.csv"]), site)
    after = {p: p.read_bytes() for p in site.rglob("*") if p.is_file()}
    assert after == before


def test_a_refused_build_leaves_the_folder_as_it_was(tmp_path):
    from test_leaderboard import summary_rows

    from cladapt.leaderboard.site import build_site

    append_rows(tmp_path / "r.csv", summary_rows("a", "source", 0, {"mean_error": 1.0}))
    docs = tmp_path / "mydocs"
    docs.mkdir()
    (docs / "notes.md").write_text("mine")
    with pytest.raises(DataError, match="holds files no cladapt build wrote"):
        build_site(load([tmp_path / "r.csv"]), docs)
    assert [p.name for p in docs.iterdir()] == ["notes.md"]


def test_bench_checks_out_and_site_before_any_run(tmp_path):
    (tmp_path / "same").mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "index.html").write_text("mine")
    for out, site, match in (
        ("r.csv", "mine", "holds files no cladapt build wrote"),
        ("x.csv", "x.csv", "is the results file"),
    ):
        start = time.monotonic()
        res = CliRunner().invoke(
            main,
            ["bench", "--stream", "digits-shift", "--strategy", "source", "--seeds", "1"]
            + ["--out", str(tmp_path / out), "--site", str(tmp_path / site)],
        )
        assert res.exit_code == 2 and match in res.output, res.output
        assert time.monotonic() - start < 20 and not (tmp_path / out).exists()


def test_interrupting_a_leaderboard_says_only_interrupted(tmp_path, monkeypatch):
    from cladapt.leaderboard import aggregate as agg

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(agg, "load", interrupted)
    (tmp_path / "r.csv").write_text("")
    res = CliRunner().invoke(main, ["leaderboard", "--results", str(tmp_path / "r.csv")])
    assert res.exit_code == 130 and res.output.strip() == "error: interrupted"


# ------------------------------------------------------------------- checkpoints


def test_checkpoint_faults_are_named_for_what_they_are(tmp_path, catalog):
    fifo = tmp_path / "ckpt.fifo"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        _run(catalog, "source", checkpoint=str(fifo))
    sparse = tmp_path / "big.bin"
    with open(sparse, "wb") as f:
        f.truncate(3 * 2**30)  # 3 GB of zeros, no disk used
    start = time.monotonic()
    with pytest.raises(DataError, match="not a PyTorch checkpoint"):
        _run(catalog, "source", checkpoint=str(sparse))
    assert time.monotonic() - start < 10  # refused before anything hashes it
    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), module)
    with pytest.raises(DataError, match="holds pickled Python objects") as info:
        from cladapt.models.checkpoints import load_checkpoint

        load_checkpoint(module)
    assert "\x1b" not in str(info.value) and "weights_only" not in str(info.value)


def test_nan_weights_in_a_model_that_does_not_train_blame_the_weights(tmp_path, catalog):
    from cladapt.models.checkpoints import save_checkpoint
    from cladapt.models.small_cnn import SmallCNN

    model = SmallCNN(10)
    state = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
        for k, v in model.state_dict().items()
    }
    save_checkpoint(tmp_path / "nan.pt", state, {})
    with pytest.raises(DivergenceError, match="check the model's weights"):
        _run(catalog, "source", checkpoint=str(tmp_path / "nan.pt"))


def test_a_read_only_cache_makes_the_data_in_memory(tmp_path, monkeypatch):
    """Neither the lock file nor the data can be written (a read-only mount, simulated so that
    the test holds when it runs as root): the data is made in memory, the run goes on."""
    import errno

    import filelock

    from cladapt.cache import cached_tensors

    def read_only(*_a, **_k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setenv("CLADAPT_CACHE", str(tmp_path))
    monkeypatch.setattr(filelock.FileLock, "acquire", read_only)
    monkeypatch.setattr("cladapt.cache.atomic_save", read_only)
    (x,) = cached_tensors("t", {"a": 1}, lambda: (torch.ones(3),))
    assert x.sum() == 3


def test_a_folder_in_place_of_a_cache_file_is_refused_before_training(tmp_path, monkeypatch):
    from cladapt.cache import cached_tensors

    monkeypatch.setenv("CLADAPT_CACHE", str(tmp_path))
    built = []
    from cladapt.cache import fingerprint

    (tmp_path / "data" / f"t-{fingerprint(a=1)}.pt").mkdir(parents=True)
    with pytest.raises(DataError, match="is not a file"):
        cached_tensors("t", {"a": 1}, lambda: built.append(1) or (torch.ones(3),))
    assert not built


# ------------------------------------------------------------------- plugins at import


def _entry_point(root: Path, name: str, source: str) -> Path:
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / f"{name}.py").write_text(textwrap.dedent(source))
    info = pkg / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[cladapt]\n{name} = {name}\n")
    return pkg


@pytest.mark.parametrize(
    "name, source, why",
    [
        (
            "atk_ep_argparse",
            "import argparse\np = argparse.ArgumentParser()\np.add_argument('--lr')\n"
            "p.parse_args()\nimport sys; sys.exit(3)\n",
            "called sys.exit(3)",
        ),
        ("atk_ep_exit0", "import sys\nsys.exit(0)\n", "called sys.exit(0)"),
        ("atk_ep_kbd", "raise KeyboardInterrupt\n", "interrupted"),
        (
            "atk_ep_regraise",
            "from cladapt.hookspecs import hookimpl\n@hookimpl\n"
            "def cladapt_register_strategies(registry):\n    raise KeyError('strategy')\n",
            "cladapt_register_strategies raised KeyError",
        ),
    ],
)
def test_a_plugin_that_stops_at_import_is_named_and_skipped(tmp_path, name, source, why):
    pkg = _entry_point(tmp_path / "site", name, source)
    res = _cli(
        tmp_path,
        *("run", "-s", "digits-shift", "-a", "source", "-q", "--out", "r.csv"),
        env={"PYTHONPATH": f"{pkg}{os.pathsep}{TESTS}"},
    )
    assert res.returncode == 0, res.stderr
    assert f"warning: plugin '{name}' skipped" in res.stderr and why in res.stderr
    assert "summary" in set(read_results(tmp_path / "r.csv").row_type)


def test_a_describe_error_names_the_strategy_not_an_object_id(tmp_path):
    res = _cli(
        tmp_path,
        *("run", "-s", "digits-shift", "-a", "test-describe-list", "--plugin", "hostile_plugins"),
        *("-q", "--out", "r.csv"),
    )
    assert "plugin 'test-describe-list': cladapt_describe returned a list" in res.stderr


def test_plugin_modules_load_by_path_and_from_the_current_folder(tmp_path):
    (tmp_path / "my_tta.py").write_text(
        "from cladapt.hookspecs import hookimpl\n"
        "from cladapt.plugins.baselines import Source\n"
        "class Mine(Source):\n    name = 'my-source'\n"
        "@hookimpl\ndef cladapt_register_strategies(registry):\n    registry.add(Mine)\n"
    )
    for plugin in ("my_tta", "./my_tta.py", str(tmp_path / "my_tta.py")):
        res = _cli(tmp_path, "list", "strategies", "--plugin", plugin, env={"PYTHONPATH": ""})
        assert res.returncode == 0, res.stderr
        assert "my-source" in res.stdout


@pytest.mark.parametrize("name", ["cladapt-", "cladapt-plugin-", "-x"])
def test_a_plugin_name_without_a_name_of_its_own_is_refused(tmp_path, name):
    res = CliRunner().invoke(main, ["new-plugin", "--dir", str(tmp_path), "--", name])
    assert res.exit_code == 2 and "error:" in res.output
    assert not list(tmp_path.iterdir())
