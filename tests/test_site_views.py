"""The site's views in the papers' layouts, the published reference numbers, the plots and the
terminal tables, built from rows shaped as the protocols write them."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from rich.console import Console

from cladapt.data.corruptions import CORRUPTIONS
from cladapt.leaderboard.aggregate import aggregate, load
from cladapt.leaderboard.console import cell, leaderboard_tables
from cladapt.leaderboard.plots import Point, pareto_front, tradeoff_svg
from cladapt.leaderboard.site import build_site, slug
from cladapt.leaderboard.views import corruption_tables, mtil_table, published_tables, uda_table
from cladapt.results import COLUMNS, append_rows


def row(run, stream, protocol, setting, strategy, seed, row_type, metric, value, upto="", ev=""):
    base = {c: "" for c in COLUMNS}
    base.update(
        run_id=run,
        started_at="2026-01-01T00:00:00",
        cladapt_version="0.1.0",
        stream=stream,
        protocol=protocol,
        setting=setting,
        strategy=strategy,
        params_json="{}",
        model="m",
        seed=seed,
        device="cpu",
        row_type=row_type,
        trained_upto=upto,
        eval_experience=ev,
        metric=metric,
        value=value,
    )
    return base


def tta_rows(stream="cifar10-c", settings=("continual", "gradual")):
    """Two strategies over the 15 corruptions, written in a shuffled order; gradual visits every
    severity, only the @5 visits belong in CoTTA's gradual table."""
    rows = []
    order = list(reversed(CORRUPTIONS))
    for setting in settings:
        for seed in (0, 1):
            for strategy, base in (("tent", 20.0), ("source", 40.0)):
                run = f"{setting}-{strategy}-{seed}"
                for i, c in enumerate(order):
                    value = base + i + seed
                    if setting == "gradual":
                        for sev in (1, 3, 5):
                            rows.append(
                                row(
                                    run,
                                    stream,
                                    "test_time",
                                    setting,
                                    strategy,
                                    seed,
                                    "eval",
                                    "error",
                                    value - (5 - sev) * 10,
                                    f"{c}@{sev}",
                                    f"{c}@{sev}",
                                )
                            )
                    else:
                        rows.append(
                            row(
                                run,
                                stream,
                                "test_time",
                                setting,
                                strategy,
                                seed,
                                "eval",
                                "error",
                                value,
                                c,
                                c,
                            )
                        )
                rows.append(
                    row(
                        run,
                        stream,
                        "test_time",
                        setting,
                        strategy,
                        seed,
                        "summary",
                        "mean_error",
                        base + 7 + seed,
                    )
                )
                rows.append(
                    row(
                        run,
                        stream,
                        "test_time",
                        setting,
                        strategy,
                        seed,
                        "summary",
                        "wall_time_s",
                        10.0 if strategy == "tent" else 1.0,
                    )
                )
    return pd.DataFrame(rows)


def test_corruption_table_uses_the_standard_order_and_the_severity_5_visits():
    df = tta_rows()
    tables = {t.key: t for t in corruption_tables(df[df.row_type == "eval"])}
    cont, grad = tables["corruptions-continual"], tables["corruptions-gradual"]
    assert cont.columns == [*CORRUPTIONS, "mean"]  # written reversed, shown in the standard order
    assert cont.column_heads[0] == ("gauss", "gaussian_noise")
    tent = next(r for r in cont.rows if r.label == "tent")
    # gaussian_noise was written last (i = 14): 20 + 14, mean of seeds 0 and 1 -> 34.5
    assert tent.cells[0] == pytest.approx(34.5) and tent.cells[-1] == pytest.approx(27.5)
    assert [r.label for r in cont.rows] == ["tent", "source"]  # lower mean error first
    tent_g = next(r for r in grad.rows if r.label == "tent")
    assert tent_g.cells[:15] == tent.cells[:15]  # the @5 visits, not @1 / @3


