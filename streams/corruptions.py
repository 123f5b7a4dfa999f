"""Builders of ``corruptions.toml``: test-time corruption streams (digits-c embedded; CIFAR10-C /
CIFAR100-C / ImageNet-C from disk)."""

from __future__ import annotations

import functools
from typing import Any

from cladapt.streams.common import common_fields, digits_source, require_data_root

from cladapt.errors import DataError
from cladapt.stream import Experience, Stream


def _corruption_experiences(
    d: dict[str, Any], load, names: list[str] | None = None
) -> list[Experience]:
    """One domain per corruption at the stream's severity; ``at_severity`` for the others."""
    from cladapt.data.corruptions import CORRUPTIONS

    names = names or d.get("corruptions", list(CORRUPTIONS))
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
    stream = Stream(experiences=exps, source=source, **common)
    if source is None:  # said if a run needs the source data (neither --checkpoint nor weights)
        stream.source_missing = f"no {d['source_dataset']} under {root} in torchvision's layout"
    return with_size_facts(stream, n, root)


def with_size_facts(stream: Stream, standard: int | None, root) -> Stream:
    """Record how many test images each domain has and where they were read (``params_json``'s
    ``stream`` facts); a real stream smaller than its standard size (a truncated download, a
    test fixture) says so in a note and is its own configuration (``images_per_domain=N``), so
    its rows never merge with, or stand beside published numbers as, a standard run's."""
    sizes = {len(e.test) for e in stream.experiences}
    smallest = min(sizes) if sizes else 0
    stream.facts = {**stream.facts, "images_per_domain": smallest, "data_root": str(root)}
    if standard is not None and smallest < standard:
        stream.facts["standard_images_per_domain"] = standard
        stream.notes.append(
            f"{stream.name}: {smallest} test images per domain where the released benchmark has "
            f"{standard}: not comparable with published numbers (its rows are labelled "
            f"images_per_domain={smallest})"
        )
    return stream


# CoTTA's ten ImageNet-C orders (qinenergy/cotta imagenet/cfgs/10orders/cotta/cotta<k>.yaml);
# its published ImageNet-C numbers are means over them
COTTA_ORDERS = [
    "brightness pixelate gaussian_noise motion_blur zoom_blur glass_blur impulse_noise "
    "jpeg_compression defocus_blur elastic_transform shot_noise frost snow fog contrast",
    "jpeg_compression shot_noise zoom_blur frost contrast fog defocus_blur elastic_transform "
    "gaussian_noise brightness glass_blur impulse_noise pixelate snow motion_blur",
    "contrast defocus_blur gaussian_noise shot_noise snow frost glass_blur zoom_blur "
    "elastic_transform jpeg_compression pixelate brightness impulse_noise motion_blur fog",
    "shot_noise fog glass_blur pixelate snow elastic_transform brightness impulse_noise "
    "defocus_blur frost contrast gaussian_noise motion_blur jpeg_compression zoom_blur",
    "pixelate glass_blur zoom_blur snow fog impulse_noise brightness motion_blur frost "
    "jpeg_compression gaussian_noise shot_noise contrast defocus_blur elastic_transform",
    "motion_blur snow fog shot_noise defocus_blur contrast zoom_blur brightness frost "
    "elastic_transform glass_blur gaussian_noise pixelate jpeg_compression impulse_noise",
    "frost impulse_noise jpeg_compression contrast zoom_blur glass_blur pixelate snow "
    "defocus_blur motion_blur brightness elastic_transform shot_noise fog gaussian_noise",
    "glass_blur zoom_blur impulse_noise fog snow jpeg_compression gaussian_noise frost "
    "shot_noise brightness contrast motion_blur pixelate defocus_blur elastic_transform",
    "defocus_blur motion_blur zoom_blur shot_noise gaussian_noise glass_blur jpeg_compression "
    "fog contrast pixelate frost snow brightness elastic_transform impulse_noise",
    "contrast gaussian_noise defocus_blur zoom_blur frost glass_blur jpeg_compression fog "
    "pixelate elastic_transform shot_noise impulse_noise snow motion_blur brightness",
]


def corruption_names(d: dict[str, Any], order: str, seed: int) -> list[str] | None:
    """The domains in the order ``corruption_order`` asks for (None: the stream's own)."""
    if order in ("", "standard"):
        return None
    if order == "cotta10":
        return COTTA_ORDERS[seed % 10].split()
    raise DataError(f"--set corruption_order={order}: expected standard or cotta10")


def build_imagenet_c(
    name: str,
    d: dict[str, Any],
    data_root: str | None = None,
    seed: int = 0,
    preprocess: str = "",
    corruption_order: str = "",
) -> Stream:
    """ImageNet-C folders; no source data (use ``--pretrained`` or ``--checkpoint``)."""
    from cladapt.data.corruption_sets import PREPROCESSING, find_dir, imagenet_c
    from cladapt.data.folders import IMAGENET_MEAN, IMAGENET_STD

    root = require_data_root(data_root, f"stream {name!r}")
    sev = int(d.get("severity", 5))
    directory = find_dir(root, d["dir"], f"gaussian_noise/{sev}")
    n = d.get("n_examples")
    preprocess = preprocess or d.get("preprocess", "crop224")
    if preprocess not in PREPROCESSING:
        raise DataError(f"--set preprocess={preprocess}: expected {' or '.join(PREPROCESSING)}")
    names = corruption_names(d, corruption_order, seed)
    exps = _corruption_experiences(
        d, lambda c, s: imagenet_c(directory, c, s, n, preprocess=preprocess), names
    )
    first = exps[0].test
    classes = (first.dataset if hasattr(first, "dataset") else first).classes
    common = common_fields(name, d) | {"class_names": classes, "input_shape": (3, 224, 224)}
    stream = Stream(
        experiences=exps,
        normalization=(tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)),
        **common,
    )
    stream.source_missing = "ImageNet-C has no source data: the source model is pre-trained"
    stream.has_source_data = False
    stream.facts = {**stream.facts, "preprocess": preprocess}
    if names is not None:
        stream.facts["corruption_order"] = f"{corruption_order} #{seed % 10}"
    return with_size_facts(stream, int(n) if n else IMAGENET_C_IMAGES, root)


IMAGENET_C_IMAGES = 50_000  # per corruption and severity, as released
