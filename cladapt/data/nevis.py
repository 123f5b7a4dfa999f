"""Readers for NEVIS-style task lists: torchvision datasets in their standard layouts, or any
task in the folder layout ``<root>/nevis/<key>/{train,test}/<class>/*``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset
from torchvision import transforms as T

from cladapt.errors import DataError

# torchvision classes whose constructor takes `train=bool`; the others take `split=`
_TRAIN_FLAG = {"MNIST", "CIFAR10", "CIFAR100", "FashionMNIST", "USPS", "EMNIST"}
_SPLITS = {"OxfordIIITPet": ("trainval", "test")}
_EXTRA = {"EMNIST": {"split": "balanced"}}


def to_rgb(img):
    return img.convert("RGB")


def task_transform(size: int) -> T.Compose:
    return T.Compose([T.Lambda(to_rgb), T.Resize((size, size)), T.ToTensor()])


class OffsetTargets(Dataset):
    """Shift a dataset's labels into the stream's global label space."""

    def __init__(self, ds: Dataset, offset: int) -> None:
        self.ds, self.offset = ds, offset

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.ds[i]
        return x, int(y) + self.offset


def _torchvision(
    root: Path, task: dict[str, Any], train: bool, size: int, download: bool
) -> Dataset:
    from cladapt.data.mtil import torchvision_class

    name = task["torchvision"]
    cls = torchvision_class(name)
    kwargs: dict[str, Any] = {
        "transform": task_transform(size),
        "download": download,
        **_EXTRA.get(name, {}),
    }
    if name in _TRAIN_FLAG:
        kwargs["train"] = train
    else:
        kwargs["split"] = _SPLITS.get(name, ("train", "test"))[0 if train else 1]
    try:
        return cls(str(root), **kwargs)
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        raise DataError(
            f"torchvision {name} not found under {root} ({str(exc).splitlines()[0][:80]})"
        ) from None


def _folder(root: Path, task: dict[str, Any], split: str, size: int) -> Dataset:
    from torchvision.datasets import ImageFolder

    path = root / "nevis" / task["key"] / split
    if not path.is_dir():
        raise DataError(f"missing {path}/<class>/*")
    try:
        return ImageFolder(str(path), transform=task_transform(size))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def open_task(
    root: Path, task: dict[str, Any], size: int, download: bool = False
) -> tuple[Dataset, Dataset, list[str]]:
    """(train, test, class names) of one task; DataError if its files are missing."""
    if "torchvision" in task:
        train = _torchvision(root, task, True, size, download)
        test = _torchvision(root, task, False, size, download)
        names = [str(c) for c in getattr(train, "classes", [])] or [
            str(i) for i in range(task["classes"])
        ]
        return train, test, names
    train, test = _folder(root, task, "train", size), _folder(root, task, "test", size)
    if test.classes != train.classes:
        raise DataError(f"{root / 'nevis' / task['key']}: train and test class folders differ")
    return train, test, list(train.classes)


def dev_split_sizes(n: int, fractions: tuple[float, float] = (0.7, 0.15)) -> tuple[int, int]:
    """dm_nevis' train and dev sizes of ``n`` training examples (dev_test: the rest)."""
    return int(n * fractions[0]), int(n * fractions[1])


def split_train_dev_dev_test(train: Dataset, seed: int) -> tuple[Dataset, Dataset, Dataset]:
    """dm_nevis' split of a training set without official dev splits: train / dev / dev_test
    = the first ``int(0.7 n)``, the next ``int(0.15 n)`` and the rest (``nevis_stream.py``,
    ``_dataset_splits_for_tfds``), of a fixed seeded shuffle (TFDS's own file order is not
    available here)."""
    n = len(train)  # type: ignore[arg-type]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_train, n_dev = dev_split_sizes(n)
    return (
        Subset(train, order[:n_train]),
        Subset(train, order[n_train : n_train + n_dev]),
        Subset(train, order[n_train + n_dev :]),
    )


def open_prepared_splits(
    root: Path, task: dict[str, Any], size: int, classes: list[str]
) -> tuple[Dataset, Dataset] | None:
    """(dev, dev_test) from ``nevis/<key>/{dev,dev-test}/<class>/*`` when a task's folders have
    them (dm_nevis' prepared datasets name their splits train / dev / dev-test / test); the
    train folder then holds the training split only. None when the task has no such folders."""
    base = root / "nevis" / task["key"]
    if not (base / "dev").is_dir() and not (base / "dev-test").is_dir():
        return None
    dev, dev_test = _folder(root, task, "dev", size), _folder(root, task, "dev-test", size)
    for split, ds in (("dev", dev), ("dev-test", dev_test)):
        if ds.classes != classes:
            raise DataError(f"{base}: {split} and train class folders differ")
    return dev, dev_test
