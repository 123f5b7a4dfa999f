"""Refresh docs/leaderboard-stream.png: a screenshot of one stream page of the committed site.

    python benchmarks/site_screenshot.py [--stream digits-c] [--site leaderboard/site]

Needs playwright and Debian's chromium (as tests/test_site_browser.py does).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from cladapt.leaderboard.site import slug

DOCS = Path(__file__).resolve().parent.parent / "docs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="digits-c")
    parser.add_argument("--site", type=Path, default=Path("leaderboard/site"))
    parser.add_argument("--height", type=int, default=1500, help="pixels of the page to keep")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    page_path = (args.site / "streams" / f"{slug(args.stream)}.html").resolve()
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": args.height})
        page.goto(page_path.as_uri())
        page.screenshot(path=str(DOCS / "leaderboard-stream.png"))
        browser.close()
    print(f"wrote {DOCS / 'leaderboard-stream.png'} from {page_path}")


if __name__ == "__main__":
    main()
