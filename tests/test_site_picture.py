"""docs/leaderboard-stream.png shows the committed site's digits-c page: the picture carries the
SHA-256 of the page it was made from, and regenerating the site without the picture fails here."""

from pathlib import Path

from cladapt.leaderboard.picture import page_digest, stamped_digest
from cladapt.leaderboard.site import slug

ROOT = Path(__file__).resolve().parent.parent
PICTURE = ROOT / "docs" / "leaderboard-stream.png"
PAGE = ROOT / "leaderboard" / "site" / "streams" / f"{slug('digits-c')}.html"


def test_the_docs_picture_shows_the_committed_page():
    assert stamped_digest(PICTURE) == page_digest(PAGE), (
        "docs/leaderboard-stream.png was not made from the committed digits-c page: run "
        "python benchmarks/site_screenshot.py"
    )
