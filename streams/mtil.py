"""Builders of ``mtil.toml``: MTIL (11 datasets for CLIP, read from disk) and its embedded
miniature."""

from __future__ import annotations

import zlib
from typing import Any

import torch
from cladapt.streams.common import common_fields, require_data_root
from torch.utils.data import TensorDataset

from cladapt.errors import DataError
from cladapt.stream import Experience, Stream


def build_mtil(name: str, d: dict[str, Any], data_root: str | None = None, seed: int = 0) -> Stream:
    """MTIL: the 11 datasets in ``d["order"]``, each with its own classes and prompts; every
    missing dataset is named in one error."""
    from cladapt.data.mtil import DATASETS, expected_location, open_mtil_dataset
    from cladapt.data.nevis import OffsetTargets

    root = require_data_root(data_root, f"stream {name!r}")
    size = int(d.get("image_size", 224))
    opened, missing = {}, []
    for ds_name in d["order"]:
        found = open_mtil_dataset(root, ds_name, size)
        if found is None:
            missing.append(f"{ds_name} ({expected_location(DATASETS[ds_name])})")
        opened[ds_name] = found
    if missing:
        raise DataError(
            f"stream {name!r}: {len(missing)} of {len(d['order'])} MTIL datasets not found under "
            f"{root}: " + "; ".join(missing)
        )
    exps, class_names, prompts = [], [], []
    for ds_name in d["order"]:
        train, test, names, templates = opened[ds_name]
        offset = len(class_names)
        class_names += [f"{ds_name}/{c}" for c in names]
        prompts += [[t.format(c) for t in templates] for c in names]
        lr = d.get("task_lr", {}).get(ds_name)
        exps.append(
            Experience(
                name=ds_name,
                kind="task",
                train=OffsetTargets(train, offset),
                test=OffsetTargets(test, offset),
                classes=list(range(offset, offset + len(names))),
                metadata={"lr": lr} if lr else {},
            )
        )
    common = common_fields(name, d) | {"class_names": class_names, "input_shape": (3, size, size)}
    return Stream(experiences=exps, prompts=prompts, **common)


def build_mtil_mini(
    name: str, d: dict[str, Any], data_root: str | None = None, seed: int = 0
) -> Stream:
    """Embedded MTIL on generated captioned scenes (its default model, the pre-trained
    ``clip-tiny-rn``, is pre-trained once and cached)."""
    from cladapt.data.mtil_mini import TASKS, task_split

    shape = (3, 32, 32)
    exps, class_names, prompts = [], [], []
    for task_name in d["tasks"]:
        task = TASKS[task_name]
        train, test = task_split(task, d["train"], d["test"], seed=zlib.crc32(task_name.encode()))
        offset = len(class_names)
        shift = torch.tensor(offset)
        exps.append(
            Experience(
                name=task_name,
                kind="task",
                train=TensorDataset(train.tensors[0], train.tensors[1] + shift),
                test=TensorDataset(test.tensors[0], test.tensors[1] + shift),
                classes=list(range(offset, offset + len(task.classes))),
            )
        )
        class_names += [f"{task_name}/{c}" for c in task.classes]
        prompts += [[t.format(c) for t in task.templates] for c in task.classes]
    common = common_fields(name, d) | {"class_names": class_names, "input_shape": shape}
    return Stream(experiences=exps, prompts=prompts, **common)
