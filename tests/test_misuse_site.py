"""A site build under misuse: rebuilding from the published CSV, foreign files in the folder,
names that look like markup, another file system, a kill while files are moved."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from cladapt.errors import DataError
from cladapt.leaderboard import site as site_module
from cladapt.leaderboard.aggregate import load
from cladapt.leaderboard.site import build_site
from cladapt.results import COLUMNS, append_rows


def _rows(run: str, stream: str = "s", strategy: str = "a", setting: str = "continual"):
    row = {c: "" for c in COLUMNS}
    row.update(
        run_id=run,
        stream=stream,
        protocol="test_time",
        setting=setting,
        strategy=strategy,
        params_json="{}",
        seed=0,
        device="cpu",
        row_type="summary",
    )
    return [dict(row, metric="mean_error", value=10.0), dict(row, metric="wall_time_s", value=5.0)]


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not p.name.endswith(".lock")
    }


def test_rebuilding_from_the_published_csv_keeps_it(tmp_path):
    append_rows(tmp_path / "r.csv", _rows("r1"))
    site = tmp_path / "site"
    build_site(load([tmp_path / "r.csv"]), site)
    published = site / "results.csv"
    before = published.read_bytes()
    build_site(load([published]), site, inputs=[published])  # an input is never stale
    assert published.read_bytes() == before


def test_bench_out_inside_an_earlier_site_keeps_its_rows(tmp_path):
    site = tmp_path / "B"
    append_rows(tmp_path / "r.csv", _rows("r1"))
    build_site(load([tmp_path / "r.csv"]), site)  # B/results.csv: written by that build
    (site / "results.csv").unlink()  # bench moves it aside, then appends fresh rows
    append_rows(site / "results.csv", _rows("fresh"))
    build_site(load([site / "results.csv"]), site, inputs=[site / "results.csv"])
    assert set(load([site / "results.csv"]).run_id) == {"fresh"}


@pytest.mark.parametrize("name", ["index.html", "results.csv"])
def test_a_file_no_build_wrote_is_never_overwritten(tmp_path, name):
    append_rows(tmp_path / "exp.csv", _rows("r1"))
    site = tmp_path / "leaderboard"
    site.mkdir()
    (site / name).write_text("mine")
    with pytest.raises(DataError, match=f"holds files no cladapt build wrote \\({name}\\)"):
        build_site(load([tmp_path / "exp.csv"]), site, inputs=[tmp_path / "exp.csv"])
    assert (site / name).read_text() == "mine"
    assert _files(site) == {name: b"mine"}


def test_files_of_an_earlier_build_are_replaced(tmp_path):
    append_rows(tmp_path / "r.csv", _rows("r1"))
    site = tmp_path / "site"
    build_site(load([tmp_path / "r.csv"]), site)
    append_rows(tmp_path / "r.csv", _rows("r2", stream="t"))
    files = build_site(load([tmp_path / "r.csv"]), site)
    page = site / "streams" / f"{site_module.slug('t')}.html"
    assert page in files and page.exists()


def test_dollar_signs_in_names_are_text_in_plots(tmp_path):
    append_rows(tmp_path / "r.csv", _rows("r1", strategy="a$x$") + _rows("r2", strategy="b$"))
    append_rows(tmp_path / "r.csv", _rows("r3", strategy="c", setting="$\\frac{1}$"))
    build_site(load([tmp_path / "r.csv"]), tmp_path / "site")
    page = (tmp_path / "site" / "streams" / f"{site_module.slug('s')}.html").read_text()
    assert "a$x$" in page and "<svg" in page


def test_a_site_on_another_file_system_builds(tmp_path, monkeypatch):
    """``site`` as a mount point: a rename across its boundary fails with EXDEV, and the mount
    point itself cannot be renamed."""
    append_rows(tmp_path / "r.csv", _rows("r1"))
    site = (tmp_path / "mnt").resolve()
    site.mkdir()

    def inside(p) -> bool:
        return Path(p).resolve().is_relative_to(site)

    def guarded(real):
        def rename(src, dst):
            if Path(src).resolve() == site or inside(src) != inside(dst):
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            return real(src, dst)

        return rename

    monkeypatch.setattr(os, "rename", guarded(os.rename))
    monkeypatch.setattr(os, "replace", guarded(os.replace))
    build_site(load([tmp_path / "r.csv"]), site)
    assert (site / "index.html").exists()
    assert (site / "streams" / f"{site_module.slug('s')}.html").exists()


def test_a_build_killed_while_moving_files_is_completed_by_the_next(tmp_path, monkeypatch):
    append_rows(tmp_path / "r.csv", _rows("r1"))
    clean = tmp_path / "clean"
    site = tmp_path / "site"
    build_site(load([tmp_path / "r.csv"]), site)
    append_rows(tmp_path / "r.csv", _rows("r2", stream="t") + _rows("r3", strategy="b"))
    build_site(load([tmp_path / "r.csv"]), clean)

    real, moved = os.replace, []

    def dies(src, dst):  # SIGKILL after two files: nothing after it runs
        if len(moved) == 2:
            raise KeyboardInterrupt
        moved.append(dst)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", dies)
    with pytest.raises(KeyboardInterrupt):
        build_site(load([tmp_path / "r.csv"]), site)
    monkeypatch.setattr(os, "replace", real)
    assert (site / site_module.PENDING).is_dir()  # committed, not yet in place
    build_site(load([tmp_path / "r.csv"]), site)
    assert _files(site) == _files(clean)
    assert not [p for p in site.iterdir() if p.name.startswith(".cladapt-build-")]
