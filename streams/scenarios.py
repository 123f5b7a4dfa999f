"""Builders of ``scenarios.toml``: class-split and rotated-domain scenarios over torchvision
datasets (Split-CIFAR, Rotated-MNIST style)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cladapt.streams.common import common_fields

from cladapt.errors import ConfigError
from cladapt.stream import Experience, Stream


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


def _normalizes(choice: str) -> bool:
    """Whether a --pretrained model gets its weights' input mean / std (``input_normalization``)."""
    if choice not in ("", "pretrained", "none"):
        raise ConfigError(f"input_normalization={choice}: expected pretrained or none")
    return choice != "none"


def _normalization_fact(choice: str) -> dict[str, str]:
    # recorded only when changed, so rows made before the option keep their facts
    return {"input_normalization": choice} if choice == "none" else {}


def build_split_classes(
    name: str,
    d: dict[str, Any],
    data_root: str | None = None,
    seed: int = 0,
    download: bool = False,
    image_size: int = 0,
    class_order: str = "",
    input_normalization: str = "",
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
    common = common_fields(name, d) | {
        "class_names": [names[i] for i in order],
        "input_shape": (3, size, size),
        "facts": {"class_order": kind, "classes": order.tolist(), "image_size": size}
        | _normalization_fact(input_normalization),
        "normalize_for_pretrained": _normalizes(input_normalization),
    }
    return Stream(experiences=exps, **common)


def build_rotated_domains(
    name: str,
    d: dict[str, Any],
    data_root: str | None = None,
    seed: int = 0,
    download: bool = False,
    image_size: int = 0,
    input_normalization: str = "",
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
    common = common_fields(name, d) | {
        "class_names": names,
        "input_shape": (3, size, size),
        "facts": {"image_size": size} | _normalization_fact(input_normalization),
        "normalize_for_pretrained": _normalizes(input_normalization),
    }
    return Stream(experiences=exps, **common)
