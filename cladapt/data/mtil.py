"""Readers for the 11 MTIL datasets (Zheng et al., ICCV 2023) under ``--data-root``.

Each dataset is read through its torchvision class in that class's standard on-disk layout
(e.g. ``fgvc-aircraft-2013b/``, ``caltech101/101_ObjectCategories/``, ``cifar-100-python/``,
``dtd/dtd/``, ``eurosat/2750/``, ``flowers-102/``, ``food-101/``, ``MNIST/raw/``,
``oxford-iiit-pet/``, ``stanford_cars/``, ``SUN397/``), or else from the split-folder layout the
ZSCL/WiSE-FT data preparation produces: ``<folder>/{train,test}/<class>/*.jpg`` (class names then
come from the folder names). Caltech101, EuroSAT and SUN397 have no official split in torchvision:
a fixed 80/20 split (seed 0, independent of the run's seed) is drawn for them.

Images are resized (bicubic) and centre-cropped to the stream's size and kept in [0, 1]: the CLIP
model normalises them itself. ZSCL's CLIP preprocessing is the same for training and evaluation.
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

SPLIT_SEED = 0
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
            "Aircraft", "FGVCAircraft", {"split": "trainval"}, {"split": "test"}, "fgvc_aircraft"
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


def prompts_table() -> dict[str, dict[str, list[str]]]:
    """Class names and templates per dataset (``streams/prompts/mtil.toml``)."""
    text = resources.files("cladapt.streams").joinpath("prompts/mtil.toml").read_text("utf-8")
    return tomllib.loads(text)


def _rgb(image):
    return image.convert("RGB")


def clip_transform(size: int):
    import torchvision.transforms as T

    return T.Compose(
        [
            T.Lambda(_rgb),
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
        ]
    )


def _torchvision_class(name: str):
    import torchvision.datasets as D

    cls = getattr(D, name)
    # their checks compare md5 sums of the released files; presence is what reading needs (and it
    # lets tests generate small files in the same format): the same checks without the md5s
    if name == "CIFAR100":
        return type(
            "CIFAR100Files",
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


def _fixed_split(ds: Dataset, train: bool) -> Dataset:
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(SPLIT_SEED))
    cut = int(round(TRAIN_FRACTION * len(ds)))
    return Subset(ds, order[:cut].tolist() if train else order[cut:].tolist())


def open_torchvision(root: Path, d: MTILDataset, size: int) -> tuple[Dataset, Dataset] | None:
    """(train, test) through torchvision's class, or None if its files are not there."""
    cls = _torchvision_class(d.torchvision)
    tf = clip_transform(size)
    try:
        if d.split:
            kwargs = {"target_type": "category"} if d.torchvision == "Caltech101" else {}
            full = cls(str(root), transform=tf, download=False, **kwargs)
            return _fixed_split(full, True), _fixed_split(full, False)
        return (
            cls(str(root), transform=tf, download=False, **d.train),
            cls(str(root), transform=tf, download=False, **d.test),
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
    tf = clip_transform(size)
    train, test = ImageFolder(str(base / "train"), tf), ImageFolder(str(base / "test"), tf)
    if train.classes != test.classes:
        raise DataError(f"{base}: train/ and test/ have different class folders")
    names = [c.replace("_", " ") for c in train.classes]
    return train, test, names


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
        names = prompts["classes"]
        base = test.dataset if isinstance(test, Subset) else test
        declared = len(getattr(base, "classes", getattr(base, "categories", [])) or names)
        if declared != len(names):
            raise DataError(
                f"{name}: the files under {root} declare {declared} classes, the MTIL class "
                f"list has {len(names)} (streams/prompts/mtil.toml)"
            )
        return train, test, list(names), list(prompts["templates"])
    folders = open_folders(root, d, size)
    if folders is None:
        return None
    train, test, names = folders
    return train, test, names, list(prompts["templates"])
