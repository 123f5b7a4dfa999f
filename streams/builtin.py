"""Registers the stream definitions in this package's ``*.toml`` files."""

from __future__ import annotations

import functools
import sys
import zlib
from importlib import resources
from typing import Any

from torch.utils.data import TensorDataset

from cladapt.data.digits import CLASS_NAMES, digits_split, subset_classes
from cladapt.data.shifts import apply_shift
from cladapt.hookspecs import hookimpl
from cladapt.registry import StreamRegistry
from cladapt.stream import Experience, Stream

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
            unlabelled=TensorDataset(
                _shifted(train, t["shift"], t["level"], f"train/{t['name']}").tensors[0]
            ),
            test=_shifted(test, t["shift"], t["level"], f"test/{t['name']}"),
            metadata={"shift": t["shift"], "level": t["level"]},
        )
        for t in d["targets"]
    ]
    return Stream(experiences=exps, source=_source(), **_common(name, d))


BUILDERS = {
    "digits-classes": build_digits_classes,
    "digits-shifts": build_digits_shifts,
    "digits-uda": build_digits_uda,
}


def definitions() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for entry in sorted(resources.files(__package__).iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            out.update(tomllib.loads(entry.read_text(encoding="utf-8")))
    return out


@hookimpl
def cladapt_register_streams(registry: StreamRegistry) -> None:
    for name, d in definitions().items():
        build = functools.partial(BUILDERS[d["kind"]], name, d)
        registry.add(
            name, build, protocol=d["protocol"], description=d.get("description", ""), embedded=True
        )
