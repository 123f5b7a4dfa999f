"""Registers the stream definitions in this package's ``*.toml`` files."""

from __future__ import annotations

import functools
import sys
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from cladapt.data.digits import CLASS_NAMES, digits_split, subset_classes
from cladapt.data.shifts import apply_shift
from cladapt.errors import ConfigError, DataError
from cladapt.hookspecs import hookimpl
from cladapt.registry import StreamRegistry
from cladapt.stream import Experience, Stream, TTAAugmentation

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _shifted(ds: TensorDataset, shift: str, level: float, name: str) -> TensorDataset:
    x, y = ds.tensors
    return TensorDataset(apply_shift(x, shift, level, seed=zlib.crc32(name.encode())), y)


def _common(name: str, d: dict[str, Any]) -> dict[str, Any]:
    return dict(
        name=name,
        protocol=d["protocol"],
        class_names=list(CLASS_NAMES),
        input_shape=(3, 32, 32),
        settings=tuple(d.get("settings", ())),
        defaults=dict(d.get("defaults", {})),
        description=d.get("description", ""),
        source_id=d.get("source_id", ""),
        tta_augmentation=TTAAugmentation(**d.get("tta_augmentation", {})),
    )


def build_digits_classes(
    name: str, d: dict[str, Any], data_root: str | None = None, seed: int = 0
) -> Stream:
    train, test = digits_split()
    exps = [
        Experience(
            name=f"task{i}:" + "".join(map(str, classes)),
            kind="task",
            train=subset_classes(train, classes),
            test=subset_classes(test, classes),
            classes=list(classes),
        )
        for i, classes in enumerate(d["tasks"])
    ]
    return Stream(experiences=exps, **_common(name, d))


def _source() -> Experience:
    train, test = digits_split()
    return Experience(name="clean", kind="domain", train=train, test=test, classes=list(range(10)))


def build_digits_shifts(
    name: str, d: dict[str, Any], data_root: str | None = None, seed: int = 0
) -> Stream:
    _, test = digits_split()
    exps = [
        Experience(
            name=dom["name"],
            kind="domain",
            test=_shifted(test, dom["shift"], dom["level"], f"test/{dom['name']}"),
            metadata={"shift": dom["shift"], "level": dom["level"]},
        )
        for dom in d["domains"]
    ]
    return Stream(experiences=exps, source=_source(), **_common(name, d))


def build_digits_uda(
    name: str, d: dict[str, Any], data_root: str | None = None, seed: int = 0
) -> Stream:
    train, test = digits_split()
    exps = [
        Experience(
            name=t["name"],
            kind="domain",
            # the target's training images: a differently seeded shift of the train split
            # (labels kept for the target-oracle; the protocol strips them for every method)
            unlabelled=_shifted(train, t["shift"], t.get("level", 0.0), f"train/{t['name']}"),
            test=_shifted(test, t["shift"], t.get("level", 0.0), f"test/{t['name']}"),
            metadata={"shift": t["shift"], "level": t.get("level", 0.0)},
        )
        for t in d["targets"]
    ]
    return Stream(experiences=exps, source=_source(), **_common(name, d))


def build_fonts_digits(
    name: str, d: dict[str, Any], data_root: str | None = None, seed: int = 0
) -> Stream:
    """Synthetic -> real digits (SynNumbers -> SVHN in miniature): digits rendered from the
    fonts matplotlib bundles (labelled source) -> scikit-learn's handwritten digits (target)."""
    from cladapt.data.uda_pairs import render_font_digits

    size = 32
    src_train = TensorDataset(*render_font_digits(int(d["source_train"]), size, seed=1))
    src_test = TensorDataset(*render_font_digits(int(d["source_test"]), size, seed=2))
    train, test = digits_split()
    source = Experience(name="fonts", kind="domain", train=src_train, test=src_test)
    target = Experience(name="digits", kind="domain", unlabelled=train, test=test)
    return Stream(experiences=[target], source=source, **_common(name, d))


def _data_root(data_root: str | None, what: str) -> Path:
    if not data_root:
        raise DataError(f"{what} reads files from disk: pass --data-root DIR")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DataError(f"--data-root {root} is not a directory")
    return root


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

    root = _data_root(data_root, f"stream {name!r}") / d["dir"]
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
    common = _common(name, d) | {"class_names": classes, "input_shape": (3, size, size)}
    return Stream(experiences=exps, source=src, **common)


def build_mnist_mnistm(
    name: str,
    d: dict[str, Any],
    data_root: str | None = None,
    seed: int = 0,
    download: bool = False,
) -> Stream:
    from cladapt.data.folders import MNISTM, mnist

    root = _data_root(data_root, f"stream {name!r}")
    src = Experience(
        "mnist", "domain", train=mnist(root, True), test=mnist(root, False), classes=list(range(10))
    )
    tgt = Experience("mnist-m", "domain", unlabelled=MNISTM(root, True), test=MNISTM(root, False))
    return Stream(experiences=[tgt], source=src, **_common(name, d))


