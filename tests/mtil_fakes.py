"""Tiny fakes of the 11 MTIL datasets in their real on-disk formats (torchvision's layouts, and the
split-folder layout), with the real class names in the real files (``tests/data/
mtil_raw_class_names.json``: Oxford-IIIT Pet's annotation ids, Caltech101's folders, EuroSAT's
folders, ...) and a couple of 8x8 images per class."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat
from test_uda_readers import write_idx

RNG = np.random.default_rng(0)
RAW_NAMES: dict[str, list[str]] = json.loads(
    (Path(__file__).parent / "data" / "mtil_raw_class_names.json").read_text("utf-8")
)
COUNTS = {"Flowers": 102, "MNIST": 10} | {k: len(v) for k, v in RAW_NAMES.items()}


def _jpg(path: Path, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


def n_classes(name: str) -> int:
    return COUNTS[name]


def aircraft(root: Path) -> None:
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = RAW_NAMES["Aircraft"]
    (data).mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    for split in ("train", "val", "trainval", "test"):
        lines = []
        for i, v in enumerate(variants):
            name = f"{split}{i:05d}"
            _jpg(data / "images" / f"{name}.jpg")
            lines.append(f"{name} {v}")
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")


def caltech101(root: Path) -> None:
    base = root / "caltech101" / "101_ObjectCategories"
    for c in ["BACKGROUND_Google", *RAW_NAMES["Caltech101"]]:
        for j in range(1, 3):
            _jpg(base / c / f"image_{j:04d}.jpg")


def cifar100(root: Path) -> None:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    k = n_classes("CIFAR100")
    for split in ("train", "test"):
        labels = list(range(k))
        data = RNG.integers(0, 255, (k, 3072), dtype=np.uint8)
        with open(base / split, "wb") as f:
            pickle.dump({"data": data, "fine_labels": labels}, f)
    with open(base / "meta", "wb") as f:
        pickle.dump({"fine_label_names": RAW_NAMES["CIFAR100"]}, f)


def dtd(root: Path) -> None:
    data = root / "dtd" / "dtd"
    (data / "labels").mkdir(parents=True)
    classes = RAW_NAMES["DTD"]
    for split in ("train", "val", "test"):
        lines = []
        for c in classes:
            _jpg(data / "images" / c / f"{c}_{split}.jpg")
            lines.append(f"{c}/{c}_{split}.jpg")
        (data / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")


def eurosat(root: Path) -> None:
    for c in RAW_NAMES["EuroSAT"]:
        for j in range(3):
            _jpg(root / "eurosat" / "2750" / c / f"{c}_{j}.jpg")


def flowers(root: Path) -> None:
    base = root / "flowers-102"
    k = n_classes("Flowers")
    labels = np.concatenate([np.arange(1, k + 1)] * 3)
    for i in range(1, len(labels) + 1):
        _jpg(base / "jpg" / f"image_{i:05d}.jpg")
    savemat(base / "imagelabels.mat", {"labels": labels})
    ids = np.arange(1, len(labels) + 1)
    savemat(base / "setid.mat", {"trnid": ids[:k], "valid": ids[k : 2 * k], "tstid": ids[2 * k :]})


def food(root: Path) -> None:
    base = root / "food-101"
    (base / "meta").mkdir(parents=True)
    classes = RAW_NAMES["Food"]
    for split in ("train", "test"):
        meta = {}
        for c in classes:
            _jpg(base / "images" / c / f"{split}1.jpg")
            meta[c] = [f"{c}/{split}1"]
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta))


def mnist(root: Path, n: int = 20) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", RNG.integers(0, 255, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def pets(root: Path) -> None:
    base = root / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True)
    for split in ("trainval", "test"):
        lines = []
        for c, breed in enumerate(RAW_NAMES["OxfordPet"]):  # label = 1 + alphabetical index
            name = f"{breed}_{100 + len(split)}"
            _jpg(base / "images" / f"{name}.jpg")
            lines.append(f"{name} {c + 1} 1 1")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")


def cars(root: Path) -> None:
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    k = n_classes("StanfordCars")
    names = np.array(RAW_NAMES["StanfordCars"], dtype=object)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": names})
    for split, folder, annos in (
        ("train", "cars_train", base / "devkit" / "cars_train_annos.mat"),
        ("test", "cars_test", base / "cars_test_annos_withlabels.mat"),
    ):
        records = np.zeros(k, dtype=[("fname", object), ("class", object)])
        for i in range(k):
            fname = f"{split}{i:05d}.jpg"
            _jpg(base / folder / fname)
            records[i] = (fname, i + 1)
        savemat(annos, {"annotations": records})


def sun397(root: Path) -> None:
    base = root / "SUN397"
    lines = []
    for i, path in enumerate(RAW_NAMES["SUN397"]):
        lines.append(path)
        _jpg(base / path.lstrip("/") / f"sun_{i:03d}.jpg")
    (base / "ClassName.txt").write_text("\n".join(lines) + "\n")


WRITERS = {
    "Aircraft": aircraft,
    "Caltech101": caltech101,
    "CIFAR100": cifar100,
    "DTD": dtd,
    "EuroSAT": eurosat,
    "Flowers": flowers,
    "Food": food,
    "MNIST": mnist,
    "OxfordPet": pets,
    "StanfordCars": cars,
    "SUN397": sun397,
}


def write_split_folders(root: Path, folder: str, classes: list[str]) -> None:
    """The ZSCL/WiSE-FT split-folder layout: <folder>/{train,test}/<class>/*.jpg."""
    for split in ("train", "test"):
        for c in classes:
            _jpg(root / folder / split / c / f"{split}.jpg")


def write_mtil(root: Path, skip: tuple[str, ...] = ()) -> Path:
    for name, write in WRITERS.items():
        if name not in skip:
            write(root)
    return root
