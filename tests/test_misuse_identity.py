"""A run's identity is everything that changes its result: the leaderboard and a sweep's resume
key tell configurations apart; names and ``--set`` keys cannot be spoofed or mistyped
silently."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cladapt.cli import main
from cladapt.config import parse_assignments
from cladapt.errors import CladaptError, ConfigError
from cladapt.leaderboard.aggregate import aggregate, load
from cladapt.leaderboard.site import build_site
from cladapt.registry import StrategyRegistry, StreamRegistry
from cladapt.results import COLUMNS, append_rows
from cladapt.runner import RunSpec, execute
from cladapt.sweep import plan
from cladapt.terminal import clean


def test_a_non_default_run_is_its_own_leaderboard_row(catalog, out):
    execute(RunSpec("digits-shift", "bn-adapt", out=out, device="cpu"), catalog)
    execute(
        RunSpec("digits-shift", "bn-adapt", {"batch_size": "1"}, out=out, device="cpu"), catalog
    )
    execute(
        RunSpec("digits-shift", "bn-adapt", {"batch_size": "64"}, out=out, device="cpu"), catalog
    )
    table = aggregate(load([out])).set_index("strategy")
    assert sorted(table.index) == ["bn-adapt", "bn-adapt [batch_size=1]"]
    # the explicit default (64 is digits-shift's batch size) is the default configuration: no
    # third row
    assert (
        table.loc["bn-adapt [batch_size=1]", "mean_error_mean"]
        > table.loc["bn-adapt", "mean_error_mean"]
    )


def test_a_sweep_never_skips_the_default_run_after_a_tuned_one(catalog, out):
    base = RunSpec("digits-shift", "bn-adapt", out=out, device="cpu")
    execute(
        RunSpec("digits-shift", "bn-adapt", {"batch_size": "1"}, out=out, device="cpu"), catalog
    )
    jobs, skipped = plan(["digits-shift"], ["bn-adapt"], [0], base, catalog)
    assert len(jobs) == 1 and not skipped
    execute(base, catalog)
    jobs, skipped = plan(["digits-shift"], ["bn-adapt"], [0], base, catalog)
    assert not jobs and len(skipped) == 1
    tuned = RunSpec("digits-shift", "bn-adapt", {"batch_size": "1"}, out=out, device="cpu")
    assert plan(["digits-shift"], ["bn-adapt"], [0], tuned, catalog)[0] == []


def test_one_value_has_one_key(catalog, out):
    keys = [
        plan(
            ["digits-shift"],
            ["tent"],
            [0],
            RunSpec("digits-shift", "tent", {"lr": v}, out=out),
            catalog,
        )[0][0].key
        for v in ("0", "-0", "0.0")
    ]
    assert len(set(keys)) == 1 and json.loads(keys[0])["config"] == "lr=0.0"


def test_a_key_given_twice_is_refused():
    with pytest.raises(ConfigError, match="lr is given twice"):
        parse_assignments(["lr=0.1", "lr=0.2"])
    with pytest.raises(ConfigError, match="batch_size is given twice"):
        parse_assignments(["batch-size=4", "batch_size=8"])


def test_a_mistyped_case_gets_a_suggestion_and_overflow_is_named(tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        main,
        [
            "run",
            "-s",
            "digits-shift",
            "-a",
            "tent",
            "--set",
            "LR=0.1",
            "--out",
            str(tmp_path / "r.csv"),
        ],
    )
    assert res.exit_code == 2 and "did you mean 'lr'" in res.output, res.output
    res = runner.invoke(
        main,
        [
            "run",
            "-s",
            "digits-shift",
            "-a",
            "tent",
            "--set",
            "lr=1e400",
            "--out",
            str(tmp_path / "r.csv"),
        ],
    )
    assert res.exit_code == 2 and "lr=1e400: too large for a float" in res.output, res.output


def _summary(strategy: str, metric: str = "mean_error") -> list[dict]:
    row = {c: "" for c in COLUMNS}
    row.update(
        run_id=strategy,
        stream="s",
        protocol="test_time",
        setting="continual",
        strategy=strategy,
        params_json="{}",
        model="m",
        seed=0,
        device="cpu",
        row_type="summary",
    )
    return [dict(row, metric="mean_error", value=1.0), dict(row, metric=metric, value=2.0)]


def test_metric_names_in_csv_headers_are_formula_neutralised(out):
    append_rows(out, _summary("a", metric="=cmd|' /C calc'!A0"))
    res = CliRunner().invoke(main, ["leaderboard", "--results", str(out), "--format", "csv"])
    assert res.exit_code == 0, res.output
    header = res.output.splitlines()[0]
    assert "'=cmd" in header and ",=cmd" not in header


@pytest.mark.parametrize(
    "name", ["source\u200b", "\u202eecruos", "tent\u2066", " tent", "a\nb", ""]
)
def test_invisible_or_reordering_characters_cannot_name_an_entry(name):
    fake = type("Fake", (), {"name": name, "protocols": ("test_time",), "__doc__": "x"})
    with pytest.raises(CladaptError, match="refused"):
        StrategyRegistry().add(fake)
    with pytest.raises(CladaptError, match="refused"):
        StreamRegistry().add(name, lambda **_: None, protocol="test_time")


def test_bidi_and_zero_width_characters_never_reach_a_terminal_or_a_page(tmp_path, out):
    assert clean("ab\u202ecd\u200b\u2066e") == "abcde"
    append_rows(out, _summary("evil\u202eabc") + _summary("source\u200b"))
    build_site(load([out]), tmp_path / "site")
    for page in (tmp_path / "site").rglob("*.html"):
        text = page.read_text()
        assert "\u202e" not in text and "\u200b" not in text
