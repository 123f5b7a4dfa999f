"""Aggregation over seeds, output formats, the static site, and the bench command."""

import json
import re

import pandas as pd
import pytest
from click.testing import CliRunner

from cladapt.cli import main
from cladapt.leaderboard.aggregate import aggregate, load
from cladapt.leaderboard.site import build_site, slug
from cladapt.results import COLUMNS, append_rows

XSS = "<script>window.__xss = 1</script>"


def summary_rows(
    run_id,
    strategy,
    seed,
    metrics,
    stream="s1",
    protocol="test_time",
    started="2026-01-01T00:00:00",
):
    base = {c: "" for c in COLUMNS}
    base.update(
        run_id=run_id,
        started_at=started,
        cladapt_version="0.1.0",
        stream=stream,
        protocol=protocol,
        setting="continual",
        strategy=strategy,
        params_json='{"lr": 0.1}',
        model="m",
        seed=seed,
        device="cpu",
        row_type="summary",
    )
    return [{**base, "metric": k, "value": v} for k, v in metrics.items()]


def eval_row(run_id, strategy, seed, domain, error, stream="s1"):
    row = summary_rows(run_id, strategy, seed, {"error": error}, stream=stream)[0]
    return {**row, "row_type": "eval", "trained_upto": domain, "eval_experience": domain}


@pytest.fixture
def results(tmp_path):
    path = tmp_path / "results.csv"
    rows = []
    for seed, (a, b, c) in enumerate([(10.0, 30.0, 20.0), (14.0, 34.0, 22.0)]):
        for name, err in (("alpha", a), ("beta", b), (XSS, c)):
            run = f"{name[:5]}-{seed}"
            rows += summary_rows(
                run,
                name,
                seed,
                {"mean_error": err, "images_per_s": 100.0 + err, "wall_time_s": err},
            )
            rows += [
                eval_row(run, name, seed, "noise", err + 1),
                eval_row(run, name, seed, "blur", err - 1),
            ]
    rows += summary_rows(
        "alpha-old", "alpha", 0, {"mean_error": 99.0}, started="2025-01-01T00:00:00"
    )  # superseded
    rows += summary_rows("beta-broken", "beta", 5, {"mean_error": 0.0})
    failed = summary_rows("beta-broken", "beta", 5, {"run_failed": float("nan")})[0]
    rows.append({**failed, "row_type": "error", "note": "boom"})
    append_rows(path, rows)
    return path


def test_aggregate_means_stds_latest_run_and_failed_runs(results):
    table = aggregate(load([results])).set_index("strategy")
    assert table.loc["alpha", "mean_error_mean"] == pytest.approx(
        12.0
    )  # the 2025 run is superseded
    assert table.loc["alpha", "mean_error_std"] == pytest.approx(pd.Series([10.0, 14.0]).std())
    assert table.loc["beta", "seeds"] == 2  # the failed seed-5 run does not count
    assert list(table.index) == ["alpha", XSS, "beta"]  # sorted by mean error, lower first


def test_leaderboard_formats(results):
    runner = CliRunner()
    as_json = runner.invoke(main, ["leaderboard", "--results", str(results), "--format", "json"])
    assert as_json.exit_code == 0
    records = json.loads(as_json.output)
    assert [r["strategy"] for r in records] == ["alpha", XSS, "beta"]
    md = runner.invoke(main, ["leaderboard", "--results", str(results), "--format", "md"])
    assert md.output.startswith("| stream |") and "| alpha |" in md.output
    csv_out = runner.invoke(main, ["leaderboard", "--results", str(results), "--format", "csv"])
    assert csv_out.output.splitlines()[0].startswith("stream,protocol,setting,strategy,model")
    table = runner.invoke(main, ["leaderboard", "--results", str(results)])
    assert table.exit_code == 0 and "test_time" in table.output and "alpha" in table.output
    missing = runner.invoke(main, ["leaderboard", "--results", str(results.parent / "nope.csv")])
    assert missing.exit_code != 0 and missing.output.startswith("error: results file not found")