def mtil_rows():
    """ZSCL-shaped eval rows: Transfer has no value for the first task."""
    rows = []
    tasks = ["Aircraft", "Caltech101", "CIFAR100"]
    values = {"zscl": (80.0, 70.0), "finetune": (60.0, 40.0)}
    for seed in (0, 1):
        for strategy, (avg, transfer) in values.items():
            run = f"{strategy}-{seed}"
            for j, t in enumerate(tasks):
                rows.append(
                    row(
                        run,
                        "mtil",
                        "continual",
                        "task-incremental",
                        strategy,
                        seed,
                        "eval",
                        "avg",
                        avg + j,
                        "final",
                        t,
                    )
                )
                rows.append(
                    row(
                        run,
                        "mtil",
                        "continual",
                        "task-incremental",
                        strategy,
                        seed,
                        "eval",
                        "last",
                        avg + 5,
                        "final",
                        t,
                    )
                )
                if j:
                    rows.append(
                        row(
                            run,
                            "mtil",
                            "continual",
                            "task-incremental",
                            strategy,
                            seed,
                            "eval",
                            "transfer",
                            transfer + j,
                            "final",
                            t,
                        )
                    )
            for metric, value in (("avg_accuracy", avg), ("transfer", transfer), ("avg", avg)):
                rows.append(
                    row(
                        run,
                        "mtil",
                        "continual",
                        "task-incremental",
                        strategy,
                        seed,
                        "summary",
                        metric,
                        value + seed,
                    )
                )
            rows.append(
                row(
                    run,
                    "mtil",
                    "continual",
                    "task-incremental",
                    strategy,
                    seed,
                    "summary",
                    "train_flops",
                    1e12 if strategy == "zscl" else 1e11,
                )
            )
    return pd.DataFrame(rows)


def test_mtil_table_has_zscl_table_1_blocks():
    t = mtil_table(mtil_rows())
    assert t.columns == ["Aircraft", "Caltech101", "CIFAR100", "mean"]
    assert [s for s, _ in t.sections] == ["Transfer", "Avg", "Last"]
    transfer = dict(t.sections)["Transfer"]
    zscl = next(r for r in transfer if r.label == "zscl")
    assert math.isnan(zscl.cells[0]) and zscl.cells[1:3] == [71.0, 72.0]
    assert zscl.cells[-1] == pytest.approx(71.5)  # the mean skips the first task
    assert [r.label for r in dict(t.sections)["Avg"]] == ["zscl", "finetune"]


def test_uda_table_puts_pairs_in_columns_and_oracles_last():
    rows = []
    for strategy, err, oracle in (("dann", 30.0, 0), ("target-oracle", 2.0, 1), ("mcc", 20.0, 0)):
        for stream, target in (("digits-uda", "digits-m"), ("fonts-digits", "digits")):
            run = f"{strategy}-{stream}"
            rows += [
                row(
                    run,
                    stream,
                    "uda",
                    "default",
                    strategy,
                    0,
                    "eval",
                    "target_error",
                    err,
                    target,
                    target,
                ),
                row(
                    run,
                    stream,
                    "uda",
                    "default",
                    strategy,
                    0,
                    "eval",
                    "target_error",
                    99.0,
                    "epoch1",
                    target,
                ),  # an earlier epoch: not the final value
                row(
                    run,
                    stream,
                    "uda",
                    "default",
                    strategy,
                    0,
                    "eval",
                    "source_accuracy",
                    95.0,
                    target,
                    "source",
                ),
                row(
                    run,
                    stream,
                    "uda",
                    "default",
                    strategy,
                    0,
                    "eval",
                    "source_accuracy",
                    10.0,
                    "epoch1",
                    "source",
                ),  # a learning-curve row: not the final value
                row(run, stream, "uda", "default", strategy, 0, "summary", "oracle", oracle),
                row(run, stream, "uda", "default", strategy, 0, "summary", "target_error", err),
            ]
    df = pd.DataFrame(rows)
    path_rows = df.to_dict("records")
    t = uda_table(df[df.row_type == "eval"], aggregate(pd.DataFrame(path_rows)))
    assert t.columns == [
        "digits-uda → digits-m",
        "fonts-digits → digits",
        "mean target",
        "mean source",
    ]
    assert [r.label for r in t.rows] == ["mcc", "dann", "target-oracle"]
    assert t.rows[0].cells[:2] == [80.0, 80.0] and t.rows[-1].oracle
    # every cell with data behind it is filled: the final source accuracy too
    assert all(r.cells[-1] == 95.0 for r in t.rows)


