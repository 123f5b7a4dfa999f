"""The command line: tables, one-line errors with suggestions, exit codes, no tracebacks."""

import pytest
from click.testing import CliRunner

from cladapt.cli import main


@pytest.fixture
def cli():
    return CliRunner()


def _one_line_error(result, *fragments):
    assert result.exit_code != 0
    text = result.output.strip()
    assert "Traceback" not in text
    assert text.startswith("error:"), text
    assert len(text.splitlines()) == 1, text
    for f in fragments:
        assert f in text, text


def test_list_tables(cli):
    res = cli.invoke(main, ["list", "strategies"])
    assert res.exit_code == 0
    for name in ("finetune", "source", "bn-adapt", "test_time", "continual"):
        assert name in res.output
    res = cli.invoke(main, ["list", "streams"])
    assert res.exit_code == 0 and "digits-shift" in res.output and "yes" in res.output


def test_describe_lists_parameters(cli):
    res = cli.invoke(main, ["describe", "finetune"])
    assert res.exit_code == 0
    assert "lr" in res.output and "epochs" in res.output and "0.01" in res.output


@pytest.mark.parametrize(
    "args,fragments",
    [
        (
            ["run", "--stream", "digts", "--strategy", "finetune"],
            ["unknown stream 'digts'", "did you mean 'digits'"],
        ),
        (
            ["run", "--stream", "digits", "--strategy", "fintune"],
            ["unknown strategy 'fintune'", "'finetune'"],
        ),
        (
            ["run", "--stream", "digits", "--strategy", "bn-adapt"],
            ["does not support the continual protocol", "finetune"],
        ),
        (
            ["run", "--stream", "digits", "--strategy", "finetune", "--set", "lr"],
            ["malformed --set 'lr'"],
        ),
        (
            ["run", "--stream", "digits", "--strategy", "finetune", "--set", "lr=fast"],
            ["lr=fast", "not a valid float"],
        ),
        (
            ["run", "--stream", "digits", "--strategy", "finetune", "--set", "epoch=2"],
            ["unknown parameter 'epoch'", "'epochs'"],
        ),
        (
            ["run", "--stream", "digits", "--strategy", "finetune", "--setting", "episodic"],
            ["unknown setting", "class-incremental"],
        ),
        (
            ["run", "--stream", "digits-shift", "--strategy", "source", "--checkpoint", "nope.pt"],
            ["checkpoint not found: nope.pt"],
        ),
        (
            ["run", "--stream", "digits", "--strategy", "finetune", "--model", "no-such-net"],
            ["unknown model 'no-such-net'"],
        ),
        (["run", "--stream", "digits", "--strategy", "finetune", "--device", "cuda:7"], ["cuda"]),
        (["list", "strategies", "--plugin", "not_a_module_xyz"], ["cannot import --plugin module"]),
    ],
)
def test_bad_input_gives_one_line_error(cli, tmp_path, args, fragments):
    res = cli.invoke(main, [*args, "--out", str(tmp_path / "r.csv")] if args[0] == "run" else args)
    _one_line_error(res, *fragments)
    assert not (tmp_path / "r.csv").exists()  # rejected before the run: no rows at all


