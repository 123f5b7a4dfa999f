"""Embedded UDA domains built the way the published ones are, from data inside installed packages.

- **digits-m** (MNIST-M's recipe, Ganin & Lempitsky 2015): every digit image is blended with a
  random crop of a real colour photograph as ``|photo - digit|`` per channel, so background and
  stroke take the photograph's colours (the stroke inverted). The photographs are the ones that
  ship with scikit-learn (``load_sample_images``: a Chinese temple and a flower) and matplotlib
  (``sample_data/grace_hopper.jpg``); MNIST-M used BSDS500 photographs.
- **fonts** (SynNumbers' recipe, Ganin & Lempitsky 2015: digits rendered from fonts, then
  varied in position, orientation, stroke, colours and blur): the digits 0-9 rendered with the
  TrueType faces matplotlib bundles (DejaVu, STIX, Computer Modern), each image with a random
  face, size, rotation, offset, stroke width, foreground/background colours and blur.

Both are seeded; the rendered fonts are cached on disk (``cache_dir()/data``), the blends per
process; nothing is downloaded.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# digit glyphs of these faces look like digits (STIX size variants and the math/symbol
# Computer Modern faces are not text faces)
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmti10.ttf",
)


def font_paths() -> list[Path]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [folder / name for name in FONT_FILES if (folder / name).is_file()]


@functools.lru_cache(maxsize=1)
def photographs() -> tuple[np.ndarray, ...]:
    """The real colour photographs that ship with scikit-learn and matplotlib, uint8 HWC."""
    import matplotlib
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(img) for img in load_sample_images().images]
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if hopper.is_file():
        with Image.open(hopper) as im:
            photos.append(np.asarray(im.convert("RGB")))
    for p in photos:
        p.setflags(write=False)  # shared by every caller (cached)
    return tuple(photos)


def photo_crops(n: int, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 3, h, w) random crops of the real photographs, in [0, 1]."""
    photos = photographs()
    which = torch.randint(len(photos), (n,), generator=generator).tolist()
    crops = []
    for k in which:
        photo = photos[k]
        top = int(torch.randint(photo.shape[0] - h + 1, (1,), generator=generator))
        left = int(torch.randint(photo.shape[1] - w + 1, (1,), generator=generator))
        crops.append(torch.from_numpy(photo[top : top + h, left : left + w].copy()))
    return torch.stack(crops).permute(0, 3, 1, 2).float() / 255


def blend_with_photographs(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """MNIST-M's blend: ``|crop - digit|`` per channel, one random photograph crop per image
    (same size as the image). ``x``: (N, 3, H, W) digits in [0, 1], white strokes on black."""
    n, _, h, w = x.shape
    return (photo_crops(n, h, w, generator) - x).abs()


def render_font_digits(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (n, 3, size, size) in [0, 1], labels): digits 0-9 rendered from the bundled
    fonts with random face, size, rotation, offset, stroke, colours and blur."""
    return _render(n, size, seed)


def render_font_symbols(
    symbols: str, n: int, size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`render_font_digits` for any characters (label i = ``symbols[i]``), e.g. the
    letters the small CNN is pre-trained on (``cladapt.models.letters_pretrain``)."""
    return _render(n, size, seed, symbols)


@functools.lru_cache(maxsize=4)
def _render(
    n: int, size: int, seed: int, symbols: str = "0123456789"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rendered once per machine (a few seconds of PIL per thousand images) and cached on disk,
    keyed by the arguments, the fonts and this code."""
    import matplotlib

    from cladapt.cache import cached_tensors, code_digest

    facts = {
        "n": n,
        "size": size,
        "seed": seed,
        "fonts": [p.name for p in font_paths()],
        "matplotlib": matplotlib.__version__,
        "code": code_digest(_draw, _contrasting_colours),
    }
    name = "fonts-digits"
    if symbols != "0123456789":
        facts["symbols"], name = symbols, "fonts-symbols"
    x, y = cached_tensors(name, facts, lambda: _draw(n, size, seed, symbols))
    return x, y


def _draw(
    n: int, size: int, seed: int, symbols: str = "0123456789"
) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    rng = np.random.default_rng(seed)
    fonts = font_paths()
    if not fonts:
        from cladapt.errors import DataError

        raise DataError("matplotlib's bundled TrueType fonts were not found")
    labels = rng.integers(0, len(symbols), n)
    canvas = 2 * size
    out = np.empty((n, size, size, 3), np.uint8)
    for i, label in enumerate(labels):
        face = str(fonts[rng.integers(len(fonts))])
        font = ImageFont.truetype(face, int(rng.uniform(0.7, 1.1) * size))
        fg, bg = _contrasting_colours(rng)
        img = Image.new("RGB", (canvas, canvas), bg)
        draw = ImageDraw.Draw(img)
        stroke = int(rng.integers(0, 3))
        centre = canvas / 2 + rng.uniform(-0.12, 0.12, 2) * size
        draw.text(
            tuple(centre),
            symbols[label],
            font=font,
            fill=fg,
            anchor="mm",
            stroke_width=stroke,
            stroke_fill=fg,
        )
        img = img.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR, fillcolor=bg)
        img = img.crop((size // 2, size // 2, size // 2 + size, size // 2 + size))
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))
        out[i] = np.asarray(img)
    x = torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255
    return x, torch.from_numpy(labels).long()


def _contrasting_colours(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Random foreground and background colours whose grey levels differ by at least 0.3."""
    while True:
        fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        luma = np.array([0.299, 0.587, 0.114])
        if abs(float(fg @ luma - bg @ luma)) >= 0.3 * 255:
            return tuple(int(v) for v in fg), tuple(int(v) for v in bg)


def to_size(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
