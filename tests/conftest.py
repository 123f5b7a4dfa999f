from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# One cache for the whole session: the digits source model is trained once (~15 s on a CPU).
_CACHE = Path(
    os.environ.get(
        "CLADAPT_TEST_CACHE", Path(__file__).resolve().parent.parent / ".pytest_cache" / "cladapt"
    )
)
os.environ["CLADAPT_CACHE"] = str(_CACHE)

# the leaderboard's rows are one-thread CPU runs, and a run at N > 1 threads is another
# configuration ([threads=N]): tests run their in-process runs as the leaderboard does
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def catalog():
    from cladapt.manager import load_catalog

    return load_catalog()


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "results.csv"


@pytest.fixture
def run_cli(tmp_path):
    """Run the real console entry point in a subprocess; returns CompletedProcess."""
    import subprocess

    def _run(*args: str, env: dict | None = None, cwd: Path | None = None):
        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "cladapt.cli", *args],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=cwd or tmp_path,
            timeout=600,
        )

    return _run
