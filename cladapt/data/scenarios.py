"""Scenario builders for any classification dataset: class splits (class-/task-incremental) and
rotated domains (domain-incremental)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch.utils.data import Dataset, Subset, TensorDataset

from cladapt.errors import ConfigError, DataError


def open_dataset(
    spec: dict[str, Any], root: Path | None, size: int, download: bool = False, transform_extra=None
) -> tuple[Dataset, Dataset, list[str]]:
    """(train, test, class names) for ``{torchvision = ...}``, ``{folder = ...}`` or
    ``{embedded = "digits"}``."""
    from cladapt.data.nevis import _torchvision, task_transform

    if "embedded" in spec:
        from cladapt.data.digits import CLASS_NAMES, digits_split

        train, test = digits_split()
        return train, test, list(CLASS_NAMES)
    if root is None:
        raise DataError("this stream reads files from disk: pass --data-root DIR")
    if "torchvision" in spec:
        task = {"torchvision": spec["torchvision"], "classes": spec.get("classes", 0)}
        train = _torchvision(root, task, "train", size, download)
        test = _torchvision(root, task, "test", size, download)
        names = [str(c) for c in getattr(train, "classes", [])]
        return train, test, names or [str(i) for i in sorted(set(targets_of(train).tolist()))]
    from torchvision.datasets import ImageFolder

    base = (root / spec["folder"]).resolve()
    parts = []
    for split in ("train", "test"):
        if not (base / split).is_dir():
            raise DataError(f"missing {base / split}/<class>/* (folder layout)")
        parts.append(ImageFolder(str(base / split), transform=task_transform(size)))
    if parts[0].classes != parts[1].classes:
        raise DataError(f"{base}: train and test class folders differ")
    return parts[0], parts[1], list(parts[0].classes)


def targets_of(ds: Dataset) -> torch.Tensor:
    """All labels of a dataset without loading its images (torchvision / ImageFolder / tensors)."""
    if isinstance(ds, TensorDataset):
        return ds.tensors[1]
    for attr in ("targets", "labels", "_labels"):
        if hasattr(ds, attr):
            return torch.as_tensor(getattr(ds, attr))
    return torch.as_tensor([int(ds[i][1]) for i in range(len(ds))])  # type: ignore[arg-type]


class RemapTargets(Dataset):
    def __init__(self, ds: Dataset, mapping: torch.Tensor) -> None:
        self.ds, self.mapping = ds, mapping

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.ds[i]
        return x, int(self.mapping[int(y)])


CLASS_ORDERS = ("icarl", "janson2022", "seeded", "sorted")
# the fixed CIFAR-100 order of the simple-baseline paper's code (Janson et al. 2022,
# Pauljanson002/pretrained-cl, main_cifar100.py: continuum's ClassIncremental class_order)
JANSON2022_CIFAR100 = (
    87, 0, 52, 58, 44, 91, 68, 97, 51, 15, 94, 92, 10, 72, 49, 78, 61, 14, 8, 86,
    84, 96, 18, 24, 32, 45, 88, 11, 4, 67, 69, 66, 77, 47, 79, 93, 29, 50, 57, 83,
    17, 81, 41, 12, 37, 59, 25, 20, 80, 73, 1, 28, 6, 46, 62, 82, 53, 9, 31, 75,
    38, 63, 33, 74, 27, 22, 36, 3, 16, 21, 60, 19, 70, 90, 89, 43, 5, 42, 65, 76,
    40, 30, 23, 85, 2, 95, 56, 48, 71, 64, 98, 13, 99, 7, 34, 55, 54, 26, 35, 39,
)  # fmt: skip


def class_order(num_classes: int, kind: str, seed: int) -> torch.Tensor:
    """The class order of a split stream (new id -> original id).

    ``icarl``: ``numpy.random.seed(1993); numpy.random.permutation(n)`` as iCaRL (Rebuffi et al.
    2017) and the codes that follow it (e.g. PyCIL) order CIFAR-100: the order most published
    split-CIFAR numbers use. ``janson2022``: the simple-baseline paper's own fixed CIFAR-100 order
    (87, 0, 52, 58, 44, ...: Pauljanson002/pretrained-cl ``main_cifar100.py``). ``seeded``: a
    torch permutation of ``seed``. ``sorted``: the dataset's own label order."""
    if kind == "icarl":
        return torch.from_numpy(np.random.RandomState(1993).permutation(num_classes))
    if kind == "janson2022":
        if num_classes != len(JANSON2022_CIFAR100):
            raise ConfigError("class_order janson2022 is CIFAR-100's order: 100 classes")
        return torch.tensor(JANSON2022_CIFAR100)
    if kind == "seeded":
        return torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed))
    if kind == "sorted":
        return torch.arange(num_classes)
    raise ConfigError(f"class_order {kind!r}: expected one of {', '.join(CLASS_ORDERS)}")


def split_by_classes(
    train: Dataset, test: Dataset, tasks: int, order: torch.Tensor
) -> list[tuple[Dataset, Dataset, list[int]]]:
    """Tasks of equal class groups in ``order`` (new id -> original id); labels renumbered to
    the new order. Returns [(train, test, new class ids)] per task."""
    num_classes = len(order)
    if num_classes % tasks:
        raise DataError(f"{num_classes} classes do not split into {tasks} equal tasks")
    new_id = torch.empty(num_classes, dtype=torch.long)
    new_id[order] = torch.arange(num_classes)
    k = num_classes // tasks
    out = []
    for t in range(tasks):
        ids = list(range(t * k, (t + 1) * k))
        parts = []
        for ds in (train, test):
            keep = torch.isin(new_id[targets_of(ds)], torch.as_tensor(ids))
            if isinstance(ds, TensorDataset):
                x, y = ds.tensors
                parts.append(TensorDataset(x[keep], new_id[y[keep]]))
            else:
                parts.append(RemapTargets(Subset(ds, keep.nonzero().squeeze(1).tolist()), new_id))
        out.append((parts[0], parts[1], ids))
    return out


class Rotated(Dataset):
    def __init__(self, ds: Dataset, angle: float) -> None:
        self.ds, self.rotate = ds, functools.partial(TF.rotate, angle=angle)

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.ds[i]
        return self.rotate(x), y


def rotated(ds: Dataset, angle: float) -> Dataset:
    """The same dataset with every image rotated by ``angle`` degrees (tensors stay tensors)."""
    if isinstance(ds, TensorDataset):
        x, y = ds.tensors
        return TensorDataset(TF.rotate(x, angle), y)
    return Rotated(ds, angle)