def test_published_numbers_only_on_their_real_streams():
    (cifar,) = published_tables("cifar10-c")
    assert cifar.published and "CoTTA" in cifar.note
    rows = {r.label: r.cells for r in cifar.rows}
    assert rows["cotta"][-1] == 16.2 and math.isnan(rows["cotta"][0])  # mean only
    # CoTTA's Table 1 per corruption, in the standard order; the printed mean is their mean
    assert cifar.columns[:3] == ["gaussian_noise", "shot_noise", "impulse_noise"]
    assert rows["source"][0] == 72.3 and rows["bn-adapt"][10] == 8.4  # gaussian; brightness
    for label in ("source", "bn-adapt"):
        assert sum(rows[label][:15]) / 15 == pytest.approx(rows[label][-1], abs=0.05)
    # Office-31 as the CDAN / tllib tables print it: the six pairs side by side, then the average
    (office,) = published_tables("office31-A-W")
    assert office.heads == ["A→W", "D→W", "W→D", "A→D", "D→A", "W→A", "avg"]
    office_rows = {r.label: r.cells for r in office.rows}
    assert office_rows["cdan"][:3] == [94.1, 98.6, 100.0] and office_rows["dann"][-1] == 82.2
    for cells in office_rows.values():
        assert sum(cells[:6]) / 6 == pytest.approx(cells[-1], abs=0.051)  # printed rounded
    assert published_tables("office31-W-A")[0].rows == office.rows
    (mtil,) = published_tables("mtil")
    zscl_last = next(
        r for s, rows in mtil.sections if s == "Last" for r in rows if r.label == "zscl"
    )
    assert zscl_last.cells[-1] == pytest.approx(83.6, abs=0.05)  # ZSCL Table 1: Last 83.6
    zscl_transfer = next(
        r for s, rows in mtil.sections if s == "Transfer" for r in rows if r.label == "zscl"
    )
    assert zscl_transfer.cells[-1] == pytest.approx(68.1, abs=0.05)  # Transfer 68.1
    assert published_tables("digits-c") == [] and published_tables("mtil-mini") == []


def test_stream_page_shows_published_numbers_apart_from_ours(tmp_path):
    df = tta_rows(settings=("continual",))
    append_rows(tmp_path / "r.csv", df.to_dict("records"))
    build_site(load([tmp_path / "r.csv"]), tmp_path / "site")
    page = (tmp_path / "site" / "streams" / f"{slug('cifar10-c')}.html").read_text()
    ours = page.index('id="corruptions-continual"')
    published = page.index('id="published-')
    assert ours < published and "Published numbers, not produced by cladapt" in page
    # the published table is a separate table: its rows never enter the sortable leaderboard
    board = page[
        page.index('id="leaderboard"') : page.index("</table>", page.index('id="leaderboard"'))
    ]
    assert "16.2" not in board and "16.20" not in board


def test_pareto_front_and_plot_axes():
    pts = [
        Point("cheap-bad", 1.0, 50.0),
        Point("mid", 10.0, 30.0),
        Point("dominated", 20.0, 40.0),
        Point("costly-best", 1000.0, 20.0),
        Point("oracle", 5.0, 1.0, reference=True),
    ]
    assert [p.label for p in pareto_front(pts, higher_is_better=False)] == [
        "cheap-bad",
        "mid",
        "costly-best",
    ]
    svg = tradeoff_svg(pts, "training FLOPs", "mean error %", higher_is_better=False)
    assert svg.startswith("<svg") and "training FLOPs (log scale)" in svg  # 3 decades: log
    assert "mean error %" in svg and "Pareto front" in svg and "costly-best" in svg
    assert tradeoff_svg(pts, "x", "y", False) == tradeoff_svg(pts, "x", "y", False)  # stable


