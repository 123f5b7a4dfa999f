"""The example plugin, as its users would run it (needs the package installed)."""

import subprocess
import sys


def _cladapt(*args):
    return subprocess.run(
        [sys.executable, "-m", "cladapt.cli", *args], capture_output=True, text=True, timeout=600
    )


def test_registered_through_the_entry_point():
    r = _cladapt("list", "strategies")
    assert r.returncode == 0 and "bn-ema" in r.stdout and "example" in r.stdout


def test_runs_and_beats_source(tmp_path):
    out = tmp_path / "r.csv"
    errors = {}
    for strategy in ("source", "bn-ema"):
        r = _cladapt(
            "run", "--stream", "digits-inverted", "--strategy", strategy, "--out", str(out), "-q"
        )
        assert r.returncode == 0, r.stderr
    import pandas as pd

    df = pd.read_csv(out)
    s = df[(df.row_type == "summary") & (df.metric == "mean_error")].set_index("strategy").value
    errors = s.to_dict()
    assert errors["bn-ema"] < errors["source"]
