"""Builders of ``corruptions.toml``: test-time corruption streams (digits-c embedded; CIFAR10-C /
CIFAR100-C / ImageNet-C from disk)."""

from __future__ import annotations

import functools
from typing import Any

from cladapt.streams.common import common_fields, digits_source, require_data_root

from cladapt.errors import DataError
from cladapt.stream import Experience, Stream


def _corruption_experiences(d: dict[str, Any], load) -> list[Experience]:
    """One domain per corruption at the stream's severity; ``at_severity`` for the others."""
    from cladapt.data.corruptions import CORRUPTIONS

    names = d.get("corruptions", list(CORRUPTIONS))
    sev = int(d.get("severity", 5))
    return [
        Experience(
            name=c,
            kind="domain",
            test=load(c, sev),
            metadata={"corruption": c, "severity": sev},
            at_severity=functools.partial(load, c),
        )
        for c in names
    ]


def build_digits_corruptions(
    name: str, d: dict[str, Any], data_root: str | None = None, seed: int = 0
) -> Stream:
    from cladapt.data.corruption_sets import digits_c

    return Stream(
        experiences=_corruption_experiences(d, digits_c),
        source=digits_source(),
        **common_fields(name, d),
    )


def build_cifar_c(
    name: str,
    d: dict[str, Any],
    data_root: str | None = None,
    seed: int = 0,
    download: bool = False,
) -> Stream:
    """CIFAR-10-C / CIFAR-100-C; the source experience is the clean CIFAR training set."""
    from cladapt.data.corruption_sets import cifar_c, find_dir
    from cladapt.data.scenarios import open_dataset

    root = require_data_root(data_root, f"stream {name!r}")
    directory = find_dir(root, d["dir"], "labels.npy")
    n = int(d.get("n_examples", 10_000))
    num_classes = 100 if "100" in d["source_dataset"] else 10
    exps = _corruption_experiences(d, lambda c, s: cifar_c(directory, c, s, n, num_classes))
    source = None
    try:
        train, test, names = open_dataset({"torchvision": d["source_dataset"]}, root, 32, download)
        source = Experience(name="clean", kind="domain", train=train, test=test)
    except DataError:
        names = [str(i) for i in range(num_classes)]
    common = common_fields(name, d) | {"class_names": list(names)}
    notes = [] if source else [f"no {d['source_dataset']} under {root}: no source model to train"]
    return Stream(experiences=exps, source=source, notes=notes, **common)


def build_imagenet_c(
    name: str, d: dict[str, Any], data_root: str | None = None, seed: int = 0
) -> Stream:
    """ImageNet-C folders; no source data (use ``--pretrained`` or ``--checkpoint``)."""
    from cladapt.data.corruption_sets import find_dir, imagenet_c
    from cladapt.data.folders import IMAGENET_MEAN, IMAGENET_STD

    root = require_data_root(data_root, f"stream {name!r}")
    sev = int(d.get("severity", 5))
    directory = find_dir(root, d["dir"], f"gaussian_noise/{sev}")
    n = d.get("n_examples")
    exps = _corruption_experiences(d, lambda c, s: imagenet_c(directory, c, s, n))
    first = exps[0].test
    classes = (first.dataset if hasattr(first, "dataset") else first).classes
    common = common_fields(name, d) | {"class_names": classes, "input_shape": (3, 224, 224)}
    return Stream(
        experiences=exps,
        normalization=(tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)),
        **common,
    )