def _take(x: torch.Tensor, y: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random subset of ``n`` items (all of them if n >= len)."""
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def _nevis_mini_task(t: dict[str, Any], test_size: int = 200):
    """(train x, train y, test x, test y, local class names) for one nevis-mini task."""
    from cladapt.data.backgrounds import blend_onto_backgrounds
    from cladapt.data.procedural import GENERATORS

    seed = zlib.crc32(t["name"].encode())
    source = t["source"]
    if source in GENERATORS:
        fn, names = GENERATORS[source]
        x, y = fn(t["train"] + test_size, torch.Generator().manual_seed(seed))
        return x[: t["train"]], y[: t["train"]], x[t["train"] :], y[t["train"] :], names
    train, test = digits_split()
    classes = t.get("classes", list(range(10)))
    (xtr, ytr), (xte, yte) = (
        subset_classes(train, classes).tensors,
        subset_classes(test, classes).tensors,
    )
    xtr, ytr = _take(xtr, ytr, t["train"], seed)
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


def build_nevis_mini(
    name: str, d: dict[str, Any], data_root: str | None = None, seed: int = 0
) -> Stream:
    """Tasks with separate label spaces, laid side by side in one global label space."""
    from cladapt.data.nevis import dev_split_sizes

    exps, class_names = [], []
    for t in d["tasks"]:
        xtr, ytr, xte, yte, names = _nevis_mini_task(t)
        offset = len(class_names)
        class_names += [f"{t['name']}:{c}" for c in names]
        # dm_nevis' 70 / 15 / 15 train / dev / dev_test split of the training data (the
        # generated order is already random), plus the separate test split
        n_train, n_dev = dev_split_sizes(len(ytr))
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
    return Stream(experiences=exps, **(_common(name, d) | {"class_names": class_names}))


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

    root = _data_root(data_root, f"stream {name!r}")
    tasks = definitions()[d["like"]]["tasks"] if "like" in d else d["tasks"]
    tasks = [t for t in tasks if t["year"] < d.get("stop_year", 10_000)]
    size = int(d.get("image_size", 32))
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
            train, test, names = open_task(root, t, size, download)
        except DataError as exc:
            missing.append(f"{t['year']} {t['name']}: {exc}")
            continue
        if t["key"] in offsets:
            offset = offsets[t["key"]]
        else:
            offset = offsets[t["key"]] = len(class_names)
            class_names += [f"{t['key']}:{c}" for c in names]
        prepared = None if "torchvision" in t else open_prepared_splits(root, t, size, names)
        if prepared is not None:
            dev, dev_test = prepared
        else:
            train, dev, dev_test = split_train_dev_dev_test(train, zlib.crc32(t["key"].encode()))
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
    common = _common(name, d) | {"class_names": class_names, "input_shape": (3, size, size)}
    notes = [f"{len(exps)} of {len(tasks)} tasks found under {root}; {len(missing)} skipped"]
    notes += [f"skipped {m}" for m in missing]
    return Stream(experiences=exps, notes=notes, **common)


def _scenario_dataset(
    d: dict[str, Any], data_root: str | None, download: bool, image_size: int = 0
):
    """(train, test, class names, image size) of a scenario's ``dataset`` spec; ``image_size``
    (``--set image_size=``) overrides the stream's."""
    from cladapt.data.scenarios import open_dataset

    size = int(image_size or d.get("image_size", 32))
    if image_size and "embedded" in d["dataset"]:
        raise ConfigError(f"{d['dataset']}: embedded images have a fixed size; drop image_size")
    root = Path(data_root).expanduser() if data_root else None
    return (*open_dataset(d["dataset"], root, size, download), size)


def build_split_classes(
    name: str,
    d: dict[str, Any],
    data_root: str | None = None,
    seed: int = 0,
    download: bool = False,
    image_size: int = 0,
    class_order: str = "",
) -> Stream:
    from cladapt.data import scenarios

    train, test, names, size = _scenario_dataset(d, data_root, download, image_size)
    kind = class_order or d.get("class_order", "seeded")
    order = scenarios.class_order(len(names), kind, int(d.get("class_order_seed", 0)))
    tasks = scenarios.split_by_classes(train, test, int(d["tasks"]), order)
    exps = [
        Experience(name=f"task{t}", kind="task", train=tr, test=te, classes=ids)
        for t, (tr, te, ids) in enumerate(tasks)
    ]
    common = _common(name, d) | {
        "class_names": [names[i] for i in order],
        "input_shape": (3, size, size),
        "facts": {"class_order": kind, "classes": order.tolist(), "image_size": size},
        "normalize_for_pretrained": True,
    }
    return Stream(experiences=exps, **common)


def build_rotated_domains(
    name: str,
    d: dict[str, Any],
    data_root: str | None = None,
    seed: int = 0,
    download: bool = False,
    image_size: int = 0,
) -> Stream:
    from cladapt.data.scenarios import rotated

    train, test, names, size = _scenario_dataset(d, data_root, download, image_size)
    exps = [
        Experience(
            name=f"rot{a}",
            kind="domain",
            train=rotated(train, a),
            test=rotated(test, a),
            metadata={"angle": a},
        )
        for a in d["angles"]
    ]
    common = _common(name, d) | {
        "class_names": names,
        "input_shape": (3, size, size),
        "facts": {"image_size": size},
        "normalize_for_pretrained": True,
    }
    return Stream(experiences=exps, **common)


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
        experiences=_corruption_experiences(d, digits_c), source=_source(), **_common(name, d)
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

    root = _data_root(data_root, f"stream {name!r}")
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
    common = _common(name, d) | {"class_names": list(names)}
    notes = [] if source else [f"no {d['source_dataset']} under {root}: no source model to train"]
    return Stream(experiences=exps, source=source, notes=notes, **common)


def build_imagenet_c(
    name: str, d: dict[str, Any], data_root: str | None = None, seed: int = 0
) -> Stream:
    """ImageNet-C folders; no source data (use ``--pretrained`` or ``--checkpoint``)."""
    from cladapt.data.corruption_sets import find_dir, imagenet_c
    from cladapt.data.folders import IMAGENET_MEAN, IMAGENET_STD

    root = _data_root(data_root, f"stream {name!r}")
    sev = int(d.get("severity", 5))
    directory = find_dir(root, d["dir"], f"gaussian_noise/{sev}")
    n = d.get("n_examples")
    exps = _corruption_experiences(d, lambda c, s: imagenet_c(directory, c, s, n))
    first = exps[0].test
    classes = (first.dataset if hasattr(first, "dataset") else first).classes
    common = _common(name, d) | {"class_names": classes, "input_shape": (3, 224, 224)}
    return Stream(
        experiences=exps,
        normalization=(tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)),
        **common,
    )


