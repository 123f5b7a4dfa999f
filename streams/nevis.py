"""Builders of ``nevis.toml``: the NEVIS'22 stream read from disk, and its embedded miniature."""

from __future__ import annotations

import zlib
from typing import Any

import torch
from cladapt.streams.common import common_fields, definitions, require_data_root
from torch.utils.data import TensorDataset

from cladapt.data.digits import digits_split, subset_classes
from cladapt.errors import DataError
from cladapt.stream import Experience, Stream


def _take(x: torch.Tensor, y: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random subset of ``n`` items (all of them if n >= len)."""
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def _nevis_mini_task(t: dict[str, Any], pool: int, test_size: int = 200):
    """(x, y of the ``pool`` examples split into train / dev / dev_test, test x, test y, local
    class names) for one nevis-mini task."""
    from cladapt.data.backgrounds import blend_onto_backgrounds
    from cladapt.data.procedural import GENERATORS

    seed = zlib.crc32(t["name"].encode())
    source = t["source"]
    if source in GENERATORS:
        fn, names = GENERATORS[source]
        x, y = fn(pool + test_size, torch.Generator().manual_seed(seed))
        return x[:pool], y[:pool], x[pool:], y[pool:], names
    train, test = digits_split()
    classes = t.get("classes", list(range(10)))
    (xtr, ytr), (xte, yte) = (
        subset_classes(train, classes).tensors,
        subset_classes(test, classes).tensors,
    )
    if pool > len(ytr):
        raise DataError(f"nevis-mini task {t['name']!r}: {pool} examples wanted, {len(ytr)} exist")
    xtr, ytr = _take(xtr, ytr, pool, seed)
    remap = torch.full((10,), -1, dtype=torch.long)
    remap[torch.as_tensor(classes)] = torch.arange(len(classes))
    ytr, yte = remap[ytr], remap[yte]
    names = [str(c) for c in classes]
    if source == "digits-parity":
        ytr, yte, names = ytr % 2, yte % 2, ["even", "odd"]
    elif source == "digits-textured":
        g = torch.Generator().manual_seed(seed)
        xtr, xte = blend_onto_backgrounds(xtr, g), blend_onto_backgrounds(xte, g)
    elif source != "digits":
        raise DataError(f"nevis-mini task {t['name']!r}: unknown source {source!r}")
    return xtr, ytr, xte, yte, names


def mini_split_sizes(n: int, min_dev: int) -> tuple[int, int, int]:
    """Train, dev and dev_test sizes of a nevis-mini task of ``n`` training examples: dm_nevis'
    70 / 15 / 15 split, with dev and dev_test held at ``min_dev`` examples or more (extra
    examples are drawn for them, the train split keeps its size)."""
    from cladapt.data.nevis import dev_split_sizes

    n_train, n_dev = dev_split_sizes(n)
    return n_train, max(n_dev, min_dev), max(n - n_train - n_dev, min_dev)


# dm_nevis feeds its learners images in [-1, 1] (augmentations.normalize: (x - 0.5) * 2)
DM_NEVIS_RANGE = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def build_nevis_mini(
    name: str, d: dict[str, Any], data_root: str | None = None, seed: int = 0
) -> Stream:
    """Tasks with separate label spaces, laid side by side in one global label space."""
    exps, class_names = [], []
    for t in d["tasks"]:
        n_train, n_dev, n_dev_test = mini_split_sizes(t["train"], d.get("min_dev_split", 0))
        xtr, ytr, xte, yte, names = _nevis_mini_task(t, n_train + n_dev + n_dev_test)
        offset = len(class_names)
        class_names += [f"{t['name']}:{c}" for c in names]
        # train / dev / dev_test (the generated order is already random), plus the test split
        cut = [n_train, n_train + n_dev]
        (x_tr, x_dev, x_dt), (y_tr, y_dev, y_dt) = xtr.tensor_split(cut), ytr.tensor_split(cut)
        exps.append(
            Experience(
                name=f"{t['year']}-{t['name']}",
                kind="task",
                train=TensorDataset(x_tr, y_tr + offset),
                dev=TensorDataset(x_dev, y_dev + offset),
                dev_test=TensorDataset(x_dt, y_dt + offset),
                test=TensorDataset(xte, yte + offset),
                classes=list(range(offset, offset + len(names))),
                metadata={"year": t["year"], "train_size": n_train},
            )
        )
    return Stream(experiences=exps, **(common_fields(name, d) | {"class_names": class_names}))


# dm_nevis' multi-label tasks (``dm_nevis/streams/nevis.py`` _MULTI_LABEL_DATASETS and
# ``benchmarker/datasets/builders/tfds_builder.py`` MULTI_LABEL_DATASETS), by our task keys
MULTI_LABEL_TASKS = frozenset(
    {
        "sun_attributes",
        "voc_actions",
        "pascal_voc2007",
        "iaprtc12",
        "nih_chest_xray",
        "awa2",
        "biwi",
        "voc/2012",
        "voc/2007",
        "celeb_a",
    }
)


def build_nevis(
    name: str,
    d: dict[str, Any],
    data_root: str | None = None,
    seed: int = 0,
    download: bool = False,
) -> Stream:
    """The tasks of the list that are present under --data-root, in order; the rest reported."""
    from cladapt.data.nevis import (
        OffsetTargets,
        open_prepared_splits,
        open_task,
        split_train_dev_dev_test,
    )

    root = require_data_root(data_root, f"stream {name!r}")
    tasks = definitions()[d["like"]]["tasks"] if "like" in d else d["tasks"]
    tasks = [t for t in tasks if t["year"] < d.get("stop_year", 10_000)]
    size = int(d.get("image_size", 32))
    augment = d.get("augmentation") == "dm_nevis"
    exps, class_names, missing = [], [], []
    offsets: dict[str, int] = {}  # a dataset that recurs keeps its task key: the same head
    for t in tasks:
        if t["key"] in MULTI_LABEL_TASKS:
            missing.append(
                f"{t['year']} {t['name']}: multi-label task (dm_nevis scores it by mean average "
                "precision over a sigmoid head; cladapt's heads are single-label), not run"
            )
            continue
        try:
            data = open_task(root, t, size, download, augment)
        except DataError as exc:
            missing.append(f"{t['year']} {t['name']}: {exc}")
            continue
        if t["key"] in offsets:
            offset = offsets[t["key"]]
        else:
            offset = offsets[t["key"]] = len(class_names)
            class_names += [f"{t['key']}:{c}" for c in data.names]
        names, test = data.names, data.test
        prepared = (
            None if "torchvision" in t else open_prepared_splits(root, t, size, names, augment)
        )
        if prepared is not None:
            train, (dev, dev_test) = data.train, prepared
        else:
            seed_of_task = zlib.crc32(t["key"].encode())
            train, dev, dev_test = split_train_dev_dev_test(data, seed_of_task, t["key"])
        exps.append(
            Experience(
                name=f"{t['year']}-{t['key'].replace('/', '-')}",
                kind="task",
                train=OffsetTargets(train, offset),
                dev=OffsetTargets(dev, offset),
                dev_test=OffsetTargets(dev_test, offset),
                test=OffsetTargets(test, offset),
                classes=list(range(offset, offset + len(names))),
                metadata={"year": t["year"], "dataset": t["name"]},
            )
        )
    if not exps:
        raise DataError(
            f"none of the {len(tasks)} tasks of {name!r} is under {root}; e.g. {missing[0]} "
            "(see docs/continual.md for the layouts)"
        )
    common = common_fields(name, d) | {"class_names": class_names, "input_shape": (3, size, size)}
    notes = [f"{len(exps)} of {len(tasks)} tasks found under {root}; {len(missing)} skipped"]
    notes += [f"skipped {m}" for m in missing]
    return Stream(experiences=exps, notes=notes, normalization=DM_NEVIS_RANGE, **common)
