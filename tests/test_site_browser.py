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


@pytest.fixture
def paper_site(tmp_path):
    """A site with a stream of each kind the papers' views cover."""
    import pandas as pd
    from test_site_views import mtil_rows, nevis_rows, row, tta_rows

    uda = []
    for strategy, err, oracle in (
        ("dann", 30.0, 0),
        ("source-only", 50.0, 0),
        ("target-oracle", 2.0, 1),
    ):
        run = f"uda-{strategy}"
        common = (run, "digits-uda", "uda", "default", strategy, 0)
        uda += [
            row(*common, "eval", "target_error", err, "digits-m", "digits-m"),
            row(*common, "eval", "source_accuracy", 97.0, "digits-m", "source"),
            row(*common, "summary", "target_error", err),
            row(*common, "summary", "source_accuracy", 97.0),
            row(*common, "summary", "wall_time_s", 3.0 + err),
            row(*common, "summary", "oracle", oracle),
        ]
    df = pd.concat([tta_rows(), mtil_rows(), nevis_rows(), pd.DataFrame(uda)])
    append_rows(tmp_path / "r.csv", df.to_dict("records"))
    build_site(load([tmp_path / "r.csv"]), tmp_path / "site")
    return tmp_path / "site"


def _table(page, selector):
    heads = page.locator(f"{selector} thead th").all_text_contents()
    labels = page.locator(f"{selector} tbody td.name").all_text_contents()
    return heads, [label.strip() for label in labels]


def _plot_has_axes(page):
    svg = page.locator("#tradeoff svg")
    assert svg.count() == 1 and svg.bounding_box()["width"] > 300
    texts = " ".join(page.locator("#tradeoff svg text").all_text_contents())
    return texts


def test_every_paper_view_renders(paper_site, page, tmp_path):
    shots = tmp_path / "screenshots"
    page.set_viewport_size({"width": 1280, "height": 900})

    page.goto((paper_site / "streams" / f"{slug('cifar10-c')}.html").as_uri())
    heads, labels = _table(page, "#corruptions-continual")
    assert heads[:3] == ["strategy", "gauss", "shot"] and heads[-1] == "mean" and len(heads) == 17
    assert labels == ["tent", "source"] and page.locator("#corruptions-gradual").count() == 1
    assert "Published numbers, not produced by cladapt" in page.locator("#published-1").inner_text()
    assert "wall time per run (s)" in _plot_has_axes(page)
    page.screenshot(path=str(shots / "cifar10-c.png"), full_page=True)

    page.goto((paper_site / "streams" / f"{slug('mtil')}.html").as_uri())
    heads, labels = _table(page, "#mtil-table")
    assert heads == ["strategy", "Aircraft", "Caltech101", "CIFAR100", "mean"]
    sections = page.locator("#mtil-table tr.section").all_text_contents()
    assert [s.strip() for s in sections] == ["Transfer", "Avg", "Last"]
    published = page.locator("#published-1").inner_text()
    assert "ZSCL" in published and "83.6" not in published.split("Last")[0]  # Last is below
    assert "training FLOPs" in _plot_has_axes(page)
    page.screenshot(path=str(shots / "mtil.png"), full_page=True)

    page.goto((paper_site / "streams" / f"{slug('nevis-mini')}.html").as_uri())
    heads, labels = _table(page, "#nevis-table")
    assert heads == ["strategy", "shapes", "digits-01", "textures", "mean"]
    assert labels == ["joint", "finetune"]
    assert "error after learning %" in _plot_has_axes(page)
    page.screenshot(path=str(shots / "nevis-mini.png"), full_page=True)

    page.goto((paper_site / "streams" / f"{slug('digits-uda')}.html").as_uri())
    heads, labels = _table(page, "#uda-table")
    assert heads == ["strategy", "digits-uda → digits-m", "mean target", "mean source"]
    assert labels == ["dann", "source-only", "target-oracle (oracle)"]
    assert "target error %" in _plot_has_axes(page)
    page.screenshot(path=str(shots / "digits-uda.png"), full_page=True)

    page.goto((paper_site / "index.html").as_uri())
    assert page.locator("#uda-table tbody tr").count() == 3
    assert all(p.stat().st_size > 10_000 for p in shots.glob("*.png"))
    assert len(list(shots.glob("*.png"))) == 4


def test_the_docs_picture_is_what_chromium_shows_of_the_committed_page(tmp_path):
    """Made again here, as benchmarks/site_screenshot.py makes it: same size, same page."""
    from PIL import Image

    from cladapt.leaderboard.picture import page_digest, screenshot, stamped_digest

    root = Path(__file__).resolve().parent.parent
    page = root / "leaderboard" / "site" / "streams" / f"{slug('digits-c')}.html"
    fresh = screenshot(page, tmp_path / "stream.png")
    committed = root / "docs" / "leaderboard-stream.png"
    assert stamped_digest(fresh) == page_digest(page) == stamped_digest(committed)
    with Image.open(fresh) as a, Image.open(committed) as b:
        assert a.size == b.size
