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
