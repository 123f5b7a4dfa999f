"""Corruption benchmark data: the released CIFAR-10-C / CIFAR-100-C / ImageNet-C files, and the
embedded digits-C built with :mod:`cladapt.data.corruptions`.

Formats (as released by Hendrycks & Dietterich):

- CIFAR-10-C / CIFAR-100-C: ``<root>/<corruption>.npy``, uint8 (50000, 32, 32, 3) = severities
  1..5 x 10 000 test images in order, and ``<root>/labels.npy`` (50000,).
- ImageNet-C: ``<root>/<corruption>/<severity>/<wnid>/*.JPEG`` (224 x 224), 50 000 per severity.
  The common 5 000-image subset: RobustBench's list ``imagenet_test_image_ids.txt`` (lines
  ``<wnid>/<file>``) if it is found in the data root, else a fixed seeded choice of the same
  5 000 files for every corruption.
"""

from __future__ import annotations

import functools
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from cladapt.data.corruptions import corrupt_dataset_tensor
from cladapt.errors import DataError

IMAGES_PER_SEVERITY = 10_000


def find_dir(root: Path, candidates: list[str], probe: str) -> Path:
    """The first of ``root/<candidate>`` (or root itself) that contains ``probe``."""
    for d in [root / c for c in candidates] + [root]:
        if (d / probe).exists():
            return d
    tried = ", ".join(str(root / c) for c in candidates)
    raise DataError(f"{probe} not found under {root} (looked in {tried} and {root})")


def _load_npy(path: Path) -> np.ndarray:
    """A memory-mapped array, or a one-line DataError for a file that is not a numeric .npy."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise DataError(f"{path}: not a numeric .npy array ({reason})") from None


def cifar_c(
    directory: Path, corruption: str, severity: int, n_examples: int, num_classes: int | None = None
) -> TensorDataset:
    """One (corruption, severity) of CIFAR-10-C / CIFAR-100-C as uint8 images + labels; the
    files are checked (shape, dtype, label count and range) with one-line errors."""
    path = directory / f"{corruption}.npy"
    if not path.is_file():
        raise DataError(f"missing {path} (CIFAR-C layout: <corruption>.npy + labels.npy)")
    images = _load_npy(path)
    labels = _load_npy(directory / "labels.npy")
    if images.ndim != 4 or images.shape[0] % 5 or images.shape[-1] != 3:
        raise DataError(f"{path}: expected (5*N, H, W, 3) uint8, got {images.shape}")
    if images.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 pixels as released, got {images.dtype}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"{directory / 'labels.npy'}: expected a 1-D integer array, got "
            f"{labels.dtype} {labels.shape}"
        )
    if len(labels) < images.shape[0]:
        raise DataError(
            f"{directory / 'labels.npy'} has {len(labels)} labels for the "
            f"{images.shape[0]} images of {path}"
        )
    per = images.shape[0] // 5
    n = min(n_examples, per)
    lo = (severity - 1) * per
    y = np.array(labels[lo : lo + n], dtype=np.int64)
    if num_classes is not None and len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(
            f"{directory / 'labels.npy'}: labels must be in 0..{num_classes - 1}, found "
            f"{int(y.min())}..{int(y.max())}"
        )
    x = torch.from_numpy(np.array(images[lo : lo + n])).permute(0, 3, 1, 2)
    return TensorDataset(x.contiguous(), torch.from_numpy(y))


def _subset_ids(root: Path) -> list[str] | None:
    for candidate in (
        root / "imagenet_test_image_ids.txt",
        root.parent / "imagenet_test_image_ids.txt",
    ):
        if candidate.is_file():
            return [ln.strip() for ln in candidate.read_text().splitlines() if ln.strip()]
    return None


# how ImageNet-C's 224 x 224 images are read: as released (EATA's and SAR's evaluation), or
# RobustBench's Res256Crop224 (resize to 256, centre crop 224: a zoom by 8/7), which CoTTA's
# ImageNet code loads ImageNet-C with (robustbench/data.py PREPROCESSINGS)
PREPROCESSING = ("crop224", "res256crop224")


def imagenet_c(
    directory: Path,
    corruption: str,
    severity: int,
    n_examples: int | None,
    size: int = 224,
    preprocess: str = "crop224",
) -> Dataset:
    """One (corruption, severity) of ImageNet-C as a torchvision ImageFolder in [0, 1]."""
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    folder = directory / corruption / str(severity)
    if not folder.is_dir():
        raise DataError(f"missing {folder} (ImageNet-C layout: <corruption>/<severity>/<wnid>/)")
    first = T.Resize(size * 256 // 224) if preprocess == "res256crop224" else T.Resize(size)
    tf = T.Compose([first, T.CenterCrop(size), T.ToTensor()])
    ds = ImageFolder(str(folder), transform=tf)
    if n_examples is None or n_examples >= len(ds):
        return ds
    ids = _subset_ids(directory)
    if ids is not None:
        index = {str(Path(p).relative_to(folder)): i for i, (p, _) in enumerate(ds.samples)}
        chosen = [index[i] for i in ids if i in index][:n_examples]
    else:
        g = torch.Generator().manual_seed(0)  # the same files for every corruption
        chosen = sorted(torch.randperm(len(ds), generator=g)[:n_examples].tolist())
    return Subset(ds, chosen)


@functools.lru_cache(maxsize=128)
def digits_c(corruption: str, severity: int) -> TensorDataset:
    """The digits test split under one corruption, seeded by (corruption, severity)."""
    from cladapt.cache import cached_tensors, code_digest
    from cladapt.data import corruptions, digits
    from cladapt.data.digits import digits_split

    x, y = digits_split()[1].tensors
    seed = zlib.crc32(f"digits-c/{corruption}/{severity}".encode())
    # generated once per machine (the slowest corruptions take seconds) and cached on disk,
    # keyed by the corruption, its severity and the code that makes it
    facts = {
        "corruption": corruption,
        "severity": severity,
        "seed": seed,
        "code": code_digest(corruptions, digits),
        "frost_stats": (Path(corruptions.__file__).parent / "frost_stats.json").read_text(),
    }
    (xc,) = cached_tensors(
        "digits-c", facts, lambda: (corrupt_dataset_tensor(x, corruption, severity, seed),)
    )
    return TensorDataset(xc, y)


def reference_inputs(size: int, n: int) -> np.ndarray:
    """Fixed clean images on which the corruptions are compared with the numpy references
    (``benchmarks/corruptions.py``, ``tests/test_corruptions.py``): (n, size, size, 3) uint8, the
    first digits test images at 32 px, else crops of scikit-learn's two sample photographs."""
    if size <= 32:
        from cladapt.data.digits import digits_split

        x = digits_split()[1].tensors[0][:n]
        if size != 32:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")
        return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        img = photos[k % len(photos)]
        y, x = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
        out.append(img[y : y + size, x : x + size])
    return np.stack(out)