def test_site_escapes_csv_strings_and_links_everything(results, tmp_path):
    site = tmp_path / "site"
    pages = build_site(load([results]), site)
    s1 = f"{slug('s1')}.html"
    assert {p.name for p in pages} == {"index.html", s1, "results.csv"}
    page = (site / "streams" / s1).read_text()
    assert XSS not in page and "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # only the site's own sorting script
    assert 'href="../results.csv"' in page and (site / "results.csv").exists()
    assert 'id="corruptions-continual"' in page and "<svg" in page and "beta-broken" in page
    index = (site / "index.html").read_text()
    assert f'href="streams/{s1}"' in index and ">alpha<" in index


@pytest.mark.slow
def test_bench_runs_embedded_pairs_and_builds_site(tmp_path):
    out, site = tmp_path / "r.csv", tmp_path / "site"
    res = CliRunner().invoke(
        main,
        [
            "bench",
            "--seeds",
            "1",
            "--stream",
            "digits-shift",
            "--strategy",
            "source",
            "--strategy",
            "bn-adapt",
            "--workers",
            "2",
            "--profile",
            "--out",
            str(out),
            "--site",
            str(site),
        ],
    )
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert set(df.strategy) == {"source", "bn-adapt"} and set(df.stream) == {"digits-shift"}
    # two worker processes wrote one complete run each, and the profile names both pairs
    assert df.run_id.nunique() == 2 and (df.metric == "wall_time_s").sum() == 2
    assert "bench profile" in res.output and "2 workers" in res.output
    assert (site / "streams" / f"{slug('digits-shift')}.html").exists()
    again = CliRunner().invoke(
        main,
        ["bench", "--seeds", "1", "--stream", "digits-shift", "--strategy", "source"]
        + ["--out", str(out), "--site", str(site)],
    )
    assert again.exit_code == 0
    df = pd.read_csv(out)
    assert set(df.strategy) == {"source"}  # without --append the CSV starts afresh
    # a CPU bench run is made with one torch thread, also when one run has the machine to itself
    threads = df[df.metric == "torch_threads"]
    assert list(threads.value) == [1.0] and threads.note.iloc[0].startswith("cpu ")


def test_integer_metrics_render_without_decimals(tmp_path):
    rows = summary_rows("r1", "alpha", 0, {"mean_error": 10.0, "trainable_params": 94762.0})
    append_rows(tmp_path / "r.csv", rows)
    build_site(load([tmp_path / "r.csv"]), tmp_path / "site")
    page = (tmp_path / "site" / "streams" / f"{slug('s1')}.html").read_text()
    assert ">94,762<" in page and "94,762.00" not in page and ">10.00<" in page


def test_bench_hands_out_the_longest_runs_first_and_shows_one_bar_per_worker():
    from rich.console import Console

    from cladapt.bench import BenchDisplay, EventProgress, Job, order_jobs

    jobs = [Job("digits", "finetune", 0), Job("digits-c", "cotta", 0), Job("x", "new", 0)]
    measured = {("digits", "finetune"): 8.0}
    ordered = order_jobs(jobs, measured, {jobs[2]: "test_time"})
    # cotta: no measurement, its hint (~5 min) first; then the measured 8 s vs a 10 s hint
    assert [j.strategy for j in ordered] == ["cotta", "new", "finetune"]
    assert [j.strategy for j in order_jobs(jobs, {("x", "new"): 1e4})][0] == "new"

    display = BenchDisplay(Console(file=None, width=100, quiet=True), total=3, workers=2)
    progress = EventProgress(display.handle, 1)
    display.handle("start", 1, jobs[1])
    outer = progress.track(range(3), total=3, description="domain fog")
    next(outer)
    inner = progress.track(range(2), total=2, description="source model")
    next(inner)
    tasks = {t.id: t for t in display.progress.tasks}
    bar = tasks[display.bars[1]]
    assert bar.visible and bar.description.endswith("source model") and bar.total == 2
    list(inner)  # the inner phase ends: the worker's one bar shows the outer phase again
    assert tasks[display.bars[1]].description.endswith("domain fog")
    assert len(display.progress.tasks) == 3  # overall + one per worker, however many phases
    display.handle("done", 1)
    assert not tasks[display.bars[1]].visible
    assert tasks[display.overall].completed == 1


