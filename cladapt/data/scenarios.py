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
        train = _torchvision(root, task, True, size, download)
        test = _torchvision(root, task, False, size, download)
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


CLASS_ORDERS = ("icarl", "seeded", "sorted")


def class_order(num_classes: int, kind: str, seed: int) -> torch.Tensor:
    """The class order of a split stream (new id -> original id).

    ``icarl``: ``numpy.random.seed(1993); numpy.random.permutation(n)`` as iCaRL (Rebuffi et al.
    2017) and the codes that follow it (PyCIL, the simple-baseline paper's) order CIFAR-100: the
    order most published split-CIFAR numbers use. ``seeded``: a torch permutation of ``seed``.
    ``sorted``: the dataset's own label order."""
    if kind == "icarl":
        return torch.from_numpy(np.random.RandomState(1993).permutation(num_classes))
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
