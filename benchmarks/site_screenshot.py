"""Refresh docs/leaderboard-stream.png: a screenshot of one stream page of the committed site,
stamped with the page's SHA-256 (``tests/test_site_picture.py`` fails when the committed page
and the picture part ways; the browser test renders it again).

    python benchmarks/site_screenshot.py [--stream digits-c] [--site leaderboard/site]

Needs playwright and Debian's chromium (as tests/test_site_browser.py does).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cladapt.leaderboard.picture import screenshot
from cladapt.leaderboard.site import slug

DOCS = Path(__file__).resolve().parent.parent / "docs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="digits-c")
    parser.add_argument("--site", type=Path, default=Path("leaderboard/site"))
    args = parser.parse_args()
    page = args.site / "streams" / f"{slug(args.stream)}.html"
    picture = screenshot(page, DOCS / "leaderboard-stream.png")
    print(f"wrote {picture} from {page}")


if __name__ == "__main__":
    main()
