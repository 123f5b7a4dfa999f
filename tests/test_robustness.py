"""Failures keep completed results, never tear a row, and read as one line."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from cladapt.cli import main
from cladapt.errors import DataError, DivergenceError
from cladapt.manager import load_catalog
from cladapt.models.checkpoints import load_checkpoint, load_into, save_checkpoint
from cladapt.models.small_cnn import SmallCNN
from cladapt.results import read_results
from cladapt.runner import RunSpec, execute


@pytest.fixture(scope="module")
def extra_catalog():
    return load_catalog(["plugins_for_tests"])


def test_nan_loss_stops_the_run_with_an_error_row(extra_catalog, out):
    spec = RunSpec("digits", "test-nan", {"epochs": "1", "check_every": "5"}, out=out, device="cpu")
    with pytest.raises(DivergenceError, match="NaN"):
        execute(spec, extra_catalog)
    df = read_results(out)
    assert len(df[df.metric == "accuracy"]) == 5  # the initial evaluation was kept
    err = df[df.row_type == "error"]
    assert len(err) == 1 and "NaN" in err.note.item()
    assert "summary" not in set(df.row_type)


def test_nan_loss_on_the_cli_is_one_line(tmp_path):
    res = CliRunner().invoke(
        main,
        [
            "run",
            "-s",
            "digits",
            "-a",
            "test-nan",
            "--plugin",
            "plugins_for_tests",
            "--set",
            "epochs=1",
            "-q",
            "--out",
            str(tmp_path / "r.csv"),
        ],
    )
    assert res.exit_code != 0 and res.output.startswith("error: loss became NaN")
    assert len(res.output.strip().splitlines()) == 1


def test_interrupt_keeps_completed_evaluations(extra_catalog, out):
    with pytest.raises(KeyboardInterrupt):
        execute(
            RunSpec("digits", "test-interrupt", {"epochs": "1"}, out=out, device="cpu"),
            extra_catalog,
        )
    df = read_results(out)
    ev = df[df.metric == "accuracy"]
    assert sorted(set(ev.trained_upto)) == ["initial", "task0:01"] and len(ev) == 10
    assert df[df.row_type == "error"].note.item().startswith("interrupted")


def test_sigint_to_the_cli_keeps_rows_and_exits_130(tmp_path):
    out = tmp_path / "r.csv"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cladapt.cli",
            "run",
            "-s",
            "digits",
            "-a",
            "finetune",
            "--set",
            "epochs=40",
            "-q",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        # a shell's background jobs inherit an ignored SIGINT; give the child the default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 300
    while time.time() < deadline and not (out.exists() and out.read_text().count("\n") >= 11):
        time.sleep(0.1)
    assert out.read_text().count("\n") >= 11, "the run wrote no rows for its first task in time"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    df = read_results(out)
    acc = df[df.metric == "accuracy"]
    assert len(acc) >= 10 and len(acc) % 5 == 0  # whole rows of the accuracy matrix only
    assert df.iloc[-1].row_type == "error"
    assert out.read_text().endswith("\n")


def test_wrong_tensor_shape_is_a_data_error_before_any_row(extra_catalog, out):
    with pytest.raises(DataError, match=r"shape \(1, 28, 28\), expected \(3, 32, 32\)"):
        execute(RunSpec("test-wrong-shape", "finetune", out=out, device="cpu"), extra_catalog)
    assert not out.exists()


def test_uda_never_feeds_target_labels(extra_catalog, out):
    from plugins_for_tests import SENTINEL, BatchSpy

    spy = BatchSpy()
    execute(
        RunSpec("test-uda-leak", "finetune", out=out, device="cpu", run_plugins=(spy,)),
        extra_catalog,
    )
    labels = torch.cat(spy.labels)
    assert len(labels) > 0 and not (labels == SENTINEL).any()  # the target's sentinel never appears
    assert set(spy.target_sizes) == {32}  # every step had an unlabelled target batch


def test_episodic_resets_and_continual_does_not(extra_catalog, out):
    cont = execute(RunSpec("digits-shift", "test-drift", out=out, device="cpu"), extra_catalog)
    epi = execute(
        RunSpec("digits-shift", "test-drift", out=out, device="cpu", setting="episodic"),
        extra_catalog,
    )
    starts_c, starts_e = cont.run.state["bias_at_start"], epi.run.state["bias_at_start"]
    assert len(set(starts_e)) == 1  # every domain starts from the source model
    assert len(set(starts_c)) == 5 and starts_c[-1] > starts_c[0]
    assert (
        cont.result.tables["errors"]["gaussian_noise"]
        == epi.result.tables["errors"]["gaussian_noise"]
    )


def test_checkpoints_load_weights_only(tmp_path):
    model = SmallCNN()
    good = tmp_path / "good.pt"
    save_checkpoint(good, model.state_dict(), {"note": "ok"})
    other = SmallCNN()
    assert load_into(other, good) == {"note": "ok", "file": "good.pt"}  # meta names its file
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True)
    )

    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": model.state_dict(), "payload": os.system}, evil)  # a pickled callable
    with pytest.raises(DataError, match="cannot load checkpoint"):
        load_checkpoint(evil)

    wrong = tmp_path / "wrong.pt"
    save_checkpoint(wrong, SmallCNN(num_classes=3).state_dict(), {})
    with pytest.raises(DataError, match="does not fit the model"):
        load_into(SmallCNN(), wrong)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot load checkpoint"):
        load_checkpoint(tmp_path / "garbage.pt")


def test_user_checkpoint_is_the_source_model(tmp_path, out, catalog):
    ckpt = tmp_path / "source.pt"
    save_checkpoint(ckpt, SmallCNN().state_dict(), {})  # an untrained "source" model
    outcome = execute(
        RunSpec("digits-shift", "source", out=out, device="cpu", checkpoint=str(ckpt)), catalog
    )
    assert (
        outcome.summary["mean_error"] > 60
    )  # untrained: near chance, unlike the cached source model
    assert read_results(out).model.iloc[0].startswith("small-cnn@source.pt#")


def test_sigint_to_a_parallel_bench_stops_every_worker_with_its_rows(tmp_path):
    """Ctrl-C (here: to the bench process only, as SIGTERM would be) reaches both worker
    processes; each writes an ``interrupted`` error row under the rows it already computed."""
    out = tmp_path / "r.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cladapt.cli", "bench", "--stream", "digits-shift"]
        + ["--strategy", "cotta", "--strategy", "vida", "--seeds", "1", "--workers", "2"]
        + ["--out", str(out), "--site", str(tmp_path / "site")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )

    def runs_with_rows() -> int:
        return read_results(out).run_id.nunique() if out.exists() else 0

    deadline = time.time() + 300
    while time.time() < deadline and runs_with_rows() < 2:
        time.sleep(0.2)
    assert runs_with_rows() == 2, "both workers should have written domain rows by now"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    df = read_results(out)
    errors = df[df.row_type == "error"]
    assert set(errors.strategy) == {"cotta", "vida"}
    assert errors.note.str.startswith("interrupted").all()
    assert (df[df.row_type == "eval"].metric == "error").sum() >= 2
    assert out.read_text().endswith("\n")
