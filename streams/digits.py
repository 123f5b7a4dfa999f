"""Builders of ``digits.toml``: the embedded streams made from scikit-learn's digits (class splits,
shifted domains, digits -> digits-m UDA, fonts -> digits)."""

from __future__ import annotations

from typing import Any

from cladapt.streams.common import common_fields, digits_source, shifted
from torch.utils.data import TensorDataset

from cladapt.data.digits import digits_split, subset_classes, with_deformed_copies
from cladapt.stream import Experience, Stream


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
    return Stream(experiences=exps, **common_fields(name, d))


def build_digits_shifts(
    name: str, d: dict[str, Any], data_root: str | None = None, seed: int = 0
) -> Stream:
    _, test = digits_split()
    exps = [
        Experience(
            name=dom["name"],
            kind="domain",
            test=shifted(test, dom["shift"], dom["level"], f"test/{dom['name']}"),
            metadata={"shift": dom["shift"], "level": dom["level"]},
        )
        for dom in d["domains"]
    ]
    return Stream(experiences=exps, source=digits_source(), **common_fields(name, d))


def build_digits_uda(
    name: str,
    d: dict[str, Any],
    data_root: str | None = None,
    seed: int = 0,
    train_copies: int = 0,
) -> Stream:
    train, test = digits_split()
    copies = train_copies or int(d.get("train_copies", 1))
    source = digits_source()
    target_train = train
    if copies > 1:  # the same copies for every run: the data never depends on the run's seed
        source.train = with_deformed_copies(train, copies, seed=1)
        target_train = with_deformed_copies(train, copies, seed=1 + copies)
    exps = [
        Experience(
            name=t["name"],
            kind="domain",
            # the target's training images: a differently seeded shift of the train split
            # (labels kept for the target-oracle; the protocol strips them for every method)
            unlabelled=shifted(target_train, t["shift"], t.get("level", 0.0), f"train/{t['name']}"),
            test=shifted(test, t["shift"], t.get("level", 0.0), f"test/{t['name']}"),
            metadata={"shift": t["shift"], "level": t.get("level", 0.0)},
        )
        for t in d["targets"]
    ]
    stream = Stream(experiences=exps, source=source, **common_fields(name, d))
    if copies > 1:
        stream.facts = {**stream.facts, "train_copies": copies}
    return stream


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
    return Stream(experiences=[target], source=source, **common_fields(name, d))
