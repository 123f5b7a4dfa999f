"""Builders of ``uda.toml``: on-disk UDA pairs (Office-31 / Office-Home folder layouts, MNIST ->
MNIST-M)."""

from __future__ import annotations

from typing import Any

from cladapt.streams.common import common_fields, require_data_root

from cladapt.stream import Experience, Stream


def build_folder_uda(
    name: str,
    d: dict[str, Any],
    source: str,
    targets: list[str],
    data_root: str | None = None,
    seed: int = 0,
) -> Stream:
    """Office-style pair or multi-target stream from ``<data-root>/<dir>/<domain>/<class>/``."""
    from cladapt.data.folders import find_domain_dir, image_folder, imagenet_transform

    root = require_data_root(data_root, f"stream {name!r}") / d["dir"]
    size = int(d.get("image_size", 224))
    src_dir = find_domain_dir(root, d["domains"][source])
    train_tf, test_tf = imagenet_transform(size, train=True), imagenet_transform(size, train=False)
    src_train = image_folder(src_dir, train_tf)
    classes = src_train.classes
    exps = []
    for t in targets:
        tgt_dir = find_domain_dir(root, d["domains"][t])
        exps.append(
            Experience(
                name=t,
                kind="domain",
                unlabelled=image_folder(tgt_dir, train_tf, classes),
                test=image_folder(tgt_dir, test_tf, classes),
                metadata={"folder": str(tgt_dir)},
            )
        )
    src = Experience(
        name=source, kind="domain", train=src_train, test=image_folder(src_dir, test_tf, classes)
    )
    common = common_fields(name, d) | {"class_names": classes, "input_shape": (3, size, size)}
    return Stream(experiences=exps, source=src, **common)


def build_mnist_mnistm(
    name: str,
    d: dict[str, Any],
    data_root: str | None = None,
    seed: int = 0,
    download: bool = False,
) -> Stream:
    from cladapt.data.folders import MNISTM, mnist

    root = require_data_root(data_root, f"stream {name!r}")
    src = Experience(
        "mnist", "domain", train=mnist(root, True), test=mnist(root, False), classes=list(range(10))
    )
    tgt = Experience("mnist-m", "domain", unlabelled=MNISTM(root, True), test=MNISTM(root, False))
    return Stream(experiences=[tgt], source=src, **common_fields(name, d))
