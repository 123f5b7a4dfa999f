"""Readers for NEVIS-style task lists: torchvision datasets in their standard layouts, or any
task in the folder layout ``<root>/nevis/<key>/{train,test}/<class>/*``."""

from __future__ import annotations

from dataclasses import dataclass
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


class CentralSquare:
    """The largest centred square of an image (dm_nevis' ``central_crop_window``)."""

    def __call__(self, img):
        return T.functional.center_crop(img, [min(img.size)])


def task_transform(size: int, mode: str = "resize") -> T.Compose:
    """``resize``: squash to size x size. dm_nevis' augmentations (``experiments_jax/configs/
    finetuning_dknn.py``): ``train`` = a random window of 8 % to 100 % of the area with aspect
    ratio 3/4 to 4/3 resized to size x size (``random_crop_via_cropped_window_and_resize``;
    torchvision's RandomResizedCrop draws the same window family) and a random horizontal flip;
    ``eval`` = the central square resized (``central_crop_via_cropped_window_and_resize``)."""
    if mode == "train":
        steps = [
            T.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
            T.RandomHorizontalFlip(),
        ]
    elif mode == "eval":
        steps = [CentralSquare(), T.Resize((size, size))]
    else:
        steps = [T.Resize((size, size))]
    return T.Compose([T.Lambda(to_rgb), *steps, T.ToTensor()])


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
    root: Path,
    task: dict[str, Any],
    split: str,
    size: int,
    download: bool,
    mode: str = "resize",
) -> Dataset:
    """``split``: train, test, or val (the official validation split of the datasets that have
    one, see ``VALIDATION_SPLIT``)."""
    from cladapt.data.mtil import torchvision_class

    name = task["torchvision"]
    cls = torchvision_class(name)
    kwargs: dict[str, Any] = {
        "transform": task_transform(size, mode),
        "download": download,
        **_EXTRA.get(name, {}),
    }
    if name in _TRAIN_FLAG:
        kwargs["train"] = split == "train"
    elif split == "val":
        kwargs["split"] = VALIDATION_SPLIT[name]
    else:
        kwargs["split"] = _SPLITS.get(name, ("train", "test"))[0 if split == "train" else 1]
    try:
        return cls(str(root), **kwargs)
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        raise DataError(
            f"torchvision {name} not found under {root} ({str(exc).splitlines()[0][:80]})"
        ) from None


def _folder(
    root: Path, task: dict[str, Any], split: str, size: int, mode: str = "resize"
) -> Dataset:
    from torchvision.datasets import ImageFolder

    path = root / "nevis" / task["key"] / split
    if not path.is_dir():
        raise DataError(f"missing {path}/<class>/*")
    try:
        return ImageFolder(str(path), transform=task_transform(size, mode))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


@dataclass
class TaskData:
    """One task as read from disk: its training split twice (with the training transform, and
    with the evaluation transform for the dev / dev_test examples cut from it), its test split,
    its class names and, for the datasets that have one, the official validation split."""

    train: Dataset
    train_eval: Dataset
    test: Dataset
    names: list[str]
    validation: Dataset | None = None


def open_task(
    root: Path, task: dict[str, Any], size: int, download: bool = False, augment: bool = False
) -> TaskData:
    """One task of a NEVIS list; DataError if its files are missing. ``augment``: dm_nevis'
    training augmentation and central-crop evaluation (see :func:`task_transform`)."""
    train_mode, eval_mode = ("train", "eval") if augment else ("resize", "resize")
    if "torchvision" in task:

        def read(split: str, mode: str) -> Dataset:
            return _torchvision(root, task, split, size, download, mode)

        train, train_eval = read("train", train_mode), read("train", eval_mode)
        test = read("test", eval_mode)
        names = [str(c) for c in getattr(train, "classes", [])] or [
            str(i) for i in range(task["classes"])
        ]
        has_val = task["torchvision"] in VALIDATION_SPLIT
        return TaskData(train, train_eval, test, names, read("val", eval_mode) if has_val else None)
    train = _folder(root, task, "train", size, train_mode)
    train_eval = _folder(root, task, "train", size, eval_mode)
    test = _folder(root, task, "test", size, eval_mode)
    if test.classes != train.classes:
        raise DataError(f"{root / 'nevis' / task['key']}: train and test class folders differ")
    validation = None
    if task["key"] in VALIDATION_KEYS:  # TFDS's validation split, exported as val/
        if not (root / "nevis" / task["key"] / "val").is_dir():
            raise DataError(
                f"missing {root / 'nevis' / task['key'] / 'val'}/<class>/* (dm_nevis uses "
                f"{task['key']}'s validation split as its dev_test)"
            )
        validation = _folder(root, task, "val", size, eval_mode)
    return TaskData(train, train_eval, test, list(train.classes), validation)


