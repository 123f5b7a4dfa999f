"""What a careless or hostile user can do must never destroy a file, score a diverged run, or
reach the terminal as markup or escape codes. One test per reproduced failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cladapt.cli import main
from cladapt.data.corruptions import CORRUPTIONS
from cladapt.errors import DataError, DivergenceError
from cladapt.hookspecs import hookimpl
from cladapt.leaderboard.aggregate import load
from cladapt.leaderboard.site import build_site, slug
from cladapt.models.checkpoints import load_checkpoint, save_checkpoint
from cladapt.models.small_cnn import SmallCNN
from cladapt.results import COLUMNS, ResultsWarning, append_rows, read_results
from cladapt.runner import RunSpec, execute

TESTS = Path(__file__).resolve().parent


def _rows(run="r1", stream="s1", value=76.04, n=1, row_type="summary", strategy="a", seed=0):
    base = {c: "" for c in COLUMNS}
    base.update(
        run_id=run,
        started_at="2026-01-01T00:00:00+00:00",
        cladapt_version="0.1.0",
        stream=stream,
        protocol="test_time",
        setting="continual",
        strategy=strategy,
        params_json="{}",
        model="m",
        seed=seed,
        device="cpu",
        row_type=row_type,
        metric="mean_error",
        value=value,
    )
    return [dict(base, metric=f"mean_error{'' if i == 0 else i}") for i in range(n)]


def _cli(*args, **kwargs):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, **kwargs)


def _one_line_error(res, code=2) -> str:
    assert res.exit_code == code, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ") and "Traceback" not in res.output
    return lines[-1]


# ---------------------------------------------------------------- data loss
@pytest.mark.parametrize("content", [b"my notes, not results", b"\x80PK\x03\x04binary.pt"])
def test_1_run_out_on_a_foreign_file_leaves_it_untouched(tmp_path, content):
    foreign = tmp_path / "precious.txt"
    foreign.write_bytes(content)  # no final newline: the old repair truncated it to nothing
    res = _cli("run", "-s", "digits-shift", "-a", "source", "-q", "--out", str(foreign))
    assert "not a cladapt results CSV" in _one_line_error(res)
    assert foreign.read_bytes() == content
    with pytest.raises(DataError):
        append_rows(foreign, _rows())
    assert foreign.read_bytes() == content


def test_2_a_complete_last_row_without_newline_is_kept(out):
    append_rows(out, _rows("r1"))
    out.write_bytes(out.read_bytes().rstrip(b"\n"))  # e.g. saved by an editor
    append_rows(out, _rows("r2", value=1.5))
    df = read_results(out)
    assert list(df.run_id) == ["r1", "r2"] and list(df.value) == [76.04, 1.5]


def test_3_a_long_torn_tail_removes_only_itself(out):
    append_rows(out, _rows("r1", n=3))
    good = out.read_bytes()
    with open(out, "ab") as f:  # a dead writer left 2 MiB of an unterminated quoted note
        f.write(b'r9,2026,0.1,s,test_time,continual,a,{},m,0,cpu,error,,,run_failed,nan,"')
        f.write(b"x" * (2 << 20))
    append_rows(out, _rows("r2"))
    assert out.read_bytes().startswith(good)
    assert list(read_results(out).run_id) == ["r1"] * 3 + ["r2"]


def test_4_site_never_writes_over_its_input_and_its_csv_reads_back(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    rows = _rows("ok", strategy="a") + _rows("bad", strategy="b", row_type="error", value=None)
    append_rows(site / "results.csv", rows)
    before = (site / "results.csv").read_bytes()
    res = _cli("leaderboard", "build", "--site", str(site), "--results", str(site / "results.csv"))
    assert res.exit_code == 0, res.output
    assert (site / "results.csv").read_bytes() == before  # same rows: left as it is
    other = tmp_path / "other.csv"
    append_rows(other, _rows("new", strategy="c"))
    res = _cli(
        "leaderboard",
        "build",
        "--site",
        str(site),
        "--results",
        str(site / "results.csv"),
        "--results",
        str(other),
    )
    assert "would be overwritten" in _one_line_error(res)
    assert (site / "results.csv").read_bytes() == before
    published = tmp_path / "pub"
    assert (
        _cli("leaderboard", "build", "--site", str(published), "--results", str(other)).exit_code
        == 0
    )
    build_site(load([site / "results.csv"]), published)
    res = _cli("leaderboard", "--results", str(published / "results.csv"), "--format", "json")
    assert res.exit_code == 0, res.output  # error rows (NaN values) read back
    assert [r["strategy"] for r in json.loads(res.output)] == ["a"]


def test_5_every_stream_gets_its_own_page(tmp_path):
    names = ["a/b", "a b", "a_b", "a_b ", "数据流", "поток", "ストリーム", "s"]
    rows = [r for i, n in enumerate(names) for r in _rows(f"r{i}", stream=n)]
    append_rows(tmp_path / "r.csv", rows)
    files = build_site(load([tmp_path / "r.csv"]), tmp_path / "site")
    pages = sorted((tmp_path / "site" / "streams").glob("*.html"))
    assert len(pages) == len(names) == len([f for f in files if "streams" in f.parts])
    assert slug("a_b") != slug("a_b ") and slug("a_b") == slug("a_b")  # unique and stable
    for n in names:
        assert n in (tmp_path / "site" / "streams" / f"{slug(n)}.html").read_text()


def test_6_bench_out_on_a_foreign_file_deletes_nothing(tmp_path):
    foreign = tmp_path / "thesis.tex"
    foreign.write_text("\\documentclass{article}\n")
    res = _cli("bench", "--strategy", "source", "--seeds", "1", "--out", str(foreign))
    assert "not a cladapt results CSV" in _one_line_error(res)
    assert foreign.read_text() == "\\documentclass{article}\n"


# ---------------------------------------------------------------- wrong results
def test_7_a_truncated_last_row_is_dropped_with_a_warning(out):
    append_rows(out, _rows("r1") + _rows("r2"))
    text = out.read_text()
    out.write_text(text[: text.rindex("76.04") + 1])  # "...,mean_error,7": value cut, no note
    with pytest.warns(ResultsWarning, match="torn last row"):
        df = read_results(out)
    assert list(df.run_id) == ["r1"] and 7.0 not in set(df.value)
    res = _cli("leaderboard", "--results", str(out), "--format", "json")
    assert res.exit_code == 0 and "warning:" in res.output


def test_7b_a_malformed_middle_row_is_an_error_naming_the_line(out):
    append_rows(out, _rows("r1") + _rows("r2"))
    lines = out.read_text().splitlines(keepends=True)
    lines[1] = lines[1].rstrip("\n") + ",extra\n"
    out.write_text("".join(lines))
    assert "line 2: 18 fields" in _one_line_error(_cli("leaderboard", "--results", str(out)))


def test_8_test_time_divergence_is_an_error_row_not_a_score(catalog, out):
    class Poison:  # parameters turn NaN after the first batch (e.g. an fp16 overflow)
        @hookimpl(hookwrapper=True)
        def cladapt_adapt(self, run, batch):
            yield
            with torch.no_grad():
                run.optimizer.param_groups[0]["params"][0].fill_(float("nan"))

    spec = RunSpec("digits-shift", "tent", out=out, device="cpu", run_plugins=(Poison(),))
    with pytest.raises(DivergenceError, match="NaN/inf"):
        execute(spec, catalog)
    df = read_results(out)
    assert "summary" not in set(df.row_type) and df.row_type.iloc[-1] == "error"
    res = _cli(
        "run", "-s", "digits-shift", "-a", "tent", "--set", "lr=inf", "-q", "--out", str(out)
    )
    assert "must be a finite number" in _one_line_error(res)


def _start_run(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cladapt.cli", "run", "-s", "digits", "-a", "finetune"]
        + ["--set", "epochs=40", "-q", "--out", str(out), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=out.parent,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_rows(out: Path, proc: subprocess.Popen, rows: int = 6) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and not (out.exists() and out.read_text().count("\n") >= rows):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    assert out.read_text().count("\n") >= rows, "the run wrote no rows in time"


def test_9_sigterm_writes_an_error_row_and_killed_runs_are_incomplete(tmp_path):
    out = tmp_path / "r.csv"
    proc = _start_run(out)
    _wait_for_rows(out, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in stderr, stderr
    df = read_results(out)
    assert df.row_type.iloc[-1] == "error" and "SIGTERM" in df.note.iloc[-1]
    killed = tmp_path / "k.csv"
    proc = _start_run(killed)
    _wait_for_rows(killed, proc)
    proc.kill()
    proc.communicate(timeout=60)
    build_site(load([killed]), tmp_path / "site")
    page = next((tmp_path / "site" / "streams").glob("*.html")).read_text()
    assert ">incomplete<" in page and ">ok<" not in page


@pytest.mark.parametrize(
    "args",
    [
        ["-s", "digits", "-a", "finetune", "--set", "epochs=-1"],
        ["-s", "digits", "-a", "finetune", "--set", "iterations=-1"],
        ["-s", "digits", "-a", "finetune", "--set", "batch_size=-5"],
        ["-s", "digits", "-a", "finetune", "--set", "batch_size=0"],
        ["-s", "digits", "-a", "finetune", "--set", "eval_batch_size=0"],
        ["-s", "digits", "-a", "finetune", "--set", "check_every=0"],
        ["-s", "digits", "-a", "finetune", "--set", "lr=-0.1"],
        ["-s", "digits", "-a", "finetune", "--set", "lr=nan"],
        ["-s", "digits", "-a", "finetune", "--set", "label_smoothing=1"],
        ["-s", "digits-shift", "-a", "tent", "--set", "batch_size=-1"],
        ["-s", "digits", "-a", "finetune", "--seed", "-1"],
        ["-s", "digits", "-a", "finetune", "--seed", str(2**32)],
        ["-s", "digits", "-a", "finetune", "--pretrained", "weights.bin"],
    ],
)
def test_10_invalid_values_fail_before_any_row(tmp_path, args):
    out = tmp_path / "r.csv"
    res = _cli("run", *args, "-q", "--out", str(out))
    assert res.exit_code == 2, res.output
    assert not out.exists()


def test_10b_every_builtin_numeric_parameter_declares_a_range(catalog):
    from cladapt.config import unranged_numbers
    from cladapt.protocols import PROTOCOLS

    configs = [e.factory.Config for e in [*catalog.strategies, *catalog.strategies.regularizers]]
    configs += [p.Config for p in PROTOCOLS.values()]
    missing = {c.__name__: unranged_numbers(c) for c in configs if unranged_numbers(c)}
    assert missing == {}


def test_10c_cifar_c_labels_outside_the_classes_are_an_error(tmp_path, catalog):
    _write_cifar_c(tmp_path, labels=np.full(30, 12, np.int64))
    with pytest.raises(DataError, match=r"labels must be in 0\.\.9"):
        catalog.streams.get("cifar10-c").factory(data_root=str(tmp_path))


def test_11_sweep_recognises_finished_runs_with_boolean_sets(tmp_path):
    out = tmp_path / "r.csv"
    args = ["sweep", "--stream", "digits-shift", "--strategy", "source", "--seeds", "1"]
    args += ["--set", "shuffle=false", "--backend", "sequential", "--out", str(out)]
    assert _cli(*args).exit_code == 0
    again = _cli(*args)
    assert again.exit_code == 0 and "1 skipped" in again.output
    assert read_results(out).run_id.nunique() == 1


# ---------------------------------------------------------------- terminal and exports
def test_12_markup_in_names_prints_as_text():
    from markup_plugin import MARKUP_NAME

    res = _cli("list", "strategies", "--plugin", "markup_plugin")
    assert res.exit_code == 0, res.output
    assert MARKUP_NAME in res.output and "[link=http://evil]click[/link]" in res.output
    res = _cli("describe", MARKUP_NAME, "--plugin", "markup_plugin")
    assert res.exit_code == 0 and MARKUP_NAME in res.output


def test_12b_markup_in_csv_names_prints_as_text(out):
    append_rows(out, _rows(strategy="[bold red]x[/] [/oops]", stream="[blink]s[/blink]"))
    res = _cli("leaderboard", "--results", str(out))
    assert res.exit_code == 0, res.output
    assert "[bold red]x[/] [/oops]" in res.output and "[blink]s[/blink]" in res.output


def test_13_escape_sequences_from_a_csv_never_reach_the_terminal(out):
    append_rows(out, _rows(strategy="evil\x1b]0;pwned\x07\x1b[31mred\x9b2J"))
    res = _cli("leaderboard", "--results", str(out))
    assert res.exit_code == 0 and "\x1b" not in res.output and "\x07" not in res.output
    # whole sequences go (not only their ESC, which would leave "]0;pwned[31m" in the name)
    assert "\x9b" not in res.output and "evilred2J" in res.output


def test_14_formulas_are_neutralised_in_exports_and_round_trip(tmp_path, out):
    append_rows(out, _rows(strategy="=cmd|' /C calc'!A0", stream="@SUM(1)", value=-1.5))
    res = _cli("leaderboard", "--results", str(out), "--format", "csv")
    assert "'=cmd" in res.output and "'@SUM(1)" in res.output and ",=cmd" not in res.output
    raw = out.read_text()
    assert ",'=cmd" in raw and ",'@SUM(1)" in raw and ",-1.5," in raw  # numbers untouched
    df = read_results(out)
    assert df.strategy.iloc[0] == "=cmd|' /C calc'!A0" and df.value.iloc[0] == -1.5
    build_site(df, tmp_path / "site")
    assert ",'=cmd" in (tmp_path / "site" / "results.csv").read_text()
    back = read_results(tmp_path / "site" / "results.csv")
    assert back.strategy.iloc[0] == "=cmd|' /C calc'!A0"
    append_rows(out, _rows("r2", strategy="<script>alert(1)</script>"))
    md = _cli("leaderboard", "--results", str(out), "--format", "md").output
    assert "<script>" not in md and "&lt;script&gt;" in md


def test_15_long_names_and_failed_builds_never_leave_a_half_written_site(tmp_path, monkeypatch):
    from cladapt.leaderboard import site as site_module

    long_name = "x" * 300
    append_rows(tmp_path / "r.csv", _rows("r1", stream=long_name) + _rows("r2", stream="s"))
    site = tmp_path / "site"
    files = build_site(load([tmp_path / "r.csv"]), site)
    assert all(len(f.name) < 100 for f in files)
    before = {p: p.read_bytes() for p in site.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(site_module, "breakdowns", broken)
    with pytest.raises(OSError):
        build_site(load([tmp_path / "r.csv"]), site)
    after = {p: p.read_bytes() for p in site.rglob("*") if p.is_file()}
    assert after == before
    leftovers = [p for p in [*tmp_path.iterdir(), *site.iterdir()] if ".cladapt-build-" in p.name]
    assert not leftovers


def test_16_repeated_ctrl_c_never_prints_a_traceback(tmp_path):
    out = tmp_path / "r.csv"
    proc = _start_run(out)
    _wait_for_rows(out, proc)
    for _ in range(3):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.02)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted")


# ---------------------------------------------------------------- messages
@pytest.mark.parametrize(
    "content, message",
    [
        (None, "fields, expected 17"),
        (b"\xff\xfe bad bytes", "not UTF-8"),
        (b"", "is empty"),
    ],
)
def test_corrupt_results_files_are_one_line_errors(out, content, message):
    if content is None:
        append_rows(out, _rows("r1") + _rows("r2"))
        lines = out.read_text().splitlines(keepends=True)
        out.write_text(lines[0] + lines[1].rstrip("\n") + ",x,y\n" + lines[2])
    else:
        out.write_bytes(content)
    assert message in _one_line_error(_cli("leaderboard", "--results", str(out)))


def _write_cifar_c(root, images=None, labels=None):
    d = root / "CIFAR-10-C"
    d.mkdir(parents=True, exist_ok=True)
    np.save(d / "labels.npy", np.arange(30) % 10 if labels is None else labels)
    for name in CORRUPTIONS:
        np.save(
            d / f"{name}.npy", np.zeros((30, 32, 32, 3), np.uint8) if images is None else images
        )
    return d


@pytest.mark.parametrize(
    "images, labels, message",
    [
        (None, np.arange(10), "has 10 labels for the 30 images"),
        (None, np.array([object()] * 30, dtype=object), "not a numeric .npy"),
        (np.zeros((30, 32, 32, 3)), None, "expected uint8 pixels"),
        ("text", None, "not a numeric .npy"),
    ],
)
def test_bad_cifar_c_files_are_one_line_errors(tmp_path, images, labels, message):
    d = _write_cifar_c(tmp_path, None if isinstance(images, str) else images, labels)
    if isinstance(images, str):
        (d / "gaussian_noise.npy").write_text("not numpy at all")
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, SmallCNN().state_dict(), {})
    res = _cli(
        "run",
        "-s",
        "cifar10-c",
        "-a",
        "source",
        "-q",
        "--data-root",
        str(tmp_path),
        "--checkpoint",
        str(ckpt),
        "--model",
        "small-cnn",
        "--out",
        str(tmp_path / "r.csv"),
    )
    line = _one_line_error(res)
    assert message in line and "--checkpoint" not in line
    assert not (tmp_path / "r.csv").exists()


def test_checkpoint_errors_keep_the_real_reason(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("these are my notes, not weights\n" * 20)
    with pytest.raises(DataError, match="not a PyTorch checkpoint") as err:
        load_checkpoint(text)
    assert "\n" not in str(err.value)
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": os.system}, evil)
    with pytest.raises(DataError) as err:
        load_checkpoint(evil)
    assert "posix.system" in str(err.value)  # what torch refused, not only that it refused
    assert "weights_only" not in str(err.value)  # nor torch's advice to turn the check off


def test_a_corrupt_cached_source_model_is_rebuilt(tmp_path, monkeypatch, catalog):
    from cladapt.models.source import SourceRecipe, source_checkpoint_path

    monkeypatch.setenv("CLADAPT_CACHE", str(tmp_path / "cache"))
    stream = catalog.streams.get("digits-shift").factory()
    recipe = SourceRecipe(epochs=1)
    path = source_checkpoint_path(stream, "small-cnn", recipe)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated by a full disk")
    from cladapt.models.source import get_source_model

    with pytest.warns(UserWarning, match="unusable.*rebuilding"):
        model = get_source_model(stream, "small-cnn", SmallCNN, torch.device("cpu"), recipe)
    assert isinstance(model, SmallCNN)
    load_checkpoint(path)  # a good file now


def test_out_dev_null_creates_no_lock(catalog):
    if not os.access("/dev", os.W_OK):
        pytest.skip("/dev is not writable here, so a lock could not be created anyway")
    execute(RunSpec("digits-shift", "source", out=Path(os.devnull), device="cpu"), catalog)
    assert not Path("/dev/null.lock").exists()


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody may write into, root included: root ignores permission bits, but not
    the immutable attribute (ext4's ``chattr +i``)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.getuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip(
            "running as root on a file system without chattr +i: cannot make a "
            "folder read-only for root"
        )
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_read_only_out_folder_fails_at_once(read_only_folder):
    tic = time.perf_counter()
    res = _cli(
        "run", "-s", "digits", "-a", "finetune", "-q", "--out", str(read_only_folder / "r.csv")
    )
    assert "not writable" in _one_line_error(res)
    assert time.perf_counter() - tic < 10 and not (read_only_folder / "r.csv").exists()
