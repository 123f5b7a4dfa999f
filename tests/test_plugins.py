"""Plugins: built-ins register like third-party ones; entry points and --plugin modules work."""

import textwrap

import pytest

from cladapt.errors import CladaptError
from cladapt.manager import BUILTIN_PLUGINS, load_catalog
from cladapt.results import read_results

PLUGIN_SOURCE = textwrap.dedent(
    '''
    from dataclasses import dataclass

    from cladapt.config import param
    from cladapt.hookspecs import hookimpl
    from cladapt.strategy import Strategy


    @dataclass
    class Cfg:
        calls_seen: int = param(0, "written back by the strategy")


    class CountingSource(Strategy):
        """Third-party test strategy: counts adapt calls, predicts like the source model."""

        name = "demo-counting"
        protocols = ("test_time",)
        Config = Cfg

        @hookimpl
        def cladapt_setup(self, run):
            run.state["demo_calls"] = 0

        @hookimpl
        def cladapt_adapt(self, run, batch):
            assert batch.y is None, "test-time strategies must not see labels"
            run.state["demo_calls"] += 1
            return run.hook.cladapt_predict(run=run, batch=batch)

        @hookimpl
        def cladapt_describe(self, run):
            return {"demo_calls": run.state["demo_calls"]}


    @hookimpl
    def cladapt_register_strategies(registry):
        registry.add(CountingSource)
    '''
)


def make_plugin_package(root, module="cladapt_demo_plugin", dist="cladapt_demo_plugin-0.1"):
    """A real installed distribution on a path: a module plus a dist-info with an entry point
    in group 'cladapt', exactly what `pip install` leaves behind."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(PLUGIN_SOURCE)
    info = root / f"{dist}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: cladapt-demo-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(f"[cladapt]\ndemo = {module}\n")
    return root


def test_builtins_register_through_the_plugin_path():
    # without the entry points of whatever third-party plugins this environment has installed
    catalog = load_catalog(entry_points=False)
    origins = {e.origin for e in catalog.strategies} | {e.origin for e in catalog.streams}
    assert origins == set(BUILTIN_PLUGINS) - {"cladapt.plugins.models"}
    assert {"finetune", "source", "bn-adapt"} <= set(catalog.strategies.names())
    assert {"digits", "digits-shift", "digits-uda"} <= set(catalog.streams.names())


def test_entry_point_plugin_runs_end_to_end(tmp_path, run_cli):
    pkg = make_plugin_package(tmp_path / "site")
    env = {"PYTHONPATH": str(pkg)}
    listed = run_cli("list", "strategies", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "demo-counting" in listed.stdout and "demo" in listed.stdout
    out = tmp_path / "r.csv"
    res = run_cli(
        "run",
        "--stream",
        "digits-shift",
        "--strategy",
        "demo-counting",
        "--out",
        str(out),
        "-q",
        env=env,
    )
    assert res.returncode == 0, res.stderr
    df = read_results(out)
    assert set(df.strategy) == {"demo-counting"}
    calls = df[(df.metric == "demo_calls")].value.item()
    assert calls == 5 * 9  # 5 domains x ceil(540 / 64) batches
    assert (
        "demo-counting" not in run_cli("list", "strategies").stdout
    )  # not installed without the path


def test_plugin_option_loads_a_module_for_one_run(tmp_path, monkeypatch):
    (tmp_path / "one_off_plugin.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert (
        "demo-counting" in load_catalog(["one_off_plugin"], entry_points=False).strategies.names()
    )
    with pytest.raises(CladaptError, match="cannot import --plugin module 'no_such_plugin_mod'"):
        load_catalog(["no_such_plugin_mod"])


def test_duplicate_names_are_reported_with_both_plugins(tmp_path, monkeypatch):
    (tmp_path / "dup_plugin.py").write_text(
        "from cladapt.hookspecs import hookimpl\n"
        "from cladapt.plugins.baselines import Finetune\n"
        "@hookimpl\n"
        "def cladapt_register_strategies(registry):\n"
        "    registry.add(Finetune)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        CladaptError, match="registered twice.*cladapt.plugins.baselines.*dup_plugin"
    ):
        load_catalog(["dup_plugin"], entry_points=False)


def test_a_broken_entry_point_is_named_in_one_line_and_skipped(tmp_path, run_cli):
    pkg = make_plugin_package(tmp_path / "site")
    (pkg / "cladapt_demo_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    res = run_cli("list", "strategies", env={"PYTHONPATH": str(pkg)})
    assert res.returncode == 0, res.stderr  # cladapt's own commands go on without it
    assert "warning: plugin 'demo' skipped" in res.stderr and "boom at import" in res.stderr
    assert "Traceback" not in res.stderr
    assert "finetune" in res.stdout
