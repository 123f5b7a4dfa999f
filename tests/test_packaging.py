"""A non-editable install (a built wheel) carries plugins/ and streams/ as cladapt.plugins and
cladapt.streams, claims no generic top-level name, and runs the embedded default."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_install_runs_embedded_stream(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheel_dir), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheel_dir.glob("cladapt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "cladapt/plugins/baselines.py" in names and "cladapt/streams/digits.toml" in names
    assert "cladapt/streams/prompts/mtil.toml" in names  # MTIL class names and templates
    shipped = [n for n in names if n.startswith("cladapt/models/shipped/")]
    assert "cladapt/models/shipped/manifest.json" in shipped and len(shipped) >= 5
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level == {"cladapt"}

    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    cache = tmp_path / "cache"  # a fresh machine's: the installed package's weights are used
    env = {**os.environ, "PYTHONPATH": str(target), "CLADAPT_CACHE": str(cache)}
    code = (
        "import cladapt, sys; assert cladapt.__file__.startswith(sys.argv[1]), cladapt.__file__;"
        "from cladapt.cli import main; sys.argv = ['cladapt'] + sys.argv[2:]; main()"
    )
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(target),
            "run",
            "-s",
            "digits-shift",
            "-a",
            "bn-adapt",
            "-q",
            "--out",
            str(tmp_path / "r.csv"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "mean_error" in res.stdout and (tmp_path / "r.csv").exists()
    assert not list(cache.glob("models/*.pt"))  # nothing was trained
