"""Strategies and streams that misbehave on purpose: a results file and a leaderboard must come
out of each of them honest (an error row, a one-line message), never with a score."""

from __future__ import annotations

import sys
import time

from cladapt.plugins.tta import Tent
from torch.utils.data import TensorDataset

from cladapt.hookspecs import hookimpl
from cladapt.stream import Experience, Stream


class DescribeOverwrites(Tent):
    name = "test-describe-overwrites"

    @hookimpl
    def cladapt_describe(self, run):
        return {"mean_error": 0.0}


class DescribeList(Tent):
    name = "test-describe-list"

    @hookimpl
    def cladapt_describe(self, run):
        return [("extra", 1.0)]


class TeardownRaises(Tent):
    name = "test-teardown-raises"

    @hookimpl
    def cladapt_teardown(self, run, status):
        raise RuntimeError("teardown failed")


class Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no message")


class RaisesUnprintable(Tent):
    name = "test-unprintable"

    @hookimpl
    def cladapt_before_experience(self, run, experience):
        raise Unprintable()


class CallsExit(Tent):
    name = "test-sys-exit"

    @hookimpl
    def cladapt_before_experience(self, run, experience):
        sys.exit(0)


class SwallowsSignals(Tent):
    """Sleeps in every batch under a bare ``except:`` (which catches KeyboardInterrupt)."""

    name = "test-swallow"

    @hookimpl
    def cladapt_adapt(self, run, batch):
        try:  # noqa: SIM105 - the misbehaviour under test
            time.sleep(0.05)
        except:  # noqa: E722
            pass
        return run.hook.cladapt_predict(run=run, batch=batch)


class Unstoppable(Tent):
    """Loops forever under a bare ``except:`` once the second domain starts: only a second
    signal can end it."""

    name = "test-unstoppable"

    @hookimpl
    def cladapt_before_experience(self, run, experience):
        if run.experience_index == 1:
            while True:
                try:  # noqa: SIM105 - the misbehaviour under test
                    time.sleep(0.1)
                except:  # noqa: E722
                    pass


def _tta_stream(label: str, sizes: tuple[int, ...]) -> Stream:
    """Domains cut from the digits test split, with digits-shift's source (its shipped model)."""
    from cladapt.data.digits import digits_split

    train, test = digits_split()
    x, y = test.tensors
    domains = [
        Experience(f"d{i}", "domain", test=TensorDataset(x[:n], y[:n])) for i, n in enumerate(sizes)
    ]
    return Stream(
        label,
        "test_time",
        domains,
        [str(i) for i in range(10)],
        tuple(x.shape[1:]),
        source=Experience("clean", "domain", train=train, test=test, classes=list(range(10))),
        source_id="digits-clean-v1",
        defaults={"batch_size": 64, "model": "small-cnn"},
    )


@hookimpl
def cladapt_register_strategies(registry):
    for cls in (
        DescribeOverwrites,
        DescribeList,
        TeardownRaises,
        RaisesUnprintable,
        CallsExit,
        SwallowsSignals,
        Unstoppable,
    ):
        registry.add(cls)


@hookimpl
def cladapt_register_streams(registry):
    registry.add(
        "test-empty-domain",
        lambda data_root=None, seed=0: _tta_stream("test-empty-domain", (64, 0)),
        protocol="test_time",
    )
    registry.add(  # files its rows under another stream's name
        "test-spoof",
        lambda data_root=None, seed=0: _tta_stream("digits-shift", (64,)),
        protocol="test_time",
    )
