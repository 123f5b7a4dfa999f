"""The README / docs picture of a stream page (``docs/leaderboard-stream.png``), made in a
headless Chromium and stamped with the SHA-256 of the page it shows, so a test can tell when the
committed picture no longer shows the committed site."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

PAGE_DIGEST_KEY = "cladapt-page-sha256"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 1500}


def page_digest(page: Path) -> str:
    return hashlib.sha256(page.read_bytes()).hexdigest()


def stamped_digest(picture: Path) -> str | None:
    """The page digest a picture was stamped with (None: not stamped)."""
    from PIL import Image

    with Image.open(picture) as img:
        return img.text.get(PAGE_DIGEST_KEY) if hasattr(img, "text") else None


def screenshot(page: Path, picture: Path, browser=None) -> Path:
    """Render ``page`` at 1280 x 1500 px into ``picture`` (PNG) and stamp it with the page's
    digest. ``browser``: a playwright Browser to reuse (default: launch Debian's chromium)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    def shoot(b) -> None:
        tab = b.new_page(viewport=VIEWPORT)
        tab.goto(page.resolve().as_uri())
        tab.screenshot(path=str(picture))
        tab.close()

    if browser is not None:
        shoot(browser)
    else:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
            shoot(b)
            b.close()
    info = PngInfo()
    info.add_text(PAGE_DIGEST_KEY, page_digest(page))
    with Image.open(picture) as img:
        img.load()
        img.save(picture, pnginfo=info)
    return picture
