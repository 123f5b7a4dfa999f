"""Simple, seeded distribution shifts for the embedded digits streams (batched torch ops).

The full Hendrycks & Dietterich corruption suite is separate; these are small, fast shifts that
change low-level statistics (noise, blur, contrast) and so are the textbook case for
test-time normalisation and domain adaptation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cladapt.data.backgrounds import blend_onto_backgrounds
from cladapt.errors import UnknownNameError

Shift = Callable[[torch.Tensor, torch.Generator, float], torch.Tensor]


def gaussian_noise(x: torch.Tensor, g: torch.Generator, level: float) -> torch.Tensor:
    return (x + level * torch.randn(x.shape, generator=g)).clamp(0, 1)


def salt_pepper(x: torch.Tensor, g: torch.Generator, level: float) -> torch.Tensor:
    u = torch.rand(x.shape[0], 1, *x.shape[2:], generator=g).expand_as(x)
    out = x.clone()
    out[u < level / 2] = 0.0
    out[u > 1 - level / 2] = 1.0
    return out


def blur(x: torch.Tensor, g: torch.Generator, level: float) -> torch.Tensor:
    radius = max(1, int(round(3 * level)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * level**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(
        F.pad(x, (radius, radius, 0, 0), mode="reflect"),
        k.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
        groups=c,
    )
    x = F.conv2d(
        F.pad(x, (0, 0, radius, radius), mode="reflect"),
        k.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
        groups=c,
    )
    return x.clamp(0, 1)


def contrast(x: torch.Tensor, g: torch.Generator, level: float) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * level + mean).clamp(0, 1)


def brightness(x: torch.Tensor, g: torch.Generator, level: float) -> torch.Tensor:
    return (x + level).clamp(0, 1)


def textured_background(x: torch.Tensor, g: torch.Generator, level: float) -> torch.Tensor:
    """Digits blended onto procedural coloured textures (``level`` unused)."""
    return blend_onto_backgrounds(x, g)


def photo_blend(x: torch.Tensor, g: torch.Generator, level: float) -> torch.Tensor:
    """MNIST-M's recipe: |random crop of a real colour photograph - digit| (``level`` unused;
    see :mod:`cladapt.data.uda_pairs`)."""
    from cladapt.data.uda_pairs import blend_with_photographs

    return blend_with_photographs(x, g)


SHIFTS: dict[str, Shift] = {
    "gaussian_noise": gaussian_noise,
    "salt_pepper": salt_pepper,
    "blur": blur,
    "contrast": contrast,
    "brightness": brightness,
    "textured_background": textured_background,
    "photo_blend": photo_blend,
}


def apply_shift(x: torch.Tensor, name: str, level: float, seed: int) -> torch.Tensor:
    """Apply shift ``name`` at ``level`` to a whole (N, C, H, W) tensor, reproducibly."""
    if name not in SHIFTS:
        raise UnknownNameError("shift", name, SHIFTS)
    g = torch.Generator().manual_seed(seed)
    return SHIFTS[name](x, g, level)
