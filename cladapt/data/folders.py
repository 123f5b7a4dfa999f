"""Readers for on-disk datasets in their standard layouts (UDA benchmarks).

- Office-31 / Office-Home style: ``<root>/<domain>/<class>/*.jpg`` (Office-31's release nests
  one more level, ``<domain>/images/<class>/``; both are accepted).
- MNIST through ``torchvision.datasets.MNIST`` (``<root>/MNIST/raw/*-ubyte``).
- MNIST-M in the layout of its release: ``<root>/mnist_m/mnist_m_{train,test}/*.png`` with
  ``<root>/mnist_m/mnist_m_{train,test}_labels.txt`` (lines ``00000000.png 5``).

Missing files raise a one-line :class:`DataError` that names the path that was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision import transforms as T

from cladapt.errors import DataError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ResizeSquare:
    """PIL's ``Image.resize`` to ``size`` x ``size`` with its default filter (bicubic), the
    aspect ratio not kept: tllib's ``ResizeImage`` (``tllib/vision/transforms``)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img):
        return img.resize((self.size, self.size))

    def __repr__(self) -> str:
        return f"ResizeSquare({self.size})"


def imagenet_transform(size: int, train: bool) -> T.Compose:
    """tllib's image-classification DA transforms (``examples/domain_adaptation/
    image_classification/utils.py``, ``resizing='default'``), normalised with ImageNet's
    statistics: the image resized to 256 x 256, then for training a RandomResizedCrop of 224
    (area 8-100 %, aspect 3/4-4/3) and a horizontal flip, for evaluation the central 224 x 224.
    ``size`` other than 224 scales the 256 with it."""
    resize = int(round(size * 256 / 224))
    crop = (
        [
            T.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
            T.RandomHorizontalFlip(),
        ]
        if train
        else [T.CenterCrop(size)]
    )
    return T.Compose(
        [ResizeSquare(resize), *crop, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )


def find_domain_dir(root: Path, candidates: Sequence[str]) -> Path:
    for name in candidates:
        for path in (root / name / "images", root / name):
            if path.is_dir() and any(p.is_dir() for p in path.iterdir()):
                return path
    raise DataError(
        f"domain folder not found: {root / candidates[0]} (expected <domain>/<class>/*.jpg)"
    )


def image_folder(path: Path, transform, classes: list[str] | None = None) -> Dataset:
    """``torchvision.datasets.ImageFolder``, checked against the expected class list."""
    from torchvision.datasets import ImageFolder

    try:
        ds = ImageFolder(str(path), transform=transform)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"cannot read image folder {path}: {exc}") from None
    if classes is not None and ds.classes != classes:
        missing = sorted(set(classes) - set(ds.classes))
        raise DataError(
            f"{path}: class folders differ from the source domain's (missing: {missing[:5]})"
        )
    return ds


def mnist(root: Path, train: bool, size: int = 32) -> Dataset:
    from torchvision.datasets import MNIST

    tf = T.Compose([T.Resize(size), T.Grayscale(num_output_channels=3), T.ToTensor()])
    try:
        return MNIST(str(root), train=train, transform=tf, download=False)
    except RuntimeError:
        raise DataError(
            f"MNIST not found under {root / 'MNIST' / 'raw'} (train-images-idx3-ubyte, ...); "
            "download it with torchvision.datasets.MNIST(root, download=True)"
        ) from None


class MNISTM(Dataset):
    """MNIST-M from the folder layout of its release (RGB 28x28 PNGs + a labels file)."""

    def __init__(self, root: Path, train: bool, size: int = 32) -> None:
        split = "train" if train else "test"
        base = Path(root) / "mnist_m"
        labels = base / f"mnist_m_{split}_labels.txt"
        self.dir = base / f"mnist_m_{split}"
        if not labels.is_file() or not self.dir.is_dir():
            raise DataError(f"MNIST-M not found: expected {labels} and {self.dir}/")
        rows = [line.split() for line in labels.read_text().splitlines() if line.strip()]
        self.files = [r[0] for r in rows]
        self.targets = torch.tensor([int(r[1]) for r in rows])
        self.transform = T.Compose([T.Resize(size), T.ToTensor()])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image

        path = self.dir / self.files[i]
        try:
            with Image.open(path) as img:
                x = self.transform(img.convert("RGB"))
        except FileNotFoundError:
            raise DataError(f"MNIST-M image listed in the labels file is missing: {path}") from None
        return x, int(self.targets[i])


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


class ImagesUnder(Dataset):
    """Every image under ``root`` at any depth (an ImageFolder's class folders, or flat), sorted
    by path, each as ``(transform(image), 0)``: unlabelled images (ZSCL's reference set, EATA's
    Fisher images)."""

    def __init__(self, root: str | Path, transform, what: str) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"{what}: no such folder {root}")
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise DataError(f"{what}: no .jpg/.png images under {root}")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.files[i]) as im:
            return self.transform(im.convert("RGB")), 0


def evaluation_images(root: str | Path, size: int, what: str) -> Dataset:
    """Clean images as an ImageNet evaluation reads them: resized to ``size`` * 256 / 224 (256
    for 224), centre-cropped to ``size``, in [0, 1]."""
    tf = T.Compose([T.Resize(size * 256 // 224), T.CenterCrop(size), T.ToTensor()])
    return ImagesUnder(root, tf, what)