def test_a_bench_without_a_terminal_logs_a_line_per_finished_run(monkeypatch):
    """nohup, CI, a batch job: the bars print nothing there, so each finished run is a line,
    and a heartbeat line comes at least every HEARTBEAT_S seconds."""
    import io

    from rich.console import Console

    from cladapt import bench
    from cladapt.bench import BenchDisplay, Job, JobResult

    out = io.StringIO()
    display = BenchDisplay(Console(file=out, width=100, force_terminal=False), total=2, workers=1)
    job = Job("digits-c", "tent", 0)
    display.handle("start", 0, job)
    display.handle("done", 0, JobResult(job, None, 12.3))
    display.handle("start", 0, Job("digits-c", "sar", 0))
    monkeypatch.setattr(bench, "HEARTBEAT_S", -1.0)
    display.handle("advance", 0, 5)
    lines = out.getvalue().splitlines()
    assert "1/2 tent on digits-c, seed 0: done in 12 s" in lines[0]
    # the heartbeat names what is running, for how long
    assert "1/2 runs done; running: sar on digits-c, seed 0 (0 s)" in lines[1]


def test_a_plain_run_never_writes_into_the_committed_leaderboard(run_cli, tmp_path):
    """From a clone, `cladapt run` / `bench` write results/ by default; leaderboard/results.csv
    (the committed leaderboard) changes only when --out names it."""
    committed = tmp_path / "leaderboard" / "results.csv"
    committed.parent.mkdir()
    append_rows(committed, summary_rows("r0", "alpha", 0, {"mean_error": 10.0}))
    before = committed.read_bytes()
    missing = run_cli("leaderboard")
    assert missing.returncode != 0
    assert "--results leaderboard/results.csv" in missing.stderr.strip().splitlines()[-1]
    res = run_cli("run", "--stream", "digits-shift", "--strategy", "source", "-q", "--threads", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    assert committed.read_bytes() == before
    assert (tmp_path / "results" / "results.csv").is_file()
    assert run_cli("leaderboard").returncode == 0


def test_reference_points_are_marked_and_never_a_streams_best(tmp_path):
    """joint (an upper bound) and zero-shot are reference points: a stream's "best" is the best
    method; MTIL streams rank by ZSCL's Avg and show Transfer / Avg / Last."""
    rows = []
    for run, strategy, acc in (
        ("r1", "joint", 99.0),
        ("r2", "finetune", 20.0),
        ("r3", "lwf", 30.0),
    ):
        rows += summary_rows(
            run, strategy, 0, {"avg_accuracy": acc}, stream="cl", protocol="continual"
        )
    mtil = {
        "zero-shot": (70.0, 61.0, 61.0),
        "finetune": (44.0, 47.0, 60.0),
        "zscl": (60.0, 56.0, 59.0),
    }
    for i, (strategy, (transfer, avg, last)) in enumerate(mtil.items()):
        metrics = {"transfer": transfer, "avg": avg, "last": last, "avg_accuracy": last}
        rows += summary_rows(f"m{i}", strategy, 0, metrics, stream="mini", protocol="continual")
    append_rows(tmp_path / "r.csv", rows)
    build_site(load([tmp_path / "r.csv"]), tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text()
    cells = [re.findall(r'data-value="([^"]*)"', tr) for tr in index.split("<tr>")[2:]]
    # columns with a data-value: stream, setting, protocol, strategies, runs, best, value
    best = {c[0]: c[5] for c in cells if c and c[0] in ("cl", "mini")}
    assert best == {"cl": "lwf", "mini": "zscl"}
    assert "not ranked: zero-shot" in index  # the index says why zero-shot is not the best
    page = (tmp_path / "site" / "streams" / f"{slug('cl')}.html").read_text()
    assert "(upper bound)" in page
    mini = (tmp_path / "site" / "streams" / f"{slug('mini')}.html").read_text()
    assert all(f'data-metric="{m}"' in mini for m in ("transfer", "avg", "last"))
    assert "(zero-shot reference)" in mini


def test_the_site_header_names_the_suite_the_rows_cover(catalog):
    from cladapt.bench import suite_jobs
    from cladapt.leaderboard.provenance import describe

    rows = []
    for i, job in enumerate(suite_jobs(catalog, "quick", 1)):
        model = "clip+pretrained" if job.stream == "mtil-mini" or job.pretrained else "small-cnn"
        for row in summary_rows(f"r{i}", job.strategy, 0, {"x": 1.0}, stream=job.stream):
            rows.append(row | {"model": model, "params_json": '{"precision": "fp32"}'})
    df = pd.DataFrame(rows)
    made = describe(df, catalog)
    assert made["suite"] == "quick suite (1 seed)"
    assert made["precision"] == f"fp32 ({len(set(df.run_id))} runs)" and made["devices"] == "cpu"
    assert made["threads"] == ""  # rows older than the thread count say nothing of it
    # runs that record their torch threads are counted by thread count and instruction set
    first = df.drop_duplicates("run_id").to_dict("records")[:3]
    threads = pd.DataFrame(
        [
            r | {"metric": "torch_threads", "value": n, "note": "cpu AVX2"}
            for r, n in zip(first, (1, 1, 2), strict=True)
        ]
    )
    counted = describe(pd.concat([df, threads]), catalog)["threads"]
    others = df.run_id.nunique() - 3
    recorded = "1 on cpu AVX2 (2 runs), 2 on cpu AVX2 (1 run)"
    assert counted == f"not recorded ({others} runs), {recorded}"
    # one run short, or its pre-trained weights missing: only a selection
    assert describe(df[df.run_id != "r0"], catalog)["suite"].startswith("a selection")
    plain = df.assign(model="small-cnn")
    assert describe(plain, catalog)["suite"].startswith("a selection")


def test_the_full_suite_runs_each_stream_at_its_own_number_of_seeds(catalog):
    """A stream's definition sets the seeds its claims need (bench_seeds); --seeds overrides."""
    from cladapt.bench import suite_jobs
    from cladapt.leaderboard.provenance import suite_name

    jobs = suite_jobs(catalog, "full", None)
    seeds = {}
    for j in jobs:
        seeds.setdefault(j.stream, set()).add(j.seed)
    assert seeds["digits-uda"] == set(range(6)) and seeds["fonts-digits"] == set(range(5))
    assert seeds["digits-c"] == {0, 1, 2}
    # a cost probe is seed-free: one seed, the two strategies its claim compares
    assert seeds["imagenet-probe"] == {0}
    assert {j.strategy for j in jobs if j.stream == "imagenet-probe"} == {"tent", "ecotta"}
    assert {j.seed for j in suite_jobs(catalog, "full", 2)} == {0, 1}
    # ViDA's claim is on a ViT: the full suite also runs it and its comparisons on one
    vit = {(j.strategy, j.seed) for j in jobs if j.model == "tiny-vit"}
    assert vit == {(s, k) for s in ("source", "tent", "cotta", "vida") for k in range(3)}
    assert not any(j.model for j in suite_jobs(catalog, "quick", None))
    rows = []
    for i, job in enumerate(jobs):
        model = "clip+pretrained" if job.stream == "mtil-mini" or job.pretrained else "small-cnn"
        model = job.model or model
        for row in summary_rows(f"r{i}", job.strategy, job.seed, {"x": 1.0}, stream=job.stream):
            rows.append(row | {"model": model, "params_json": "{}"})
    assert suite_name(pd.DataFrame(rows), catalog) == "full suite (1-6 seeds)"


def test_the_committed_leaderboard_has_one_run_per_configuration_and_seed():
    """Two runs of one configuration and seed would be averaged as if they were two seeds."""
    from pathlib import Path

    from cladapt.leaderboard.aggregate import params_of
    from cladapt.results import read_results

    path = Path(__file__).resolve().parent.parent / "leaderboard" / "results.csv"
    runs = read_results(path)
    runs = runs[runs.row_type == "summary"].drop_duplicates("run_id")
    config = [params_of(p).get("config", "") for p in runs.params_json]
    keys = runs.assign(config=config)[["stream", "strategy", "config", "model", "setting", "seed"]]
    assert not keys.duplicated().any(), keys[keys.duplicated(keep=False)]
