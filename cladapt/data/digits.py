"""Embedded data: scikit-learn's handwritten digits (1797 real 8x8 scans, shipped inside the
scikit-learn package), upsampled to 3x32x32 tensors in [0, 1], with a fixed stratified split."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

CLASS_NAMES = [str(i) for i in range(10)]
SPLIT_SEED = 0  # the split never depends on the run's seed: every run sees the same test set
TEST_FRACTION = 0.3


@functools.lru_cache(maxsize=1)
def digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.as_tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).clamp_(0, 1)
    return x.expand(-1, 3, -1, -1).contiguous(), torch.as_tensor(data.target, dtype=torch.long)


@functools.lru_cache(maxsize=1)
def digits_split() -> tuple[TensorDataset, TensorDataset]:
    """(train, test): 1257 / 540 images, stratified by class."""
    from sklearn.model_selection import train_test_split

    x, y = digits_tensors()
    idx = torch.arange(len(y)).numpy()
    tr, te = train_test_split(
        idx, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y.numpy()
    )
    tr, te = torch.as_tensor(tr), torch.as_tensor(te)
    return TensorDataset(x[tr], y[tr]), TensorDataset(x[te], y[te])


def subset_classes(ds: TensorDataset, classes: list[int]) -> TensorDataset:
    x, y = ds.tensors
    keep = torch.isin(y, torch.as_tensor(classes))
    return TensorDataset(x[keep], y[keep])


def deformed(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Each (N, C, H, W) image under its own random affine map and elastic distortion, the two
    deformations Simard et al. (ICDAR 2003) generate MNIST-like training digits with: rotation
    within ±15°, scale 0.85-1.15, shear within ±0.3, translation within ±3 px (at 32 px), then
    a displacement field of uniform noise smoothed by a Gaussian (σ 4 px) and scaled to 2.5 px
    at most, bilinear, zero outside. Reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = x.shape

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.empty(n).uniform_(lo, hi, generator=g)

    angle = torch.deg2rad(uniform(-15, 15))
    scale, shear = uniform(0.85, 1.15), uniform(-0.3, 0.3)
    tx, ty = uniform(-3, 3) * 2 / w, uniform(-3, 3) * 2 / h
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [
            torch.stack([cos / scale, (-sin + shear * cos) / scale, tx], -1),
            torch.stack([sin / scale, (cos + shear * sin) / scale, ty], -1),
        ],
        -2,
    )
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    noise = torch.rand(n, 2, h, w, generator=g) * 2 - 1
    k = torch.arange(-8, 9, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (k / 4.0) ** 2)
    kernel = kernel / kernel.sum()
    field = F.conv2d(noise.view(-1, 1, h, w), kernel.view(1, 1, 1, -1), padding=(0, 8))
    field = F.conv2d(field, kernel.view(1, 1, -1, 1), padding=(8, 0)).view(n, 2, h, w)
    field = field / field.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
    pixels = 2.5 * field.permute(0, 2, 3, 1) * torch.tensor([2 / w, 2 / h])
    return F.grid_sample(x, grid + pixels, mode="bilinear", align_corners=False).clamp_(0, 1)


def with_deformed_copies(ds: TensorDataset, copies: int, seed: int) -> TensorDataset:
    """``ds`` and ``copies - 1`` deformed copies of it (:func:`deformed`, seeded ``seed``, ``seed
    + 1``, ...): a larger, MNIST-like training set from the same digits."""
    x, y = ds.tensors
    xs = [x] + [deformed(x, seed + k) for k in range(copies - 1)]
    return TensorDataset(torch.cat(xs), y.repeat(copies))
