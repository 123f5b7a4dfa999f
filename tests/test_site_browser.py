"""The generated site in a real headless Chromium: sorting by clicking a header, and a strategy
named with a <script> tag rendered as text (never executed)."""

import shutil
from pathlib import Path

import pytest

from cladapt.leaderboard.aggregate import load
from cladapt.leaderboard.site import build_site, slug
from cladapt.results import append_rows

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
XSS = "<script>window.__xss = 1; alert(1)</script>"

playwright = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian's chromium is not installed (apt-get install chromium chromium-driver)",
)


@pytest.fixture
def site(tmp_path):
    from test_leaderboard import summary_rows

    rows = []
    for name, err, speed in (("alpha", 30.0, 50.0), ("beta", 10.0, 900.0), (XSS, 20.0, 7.0)):
        rows += summary_rows(
            f"run-{err}", name, 0, {"mean_error": err, "images_per_s": speed, "wall_time_s": 1.0}
        )
    append_rows(tmp_path / "r.csv", rows)
    build_site(load([tmp_path / "r.csv"]), tmp_path / "site")
    return tmp_path / "site"


@pytest.fixture
def page():
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        pg = browser.new_page()
        dialogs = []
        pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        pg.dialogs = dialogs
        yield pg
        browser.close()


def strategies(page):
    return page.locator("#leaderboard tbody td.strategy").all_text_contents()


def test_sorting_by_clicking_headers(site, page):
    page.goto((site / "streams" / f"{slug('s1')}.html").as_uri())
    assert strategies(page) == ["beta", XSS, "alpha"]  # built sorted by mean error
    header = page.locator("#leaderboard th[data-metric='images_per_s']")
    header.click()
    assert strategies(page) == [XSS, "alpha", "beta"]  # ascending images/s: 7, 50, 900
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert strategies(page) == ["beta", "alpha", XSS]
    page.locator("#leaderboard th", has_text="strategy").click()
    assert strategies(page) == sorted(["alpha", "beta", XSS], key=str)


def test_script_in_a_strategy_name_is_text(site, page):
    page.goto((site / "streams" / f"{slug('s1')}.html").as_uri())
    assert XSS in strategies(page)
    assert page.evaluate("window.__xss") is None
    assert page.dialogs == []
    page.goto((site / "index.html").as_uri())
    page.locator("a", has_text="s1").click()
    assert page.url.endswith(f"streams/{slug('s1')}.html")