def test_terminal_tables_fit_100_columns_without_wrapping(tmp_path):
    df = pd.concat([tta_rows(), mtil_rows()])
    append_rows(tmp_path / "r.csv", df.to_dict("records"))
    table = aggregate(load([tmp_path / "r.csv"]))
    console = Console(width=100, record=True)
    for title, t in leaderboard_tables(table):
        console.print(title)
        console.print(t)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    # one line per strategy row: a wrapped cell would add lines
    assert (
        sum(line.lstrip().startswith(("tent", "source", "zscl", "finetune")) for line in lines) == 6
    )
    assert "Transfer" in text and "±" in text
    assert cell("mean_error", 20.0, 0.0, 3) == "20.0"  # a constant has no ± 0.0
    assert cell("mean_error", 20.0, 0.44, 3) == "20.0 ±0.4"
    assert cell("train_flops", 1.234e12, 0.0, 3) == "1.2e+12"


def nevis_rows():
    """A NEVIS-shaped continual stream: accuracy matrix rows, per-task error after learning,
    training FLOPs spanning decades."""
    rows = []
    tasks = ["shapes", "digits-01", "textures"]
    for strategy, err, flops in (("finetune", 30.0, 1e10), ("joint", 20.0, 1e12)):
        for seed in (0, 1):
            run = f"nevis-{strategy}-{seed}"
            common = (run, "nevis-mini", "continual", "task-incremental", strategy, seed)
            for i, t in enumerate(tasks):
                rows.append(row(*common, "eval", "error_after_learning", err + i, t, t))
                for u in tasks[: i + 1]:
                    rows.append(row(*common, "eval", "accuracy", 100 - err - i, t, u))
            for metric, value in (
                ("avg_accuracy", 100 - err),
                ("avg_error_after_learning", err + 1 + seed),
                ("train_flops", flops),
                ("wall_time_s", 5.0),
            ):
                rows.append(row(*common, "summary", metric, value))
    return pd.DataFrame(rows)


def test_nevis_page_plots_error_against_flops_and_tabulates_tasks(tmp_path):
    append_rows(tmp_path / "r.csv", nevis_rows().to_dict("records"))
    build_site(load([tmp_path / "r.csv"]), tmp_path / "site")
    page = (tmp_path / "site" / "streams" / f"{slug('nevis-mini')}.html").read_text()
    assert 'id="nevis-table"' in page and "error % on each task after learning it" in page
    plot = page[page.index('id="tradeoff"') :]
    assert "training FLOPs (log scale)" in plot and "error after learning %" in plot


def test_run_table_shows_only_the_parameters_that_differ():
    from cladapt.leaderboard.site import params_differences

    runs = pd.DataFrame(
        {
            "strategy": ["tent", "tent", "tent", "source"],
            "params_json": [
                '{"lr": 0.001, "batch_size": 64}',
                '{"lr": 0.001, "batch_size": 64}',
                '{"lr": 0.01, "batch_size": 64}',
                '{"batch_size": 1}',
            ],
        }
    )
    assert params_differences(runs) == ["", "", "lr=0.01", ""]
    # a tie goes to the value seen first, whatever the hash seed (a rebuilt page is the same)
    tie = pd.DataFrame({"strategy": ["nmc"] * 2, "params_json": ['{"p": false}', '{"p": true}']})
    assert params_differences(tie) == ["", "p=true"]


def test_the_peak_memory_column_says_what_it_measured():
    """peak_memory_mb is the process's RSS on a CPU and the CUDA allocator's peak on a GPU: the
    column is labelled by what its rows measured (each summary row's note)."""
    from cladapt.leaderboard.site import peak_label

    def rows(*notes):
        return pd.DataFrame(
            {"metric": "peak_memory_mb", "row_type": "summary", "note": list(notes), "value": 1.0}
        )

    assert peak_label(rows("process_peak_rss", "process_peak_rss")) == "peak RSS MB (process)"
    assert peak_label(rows("cuda_max_allocated")) == "peak CUDA MB"
    assert "RSS on CPU rows, CUDA on GPU rows" in peak_label(
        rows("process_peak_rss", "cuda_max_allocated")
    )


