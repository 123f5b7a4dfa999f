"""A run under misuse: hostile plugins, absurd learning rates, wrong logits, swallowed signals.
Nothing divergent, empty or mislabelled may be scored; every failure is an error row and one
line, never a traceback or a silent exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cladapt.cli import main
from cladapt.errors import CladaptError, ConfigError, DataError, DivergenceError
from cladapt.hookspecs import hookimpl
from cladapt.manager import load_catalog
from cladapt.results import read_results
from cladapt.runner import RunSpec, execute

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def hostile():
    return load_catalog(["hostile_plugins"])


def _only_an_error_row(out: Path, match: str) -> None:
    df = read_results(out)
    assert "summary" not in set(df.row_type), df[df.row_type == "summary"]
    assert df.row_type.iloc[-1] == "error" and match in df.note.iloc[-1], df.note.iloc[-1]


def _wrapper(hook: str, make):
    cls = type("Wrap", (), {hook: hookimpl(hookwrapper=True)(_wrap_with(make))})
    return cls()


def _wrap_with(make):
    def wrapped(self, run, batch):
        outcome = yield
        outcome.force_result(make(outcome.get_result()))

    return wrapped


@pytest.mark.parametrize(
    "make, what",
    [
        (lambda z: z[:1], "(1, 10)"),  # [1, C] would broadcast against the labels
        (lambda z: torch.cat([z, z[:, :5]], 1), "(64, 15)"),
    ],
)
@pytest.mark.parametrize(
    "stream, strategy, hook",
    [
        ("digits-shift", "tent", "cladapt_adapt"),
        ("digits", "finetune", "cladapt_predict"),
    ],
)
def test_logits_of_the_wrong_shape_are_never_scored(
    catalog, out, make, what, stream, strategy, hook
):
    sets = {"epochs": "1"} if stream == "digits" else {}
    spec = RunSpec(
        stream, strategy, sets, out=out, device="cpu", run_plugins=(_wrapper(hook, make),)
    )
    with pytest.raises(DivergenceError, match="returned logits of shape"):
        execute(spec, catalog)
    _only_an_error_row(out, "expected (")


@pytest.mark.parametrize(
    "stream, strategy", [("digits", "finetune"), ("digits-uda", "source-only")]
)
def test_nan_logits_in_evaluation_are_never_scored(catalog, out, stream, strategy):
    nan = _wrapper("cladapt_predict", lambda z: z * float("nan"))
    sets = {"epochs": "1"}
    spec = RunSpec(stream, strategy, sets, out=out, device="cpu", run_plugins=(nan,))
    with pytest.raises(DivergenceError, match="NaN/inf"):
        execute(spec, catalog)
    _only_an_error_row(out, "NaN/inf")


@pytest.mark.parametrize("strategy", ["tent", "sar"])
def test_an_absurd_learning_rate_fails_before_any_row(out, strategy):
    res = CliRunner().invoke(
        main, ["run", "-s", "digits-shift", "-a", strategy, "--set", "lr=1e30", "--out", str(out)]
    )
    assert res.exit_code == 2 and "lr=1e+30: out of range" in res.output, res.output
    assert not out.exists()


def test_a_learning_rate_beyond_its_optimizer_is_refused_at_setup(catalog, out):
    spec = RunSpec("digits-shift", "tent", {"optimizer": "adam", "lr": "5"}, out=out, device="cpu")
    with pytest.raises(ConfigError, match="outside the sane range of Adam"):
        execute(spec, catalog)


def test_a_collapse_to_one_class_is_an_error_row(catalog, out):
    one_class = _wrapper(
        "cladapt_adapt", lambda z: torch.zeros_like(z).index_fill_(1, torch.tensor([3]), 1.0)
    )
    spec = RunSpec("digits-shift", "tent", out=out, device="cpu", run_plugins=(one_class,))
    with pytest.raises(
        DivergenceError, match="collapsed: all .* predictions on 'gaussian_noise' were class 3"
    ):
        execute(spec, catalog)
    _only_an_error_row(out, "collapsed")


def test_the_same_constant_prediction_without_adaptation_is_a_result(catalog, out):
    """A model that does not adapt (no optimizer) and predicts one class is a poor source model,
    not a diverged run: it is scored."""
    one_class = _wrapper(
        "cladapt_adapt", lambda z: torch.zeros_like(z).index_fill_(1, torch.tensor([3]), 1.0)
    )
    spec = RunSpec("digits-shift", "source", out=out, device="cpu", run_plugins=(one_class,))
    assert execute(spec, catalog).summary["mean_error"] > 80


class Explodes:
    """Multiplies the adapted parameters by 10 after every batch (finite for a long time)."""

    @hookimpl(hookwrapper=True)
    def cladapt_adapt(self, run, batch):
        yield
        with torch.no_grad():
            for p in run.optimizer.param_groups[0]["params"]:
                p.mul_(10.0)


def test_exploding_parameters_are_an_error_row(catalog, out):
    spec = RunSpec("digits-shift", "tent", out=out, device="cpu", run_plugins=(Explodes(),))
    with pytest.raises(DivergenceError, match="parameters grew from norm"):
        execute(spec, catalog)
    _only_an_error_row(out, "grew")


def test_a_domain_without_test_images_is_refused_before_any_row(hostile, out):
    with pytest.raises(DataError, match="'d1': no test images to score"):
        execute(RunSpec("test-empty-domain", "tent", out=out, device="cpu"), hostile)
    assert not out.exists()


def test_a_stream_builder_cannot_file_rows_under_another_name(hostile, out):
    with pytest.raises(ConfigError, match="returned a stream named 'digits-shift'"):
        execute(RunSpec("test-spoof", "tent", out=out, device="cpu"), hostile)
    assert not out.exists()


@pytest.mark.parametrize(
    "strategy, message",
    [
        (
            "test-describe-overwrites",
            "returned 'mean_error', a metric or column the harness measures",
        ),
        ("test-describe-list", "returned a list, expected a dict"),
        ("test-teardown-raises", "RuntimeError: teardown failed"),
        ("test-unprintable", "<Unprintable whose message could not be printed>"),
        ("test-sys-exit", "a plugin called sys.exit(0)"),
    ],
)
def test_a_failing_plugin_is_an_error_row_and_one_line(hostile, out, strategy, message):
    with pytest.raises((CladaptError, Exception)):
        execute(RunSpec("digits-shift", strategy, out=out, device="cpu"), hostile)
    _only_an_error_row(out, message)
    res = subprocess.run(
        [sys.executable, "-m", "cladapt.cli", "run", "-s", "digits-shift", "-a", strategy]
        + ["--plugin", "hostile_plugins", "-q", "--out", str(out.with_name("cli.csv"))],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        timeout=300,
    )
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: ")
    _only_an_error_row(out.with_name("cli.csv"), message)


def _start(out: Path, strategy: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cladapt.cli", "run", "-s", "digits-c", "-a", strategy]
        + ["--plugin", "hostile_plugins", "-q", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_a_row(out: Path, proc: subprocess.Popen) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and not (out.exists() and out.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


def test_a_swallowed_ctrl_c_stops_the_run_at_the_next_batch(out):
    proc = _start(out, "test-swallow")
    _wait_for_a_row(out, proc)
    tic = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert time.monotonic() - tic < 20
    _only_an_error_row(out, "interrupted")


def test_a_second_signal_ends_a_run_that_swallows_the_first(out):
    proc = _start(out, "test-unstoppable")
    _wait_for_a_row(out, proc)
    time.sleep(0.5)  # inside the endless loop of the second domain
    proc.send_signal(signal.SIGINT)
    time.sleep(3)
    assert proc.poll() is None  # swallowed, and no hook is called again
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "terminated at once" in stderr
    assert "summary" not in set(read_results(out).row_type)


def test_pretrained_is_validated_before_any_preparation(monkeypatch, out):
    import cladapt.models.letters_pretrain as letters

    def prepared(*args, **kwargs):
        raise AssertionError("the one-off pre-training started")

    monkeypatch.setattr(letters, "ensure_pretrained", prepared)
    res = CliRunner().invoke(
        main,
        ["run", "-s", "digits", "-a", "finetune", "--pretrained", "/etc/passwd", "--out", str(out)],
    )
    assert res.exit_code == 2 and "only applies to open_clip models" in res.output, res.output