def build_mtil(name: str, d: dict[str, Any], data_root: str | None = None, seed: int = 0) -> Stream:
    """MTIL: the 11 datasets in ``d["order"]``, each with its own classes and prompts; every
    missing dataset is named in one error."""
    from cladapt.data.mtil import DATASETS, expected_location, open_mtil_dataset
    from cladapt.data.nevis import OffsetTargets

    root = _data_root(data_root, f"stream {name!r}")
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
    common = _common(name, d) | {"class_names": class_names, "input_shape": (3, size, size)}
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
    common = _common(name, d) | {"class_names": class_names, "input_shape": shape}
    return Stream(experiences=exps, prompts=prompts, **common)


BUILDERS = {
    "mtil": build_mtil,
    "mtil-mini": build_mtil_mini,
    "digits-corruptions": build_digits_corruptions,
    "cifar-c": build_cifar_c,
    "imagenet-c": build_imagenet_c,
    "split-classes": build_split_classes,
    "rotated-domains": build_rotated_domains,
    "nevis": build_nevis,
    "nevis-mini": build_nevis_mini,
    "digits-classes": build_digits_classes,
    "digits-shifts": build_digits_shifts,
    "digits-uda": build_digits_uda,
    "fonts-digits": build_fonts_digits,
    "mnist-mnistm": build_mnist_mnistm,
}


def _expand(name: str, d: dict[str, Any]) -> dict[str, Any]:
    """Stream name -> builder; folder-uda tables expand to one stream per pair / multi-target."""
    if d["kind"] != "folder-uda":
        return {name: functools.partial(BUILDERS[d["kind"]], name, d)}
    out = {}
    for pair in d.get("pairs", []):
        s, t = pair.split("-")
        out[f"{name}-{s}-{t}"] = functools.partial(build_folder_uda, f"{name}-{s}-{t}", d, s, [t])
    for s in d.get("multi_target", []):
        targets = [t for t in d["domains"] if t != s]
        out[f"{name}-{s}"] = functools.partial(build_folder_uda, f"{name}-{s}", d, s, targets)
    return out


# `--set` stream options (cladapt.stream.StreamOptions) each kind of stream takes
STREAM_OPTIONS = {
    "split-classes": ("image_size", "class_order"),
    "rotated-domains": ("image_size",),
}


def definitions() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for entry in sorted(resources.files(__package__).iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            out.update(tomllib.loads(entry.read_text(encoding="utf-8")))
    return out


@hookimpl
def cladapt_register_streams(registry: StreamRegistry) -> None:
    for table, d in definitions().items():
        for name, build in _expand(table, d).items():
            desc = d.get("description", "")
            if name != table:
                desc = f"{desc}: {name.removeprefix(table + '-').replace('-', ' -> ', 1)}"
            # built from data inside installed packages or generated: runs offline
            embedded = d["kind"].startswith("digits") or d["kind"] in (
                "nevis-mini",
                "mtil-mini",
                "fonts-digits",
            )
            embedded = embedded or "embedded" in d.get("dataset", {})
            registry.add(
                name,
                build,
                protocol=d["protocol"],
                description=desc,
                embedded=embedded,
                bench=d.get("bench", True),  # in the full bench (cladapt bench --full)
                quick_strategies=tuple(d.get("quick_strategies", ())),
                claims=tuple(d.get("claims", ())),
                claims_setting=(d.get("settings") or [None])[0],
                prompted=d["kind"] in ("mtil", "mtil-mini"),
                strategies=tuple(d.get("bench_strategies", ())),
                options=STREAM_OPTIONS.get(d["kind"], ()),
            )