def dev_split_sizes(n: int, fractions: tuple[float, float] = (0.7, 0.15)) -> tuple[int, int]:
    """dm_nevis' train and dev sizes of ``n`` training examples (dev_test: the rest)."""
    return int(n * fractions[0]), int(n * fractions[1])


# dm_nevis' (train, dev) fractions of a training split (``nevis_stream.py``,
# ``_dataset_splits_for_tfds``): 70 / 15 and the rest as dev_test for datasets with a train and a
# test split; ImageNet 90 / 5 / 5 (its test split is the official validation set); 80 / 20 and no
# dev_test cut for datasets with an official validation split, which is their dev_test
SPLIT_FRACTIONS = {"imagenet2012": (0.9, 0.05)}
VALIDATION_FRACTIONS = (0.8, 0.2)
# torchvision datasets among dm_nevis' _TFDS_DATASETS_TRAIN_VALIDATION_TEST_DATASETS, with the
# name of their validation split
VALIDATION_SPLIT = {"DTD": "val", "Flowers102": "val", "PCAM": "val"}
# tasks read from folders that are on that list: their TFDS validation split is a val/ folder
VALIDATION_KEYS = {"sun397", "patch_camelyon"}


def split_train_dev_dev_test(
    data: TaskData, seed: int, key: str = ""
) -> tuple[Dataset, Dataset, Dataset]:
    """dm_nevis' split of a task's training data into train / dev / dev_test, on a fixed seeded
    shuffle (TFDS's own file order is not available here): the first ``int(f_train n)``, the
    next ``int(f_dev n)`` and the rest (:data:`SPLIT_FRACTIONS`, default 70 / 15 / 15); for a
    dataset with an official validation split, train / dev = 80 / 20 and dev_test = the
    validation split. Dev and dev_test examples are read with the evaluation transform."""
    n = len(data.train)  # type: ignore[arg-type]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    if data.validation is not None:
        n_train, _ = dev_split_sizes(n, VALIDATION_FRACTIONS)
        return (
            Subset(data.train, order[:n_train]),
            Subset(data.train_eval, order[n_train:]),
            data.validation,
        )
    n_train, n_dev = dev_split_sizes(n, SPLIT_FRACTIONS.get(key, (0.7, 0.15)))
    return (
        Subset(data.train, order[:n_train]),
        Subset(data.train_eval, order[n_train : n_train + n_dev]),
        Subset(data.train_eval, order[n_train + n_dev :]),
    )


def open_prepared_splits(
    root: Path, task: dict[str, Any], size: int, classes: list[str], augment: bool = False
) -> tuple[Dataset, Dataset] | None:
    """(dev, dev_test) from ``nevis/<key>/{dev,dev-test}/<class>/*`` when a task's folders have
    them (dm_nevis' prepared datasets name their splits train / dev / dev-test / test); the
    train folder then holds the training split only. None when the task has no such folders."""
    base = root / "nevis" / task["key"]
    if not (base / "dev").is_dir() and not (base / "dev-test").is_dir():
        return None
    mode = "eval" if augment else "resize"
    dev = _folder(root, task, "dev", size, mode)
    dev_test = _folder(root, task, "dev-test", size, mode)
    for split, ds in (("dev", dev), ("dev-test", dev_test)):
        if ds.classes != classes:
            raise DataError(f"{base}: {split} and train class folders differ")
    return dev, dev_test