def test_the_plot_key_names_only_what_the_plot_draws():
    from cladapt.leaderboard.site import plot_caption

    one_seed = pd.DataFrame({"mean_error_mean": [5.0, 6.0], "mean_error_std": [float("nan")] * 2})
    caption = plot_caption(one_seed, "digits-c", "test_time")
    assert "bars: std" not in caption and "Hollow" not in caption and "Pareto" in caption
    spread = one_seed.assign(mean_error_std=[0.5, 0.0], oracle=[False, True])
    caption = plot_caption(spread, "digits-c", "test_time")
    assert "bars: std" in caption and "Hollow markers: oracle" in caption


def test_log_axes_draw_powers_of_ten_and_names_stay_literal():
    """A log axis's ticks are drawn as 10 with a raised exponent (matplotlib's mathtext), never
    as the raw "$\\mathdefault{10^{1}}$"; a "$" in a name is drawn as written, and a name that
    starts with "_" is in the legend like any other."""
    import re

    from cladapt.leaderboard.plots import Point, tradeoff_svg

    svg = tradeoff_svg(
        [Point("_private", 1.0, 2.0), Point("a$b$c", 100.0, 3.0), Point("tent", 10.0, 1.0)],
        "wall time per run (s)",
        "mean error %",
        higher_is_better=False,
    )
    assert "mathdefault" not in svg
    drawn = re.findall(r"<(?:text|tspan)[^>]*>([^<]+)<", svg)
    assert "$" not in "".join(t for t in drawn if t != "a$b$c")
    assert "a$b$c" in drawn and "_private" in drawn and "tent" in drawn
    # the exponents: "1", "0" then a raised "0" / "1" / "2" for 10^0, 10^1, 10^2
    raised = re.findall(r'<tspan[^>]*style="font-size: 6\.3px[^"]*">(\d)</tspan>', svg)
    assert raised == ["0", "1", "2"]


def test_the_plot_shows_the_metric_the_stream_is_ranked_by(tmp_path):
    """mtil-mini is ranked by ZSCL's Avg: its plot's heading and its y values are Avg (not Last,
    which the protocol's own headline, final average accuracy, would be)."""
    from test_leaderboard import summary_rows

    from cladapt.leaderboard.aggregate import aggregate
    from cladapt.leaderboard.site import tradeoff_plots

    rows = []
    for i, (strategy, avg, last) in enumerate((("zero-shot", 61.0, 61.0), ("zscl", 60.1, 62.2))):
        metrics = {"transfer": 60.0, "avg": avg, "last": last, "avg_accuracy": last}
        metrics["wall_time_s"] = 1.0 + 99 * i
        rows += summary_rows(
            f"m{i}", strategy, 0, metrics, stream="mtil-mini", protocol="continual"
        )
    append_rows(tmp_path / "r.csv", rows)
    table = aggregate(load([tmp_path / "r.csv"]))
    (plot,) = tradeoff_plots(table, "mtil-mini", "continual")
    assert "Avg % (MTIL)" in plot.svg and "final avg acc" not in plot.svg


def test_a_streams_second_model_is_never_averaged_with_its_first_in_the_tables():
    """digits-c runs tent on the small CNN and on the tiny ViT: the per-corruption table has a
    row for each (the second labelled by its model), not their mean."""
    import pandas as pd

    from cladapt.leaderboard.site import _models_apart

    rows = [
        {"run_id": f"{m}{i}", "strategy": "tent", "model": m, "value": v, "stream": "s"}
        for m, v, n in (("small-cnn", 7.0, 3), ("tiny-vit", 33.0, 1))
        for i in range(n)
    ]
    apart = _models_apart(pd.DataFrame(rows))
    means = apart.groupby("strategy").value.mean()
    assert means.to_dict() == {"tent": 7.0, "tent (tiny-vit)": 33.0}
    one = pd.DataFrame(rows[:3])
    assert _models_apart(one).equals(one)
