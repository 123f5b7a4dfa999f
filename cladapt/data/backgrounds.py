"""MNIST-M-like targets, generated offline: digits blended onto coloured, textured backgrounds.

MNIST-M (Ganin & Lempitsky, 2015) takes |digit - patch| per channel, with patches cut from the
BSDS500 photos. We cannot ship photos, so each background is procedural and seeded: a smooth random
colour field (bilinearly upsampled 4x4 noise) plus a random-frequency stripe texture and pixel
noise. The blend is the same absolute difference, so stroke colour varies with the background.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def textured_backgrounds(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 3, size, size) in [0, 1]."""
    coarse = torch.rand(n, 3, 4, 4, generator=generator)
    field = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=True)
    theta = torch.rand(n, 1, 1, 1, generator=generator) * math.pi
    freq = 0.2 + 0.8 * torch.rand(n, 1, 1, 1, generator=generator)
    phase = torch.rand(n, 1, 1, 1, generator=generator) * 2 * math.pi
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32),
        torch.arange(size, dtype=torch.float32),
        indexing="ij",
    )
    stripes = torch.sin(freq * (xx * torch.cos(theta) + yy * torch.sin(theta)) + phase)
    tint = torch.rand(n, 3, 1, 1, generator=generator) * 0.15
    noise = 0.04 * torch.randn(n, 3, size, size, generator=generator)
    return (field + tint * stripes + noise).clamp(0, 1)


def blend_onto_backgrounds(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """MNIST-M's blend: |background - digit| per channel; ``x`` is (N, 3, H, W) in [0, 1]."""
    bg = textured_backgrounds(x.shape[0], x.shape[-1], generator)
    return (bg - x).abs()