def test_run_prints_matrix_and_headline(cli, tmp_path):
    res = cli.invoke(
        main,
        [
            "run",
            "-s",
            "digits",
            "-a",
            "finetune",
            "--set",
            "epochs=1",
            "-q",
            "--out",
            str(tmp_path / "r.csv"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "avg_accuracy" in res.output and "forgetting" in res.output and "task4:89" in res.output
    assert (tmp_path / "r.csv").exists()


def test_dry_run_prints_the_plan_and_runs_nothing(cli, tmp_path):
    out = tmp_path / "r.csv"
    args = ["run", "-s", "digits", "-a", "finetune", "--with", "lwf", "--set", "lr=0.05"]
    res = cli.invoke(main, [*args, "--dry-run", "--out", str(out)])
    assert res.exit_code == 0, res.output
    for fragment in ("finetune+lwf", "lr=0.05", "small-cnn", '"lwf_alpha"', str(out)):
        assert fragment in res.output, fragment
    assert not out.exists()  # nothing ran, nothing written
    # a plan that cannot run fails as the run would, before any work
    res = cli.invoke(main, ["run", "-s", "digits", "-a", "tent", "--dry-run", "--out", str(out)])
    _one_line_error(res, "does not support the continual protocol")


def test_the_plan_is_what_the_run_records():
    """``plan()`` says exactly what ``params_json`` and the label columns will hold: the run adds
    only what it learns while running (the digest of the source model it trained or loaded)."""
    import json

    from cladapt.manager import load_catalog
    from cladapt.planning import plan
    from cladapt.runner import RunSpec, build, run

    catalog = load_catalog()
    spec = RunSpec("digits-shift", "tent", {"lr": "0.002"}, out=None, device="cpu")
    planned = plan(spec, catalog)
    rows: list[dict] = []
    run(build(planned, catalog, sink=rows.extend))
    assert rows and all(r["strategy"] == planned.strategy_label for r in rows)
    assert all(r["model"] == planned.model_label and r["setting"] == planned.setting for r in rows)
    recorded = json.loads(rows[-1]["params_json"])
    assert set(recorded) - set(planned.params) == {"source_model"}
    assert {k: recorded[k] for k in planned.params} == json.loads(
        json.dumps(planned.params, default=str)
    )
    assert recorded["config"] == "lr=0.002"


def test_describe_on_a_stream_says_where_each_value_comes_from(cli):
    res = cli.invoke(main, ["describe", "finetune", "--stream", "mtil-mini", "--set", "lr=1e-4"])
    assert res.exit_code == 0, res.output
    rows = {
        cells[1]: (cells[2], cells[3])
        for line in res.output.splitlines()
        if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 4
    }
    assert rows["lr"] == ("0.0001", "--set")
    assert rows["optimizer"] == ("'adamw'", "stream mtil-mini")  # the stream's recipe
    assert rows["check_every"] == ("25", "default")
    # a regulariser a strategy composes shows its own knobs
    res = cli.invoke(main, ["describe", "lwf"])
    assert res.exit_code == 0 and "regularizer lwf" in res.output and "lwf_alpha" in res.output


def test_describe_a_stream_shows_its_size_defaults_and_claims(cli):
    res = cli.invoke(main, ["describe", "digits-uda"])
    assert res.exit_code == 0, res.output
    for fragment in ("uda protocol", "clean (source)", "digits-m", "1257", "iterations=1500"):
        assert fragment in res.output, fragment
    assert "Ganin et al." in res.output  # the published claims it is a miniature of
    res = cli.invoke(main, ["describe", "cifar10-c"])  # no data here: said in one line, rc 0
    assert res.exit_code == 0 and "pass --data-root" in res.output
    _one_line_error(cli.invoke(main, ["describe", "digits-uda-x"]), "strategy or stream")


def test_strategy_descriptions_are_whole_sentences_and_name_what_they_need():
    from cladapt.cli import listed_description
    from cladapt.manager import load_catalog
    from cladapt.registry import _first_line

    doc = """EATA: entropy minimisation on reliable, non-redundant samples with a Fisher
    anti-forgetting penalty (Niu et al. 2022). Second sentence.

    Details."""
    assert _first_line(doc) == (
        "EATA: entropy minimisation on reliable, non-redundant samples with a Fisher "
        "anti-forgetting penalty (Niu et al. 2022)."
    )
    assert _first_line("LAME (Boudiaf et al. CVPR 2022): output-only. More.") == (
        "LAME (Boudiaf et al. CVPR 2022): output-only."
    )
    catalog = load_catalog()
    for entry in catalog.strategies:
        assert entry.description.endswith((".", ")")), entry.description  # never cut mid-way
    avl = [e for e in catalog.strategies if e.name.startswith("avl-")]
    assert avl and all("Needs avalanche" in listed_description(e) for e in avl)
    assert "Needs" not in listed_description(catalog.strategies.get("finetune"))


def test_a_uda_run_prints_each_pair(cli, tmp_path):
    args = ["run", "-s", "digits-uda", "-a", "source-only", "--set", "iterations=30", "-q"]
    res = cli.invoke(main, [*args, "--out", str(tmp_path / "r.csv")])
    assert res.exit_code == 0, res.output
    assert "clean -> digits-m" in res.output and "clean -> gaussian_noise" in res.output


def test_bench_and_sweep_read_streams_strategies_and_seeds_alike(cli, tmp_path):
    """One convention: --stream / --strategy (repeated or comma-separated) and --seeds N = the N
    seeds 0..N-1 in both commands; a list or a range names seeds explicitly."""
    from cladapt.cli import parse_seeds
    from cladapt.results import read_results

    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("5,") == [5] and parse_seeds("4, 7") == [4, 7]
    assert parse_seeds("2..4") == [2, 3, 4]
    for bad in ("0", "x", "1,1", "3..1", "-1,"):
        _one_line_error(
            cli.invoke(
                main, ["sweep", "-s", "digits-shift", "--strategy", "source", "--seeds", bad]
            )
        )
    seen = {}
    for command in ("bench", "sweep"):
        out = tmp_path / f"{command}.csv"
        args = [command, "--stream", "digits-shift", "--strategy", "source", "--seeds", "2"]
        args += ["--out", str(out)]
        if command == "bench":
            args += ["--site", str(tmp_path / "site"), "--workers", "1"]
        else:
            args += ["--backend", "sequential"]
        res = cli.invoke(main, args)
        assert res.exit_code == 0, res.output
        assert "seeds 0, 1" in res.output
        df = read_results(out)
        seen[command] = sorted(set(zip(df.stream, df.strategy, df.seed, strict=True)))
    assert (
        seen["bench"]
        == seen["sweep"]
        == [("digits-shift", "source", 0), ("digits-shift", "source", 1)]
    )


def test_run_summary_prints_counts_as_whole_numbers():
    from cladapt.cli import summary_value

    assert summary_value("peak_trainable_params", 61338.0) == "61,338"
    assert summary_value("torch_threads", 1.0) == "1"
    assert summary_value("mean_error", 7.0) == "7.00"
    assert summary_value("train_flops", 3.2e12) == "3.2e+12"
    assert summary_value("trainable_params", float("nan")) == "nan"


def test_dry_run_loads_the_checkpoint_it_names(cli, tmp_path):
    """--dry-run stops where the run would: a checkpoint that does not fit the model."""
    import torch

    bad = tmp_path / "bad.pt"
    torch.save({"a": torch.zeros(2)}, bad)
    args = ["run", "-s", "digits-c", "-a", "tent", "--checkpoint", str(bad), "--dry-run"]
    _one_line_error(cli.invoke(main, args), "does not fit the model")
    # the run itself refuses it before any row, as a missing checkpoint (bad input: no row)
    out = tmp_path / "r.csv"
    _one_line_error(cli.invoke(main, [*args[:-1], "--out", str(out)]), "does not fit the model")
    assert not out.exists()
    from cladapt.models.small_cnn import SmallCNN

    good = tmp_path / "good.pt"
    torch.save(SmallCNN(10).state_dict(), good)
    res = cli.invoke(main, [*args[:6], str(good), "--dry-run"])
    assert res.exit_code == 0, res.output
