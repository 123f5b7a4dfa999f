"""Procedurally generated image tasks for the embedded NEVIS-style stream (batched torch, seeded).

Every generator returns ``(x, y)``: x of shape (n, 3, size, size) in [0, 1], y int64 labels,
with random position, scale, colour and background noise so that the tasks are not trivial.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Generator = Callable[[int, torch.Generator, int], tuple[torch.Tensor, torch.Tensor]]

HUES = {
    "red": (0.9, 0.15, 0.1),
    "green": (0.15, 0.8, 0.2),
    "blue": (0.15, 0.3, 0.95),
    "yellow": (0.95, 0.9, 0.1),
    "magenta": (0.85, 0.2, 0.85),
    "cyan": (0.1, 0.85, 0.9),
}
SHAPES = ("circle", "square", "triangle", "cross")


def _grid(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    return xx.expand(n, size, size), yy.expand(n, size, size)


def _rand(n: int, g: torch.Generator, lo: float, hi: float) -> torch.Tensor:
    return (lo + (hi - lo) * torch.rand(n, generator=g)).view(n, 1, 1)


def shape_masks(
    kind: torch.Tensor,
    n: int,
    size: int,
    g: torch.Generator,
    place: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """(n, size, size) float masks of the shapes named by indices ``kind`` into SHAPES, at random
    centres and radii unless ``place`` = (cx, cy, r), each of shape (n, 1, 1), is given."""
    xx, yy = _grid(n, size)
    if place is None:
        place = (_rand(n, g, -0.4, 0.4), _rand(n, g, -0.4, 0.4), _rand(n, g, 0.3, 0.55))
    cx, cy, r = place
    dx, dy = xx - cx, yy - cy
    masks = torch.stack(
        [
            (dx**2 + dy**2 < r**2),
            (dx.abs() < r * 0.85) & (dy.abs() < r * 0.85),
            (dy < r * 0.8) & (dy > -r) & (dx.abs() < (dy + r) * 0.6),
            ((dx.abs() < r * 0.3) & (dy.abs() < r)) | ((dy.abs() < r * 0.3) & (dx.abs() < r)),
        ]
    )
    return masks[kind, torch.arange(n)].float()


def _paint(
    mask: torch.Tensor,
    colour: torch.Tensor,
    g: torch.Generator,
    noise: float = 0.08,
    background: torch.Tensor | None = None,
) -> torch.Tensor:
    """``colour`` where ``mask`` is set, over ``background`` (default: a random dark grey per
    image), plus pixel noise."""
    n, size = mask.shape[0], mask.shape[-1]
    if background is None:
        background = 0.1 + 0.2 * torch.rand(n, 3, 1, 1, generator=g)
    x = background * (1 - mask.unsqueeze(1)) + colour.view(n, 3, 1, 1) * mask.unsqueeze(1)
    return (x + noise * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)


def shapes(
    n: int, g: torch.Generator, size: int = 32, k: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape classification (first ``k`` of circle, square, triangle, cross), random colours."""
    y = torch.randint(0, k, (n,), generator=g)
    colour = 0.5 + 0.5 * torch.rand(n, 3, generator=g)
    return _paint(shape_masks(y, n, size, g), colour, g), y


def colours(n: int, g: torch.Generator, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour classification over six hues, on random shapes."""
    y = torch.randint(0, len(HUES), (n,), generator=g)
    hue = torch.tensor(list(HUES.values()))[y] + 0.08 * torch.randn(n, 3, generator=g)
    kind = torch.randint(0, len(SHAPES), (n,), generator=g)
    return _paint(shape_masks(kind, n, size, g), hue.clamp(0, 1), g), y


def shape_colour(n: int, g: torch.Generator, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint shape x colour classes: 3 shapes x 3 hues = 9 classes."""
    y = torch.randint(0, 9, (n,), generator=g)
    hue = torch.tensor(list(HUES.values())[:3])[y % 3]
    return _paint(shape_masks(y // 3, n, size, g), hue, g), y


def stripes(n: int, g: torch.Generator, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Texture orientation: stripes at 0, 45, 90 or 135 degrees, random frequency and phase."""
    y = torch.randint(0, 4, (n,), generator=g)
    theta = (y.float() * math.pi / 4 + 0.1 * torch.randn(n, generator=g)).view(n, 1, 1)
    freq, phase = _rand(n, g, 6.0, 12.0), _rand(n, g, 0.0, 2 * math.pi)
    xx, yy = _grid(n, size)
    wave = 0.5 + 0.5 * torch.sin(freq * (xx * torch.cos(theta) + yy * torch.sin(theta)) + phase)
    tint = 0.4 + 0.6 * torch.rand(n, 3, 1, 1, generator=g)
    return (wave.unsqueeze(1) * tint + 0.1 * torch.randn(n, 3, size, size, generator=g)).clamp(
        0, 1
    ), y


def checkers(n: int, g: torch.Generator, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Texture scale: checkerboards with 2, 4, 8 or 16 squares across."""
    y = torch.randint(0, 4, (n,), generator=g)
    cells = (2 ** (y + 1)).float().view(n, 1, 1)
    xx, yy = _grid(n, size)
    ox, oy = _rand(n, g, 0, 1), _rand(n, g, 0, 1)
    board = (
        (torch.floor((xx + 1) / 2 * cells + ox) + torch.floor((yy + 1) / 2 * cells + oy)) % 2
    ).unsqueeze(1)
    a, b = torch.rand(n, 3, 1, 1, generator=g), torch.rand(n, 3, 1, 1, generator=g)
    x = board * a + (1 - board) * b
    return (x + 0.05 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1), y


def counting(n: int, g: torch.Generator, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Count the blobs: 1 to 4 small discs at random places."""
    y = torch.randint(0, 4, (n,), generator=g)
    xx, yy = _grid(n, size)
    canvas = torch.zeros(n, size, size)
    for i in range(4):
        cx, cy = _rand(n, g, -0.75, 0.75), _rand(n, g, -0.75, 0.75)
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < 0.18**2).float()
        canvas = torch.maximum(
            canvas, disc * (y > i - 0.5).float().view(n, 1, 1) * (i <= y).float().view(n, 1, 1)
        )
    colour = 0.6 + 0.4 * torch.rand(n, 3, generator=g)
    return _paint(canvas, colour, g), y


GENERATORS: dict[str, tuple[Generator, list[str]]] = {
    "shapes": (shapes, list(SHAPES[:3])),
    "colours": (colours, list(HUES)),
    "shape_colour": (shape_colour, [f"{s}-{c}" for s in SHAPES[:3] for c in list(HUES)[:3]]),
    "stripes": (stripes, ["0deg", "45deg", "90deg", "135deg"]),
    "checkers": (checkers, ["2", "4", "8", "16"]),
    "counting": (counting, ["1", "2", "3", "4"]),
}
