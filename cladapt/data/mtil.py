"""Readers for the 11 MTIL datasets (Zheng et al., ICCV 2023) under ``--data-root``.

Each dataset is read through its torchvision class in that class's standard on-disk layout
(e.g. ``fgvc-aircraft-2013b/``, ``caltech101/101_ObjectCategories/``, ``cifar-100-python/``,
``dtd/dtd/``, ``eurosat/2750/``, ``flowers-102/``, ``food-101/``, ``MNIST/raw/``,
``oxford-iiit-pet/``, ``stanford_cars/``, ``SUN397/``), or else from the split-folder layout the
ZSCL/WiSE-FT data preparation produces: ``<folder>/{train,test}/<class>/*.jpg`` (class names then
come from the folder names). Caltech101, EuroSAT and SUN397 have no official split in torchvision:
ZSCL's 80/20 split is drawn for them (``random_split`` with ``int(0.8 n)`` training images and
``torch.Generator().manual_seed(42)``, independent of the run's seed), so the test images are the
paper's. Aircraft trains on ``train`` (ZSCL), not ``trainval``.

Class names follow ZSCL's ``collections.py``: the dataset object's own names (underscores ->
spaces) or ZSCL's hand-written names keyed by the dataset's class name (``streams/prompts/
mtil.toml``), never a positional list. Training images get ZSCL's (CLIP's ``_transform(is_train=
True)``) ``RandomResizedCrop(size, scale=(0.9, 1.0))``, bicubic; evaluation resizes (bicubic) and
centre-crops. Images stay in [0, 1]: the CLIP model normalises them itself.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from cladapt.errors import DataError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SPLIT_SEED = 42  # ZSCL's split_dataset
TRAIN_FRACTION = 0.8


@dataclass(frozen=True)
class MTILDataset:
    name: str
    torchvision: str
    train: dict[str, Any] = field(default_factory=dict)  # constructor arguments, training split
    test: dict[str, Any] = field(default_factory=dict)
    folder: str = ""  # split-folder layout directory under --data-root
    split: bool = False  # no official split: draw a fixed one


DATASETS: dict[str, MTILDataset] = {
    d.name: d
    for d in (
        MTILDataset(
            "Aircraft", "FGVCAircraft", {"split": "train"}, {"split": "test"}, "fgvc_aircraft"
        ),
        MTILDataset("Caltech101", "Caltech101", folder="caltech-101", split=True),
        MTILDataset("CIFAR100", "CIFAR100", {"train": True}, {"train": False}, "cifar100"),
        MTILDataset("DTD", "DTD", {"split": "train"}, {"split": "test"}, "dtd"),
        MTILDataset("EuroSAT", "EuroSAT", folder="eurosat", split=True),
        MTILDataset("Flowers", "Flowers102", {"split": "train"}, {"split": "test"}, "flowers"),
        MTILDataset("Food", "Food101", {"split": "train"}, {"split": "test"}, "food-101"),
        MTILDataset("MNIST", "MNIST", {"train": True}, {"train": False}, "mnist"),
        MTILDataset(
            "OxfordPet", "OxfordIIITPet", {"split": "trainval"}, {"split": "test"}, "oxford_pet"
        ),
        MTILDataset(
            "StanfordCars", "StanfordCars", {"split": "train"}, {"split": "test"}, "stanford_cars"
        ),
        MTILDataset("SUN397", "SUN397", folder="sun397", split=True),
    )
}


def prompts_table() -> dict[str, dict[str, Any]]:
    """Templates and class-name rules per dataset (``streams/prompts/mtil.toml``)."""
    text = resources.files("cladapt.streams").joinpath("prompts/mtil.toml").read_text("utf-8")
    return tomllib.loads(text)


def class_names(name: str, dataset_classes: list[str]) -> list[str]:
    """The prompt names of ``dataset_classes`` (the dataset's own names, in label order)."""
    rule = prompts_table()[name]["names"]
    if rule == "dataset":  # ZSCL: dataset.classes through process_labels
        return [c.replace("_", " ") for c in dataset_classes]
    missing = [c for c in dataset_classes if c not in rule]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(
            f"{name}: no ZSCL class name for {len(missing)} class(es) of the files on disk: "
            f"{shown} (streams/prompts/mtil.toml)"
        )
    return [rule[c] for c in dataset_classes]


def _rgb(image):
    return image.convert("RGB")


def clip_transform(size: int, train: bool = False):
    """CLIP's preprocessing as ZSCL uses it, without the normalisation (the model does it)."""
    import torchvision.transforms as T

    bicubic = T.InterpolationMode.BICUBIC
    if train:
        crop = [T.RandomResizedCrop(size, scale=(0.9, 1.0), interpolation=bicubic)]
    else:
        crop = [T.Resize(size, interpolation=bicubic), T.CenterCrop(size)]
    return T.Compose([*crop, T.Lambda(_rgb), T.ToTensor()])


def torchvision_class(name: str):
    """A torchvision dataset class, CIFAR-10/100's and Flowers102's md5 checks relaxed."""
    import torchvision.datasets as D

    cls = getattr(D, name)
    # their checks compare md5 sums of the released files; presence is what reading needs (and it
    # lets tests generate small files in the same format): the same checks without the md5s
    if name in ("CIFAR10", "CIFAR100"):
        return type(
            f"{name}Files",
            (cls,),
            {
                "train_list": [[f, None] for f, _ in cls.train_list],
                "test_list": [[f, None] for f, _ in cls.test_list],
                "meta": {**cls.meta, "md5": None},
            },
        )
    if name == "Flowers102":
        files = {k: (v[0], None) for k, v in cls._file_dict.items()}
        return type("Flowers102Files", (cls,), {"_file_dict": files})
    return cls


def sorted_files(ds: Dataset) -> Dataset:
    """A torchvision dataset that lists its files by walking the disk (SUN397: ``rglob``) holds
    them in the file system's order, which differs between machines; ZSCL's seeded split then
    cuts a different train / test. The files (and their labels) sorted by path make the split
    the same everywhere. ZSCL's own code does not sort: its split is the order of the machine it
    ran on."""
    files, labels = getattr(ds, "_image_files", None), getattr(ds, "_labels", None)
    if files is not None and labels is not None:
        order = sorted(range(len(files)), key=lambda i: str(files[i]))
        ds._image_files = [files[i] for i in order]
        ds._labels = [labels[i] for i in order]
    return ds


def zscl_split(ds: Dataset, train: bool) -> Dataset:
    """ZSCL's ``split_dataset``: random_split into int(0.8 n) / rest with seed 42 (of the files in
    sorted order: :func:`sorted_files`)."""
    ds = sorted_files(ds)
    n = len(ds)
    n_train = int(TRAIN_FRACTION * n)
    parts = torch.utils.data.random_split(
        ds, [n_train, n - n_train], generator=torch.Generator().manual_seed(SPLIT_SEED)
    )
    return parts[0] if train else parts[1]


def open_torchvision(root: Path, d: MTILDataset, size: int) -> tuple[Dataset, Dataset] | None:
    """(train, test) through torchvision's class, or None if its files are not there."""
    cls = torchvision_class(d.torchvision)
    train_tf, test_tf = clip_transform(size, train=True), clip_transform(size)
    try:
        if d.split:
            kwargs = {"target_type": "category"} if d.torchvision == "Caltech101" else {}
            train = cls(str(root), transform=train_tf, download=False, **kwargs)
            test = cls(str(root), transform=test_tf, download=False, **kwargs)
            return zscl_split(train, True), zscl_split(test, False)
        return (
            cls(str(root), transform=train_tf, download=False, **d.train),
            cls(str(root), transform=test_tf, download=False, **d.test),
        )
    except (RuntimeError, FileNotFoundError):
        return None


def open_folders(
    root: Path, d: MTILDataset, size: int
) -> tuple[Dataset, Dataset, list[str]] | None:
    """(train, test, class names) from ``<folder>/{train,test}/<class>/``, or None."""
    from torchvision.datasets import ImageFolder

    base = root / d.folder
    if not ((base / "train").is_dir() and (base / "test").is_dir()):
        return None
    train = ImageFolder(str(base / "train"), clip_transform(size, train=True))
    test = ImageFolder(str(base / "test"), clip_transform(size))
    if train.classes != test.classes:
        raise DataError(f"{base}: train/ and test/ have different class folders")
    return train, test, class_names(d.name, train.classes)


def expected_location(d: MTILDataset) -> str:
    tv = {
        "FGVCAircraft": "fgvc-aircraft-2013b/",
        "Caltech101": "caltech101/101_ObjectCategories/",
        "CIFAR100": "cifar-100-python/",
        "DTD": "dtd/dtd/",
        "EuroSAT": "eurosat/2750/",
        "Flowers102": "flowers-102/",
        "Food101": "food-101/",
        "MNIST": "MNIST/raw/",
        "OxfordIIITPet": "oxford-iiit-pet/",
        "StanfordCars": "stanford_cars/",
        "SUN397": "SUN397/",
    }[d.torchvision]
    return f"{tv} (torchvision {d.torchvision}) or {d.folder}/{{train,test}}/<class>/"


def open_mtil_dataset(
    root: Path, name: str, size: int
) -> tuple[Dataset, Dataset, list[str], list[str]] | None:
    """(train, test, class names, templates) of one MTIL dataset, or None when it is missing."""
    d = DATASETS[name]
    prompts = prompts_table()[name]
    opened = open_torchvision(root, d, size)
    if opened is not None:
        train, test = opened
        base = test.dataset if isinstance(test, Subset) else test
        own = getattr(base, "classes", None) or getattr(base, "categories", None)
        if not own:
            raise DataError(f"{name}: the dataset under {root} carries no class names")
        return train, test, class_names(name, list(own)), list(prompts["templates"])
    folders = open_folders(root, d, size)
    if folders is None:
        return None
    train, test, names = folders
    return train, test, names, list(prompts["templates"])
