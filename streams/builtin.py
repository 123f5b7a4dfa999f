"""Registers the stream definitions in this package's ``*.toml`` files; each family's builders sit
beside the TOML they read (``digits.py`` for ``digits.toml``, ...)."""

from __future__ import annotations

import functools
from typing import Any

from cladapt.streams.common import definitions
from cladapt.streams.corruptions import (
    build_cifar_c,
    build_digits_corruptions,
    build_imagenet_c,
)
from cladapt.streams.digits import (
    build_digits_classes,
    build_digits_shifts,
    build_digits_uda,
    build_fonts_digits,
)
from cladapt.streams.mtil import (
    build_mtil,
    build_mtil_mini,
)
from cladapt.streams.nevis import (
    build_nevis,
    build_nevis_mini,
)
from cladapt.streams.probes import build_cost_probe
from cladapt.streams.scenarios import (
    build_rotated_domains,
    build_split_classes,
)
from cladapt.streams.uda import (
    build_folder_uda,
    build_mnist_mnistm,
)

from cladapt.hookspecs import hookimpl
from cladapt.registry import StreamRegistry

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
    "cost-probe": build_cost_probe,
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
    "split-classes": ("image_size", "class_order", "input_normalization"),
    "rotated-domains": ("image_size", "input_normalization"),
    "imagenet-c": ("preprocess", "corruption_order"),
    "digits-uda": ("train_copies",),
}


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
            embedded = embedded or "embedded" in d.get("dataset", {}) or d["kind"] == "cost-probe"
            registry.add(
                name,
                build,
                protocol=d["protocol"],
                description=desc,
                embedded=embedded,
                bench=d.get("bench", True),  # in the full bench (cladapt bench --full)
                bench_seeds=int(d.get("bench_seeds", 3)),  # seeds the full bench runs
                quick_strategies=tuple(d.get("quick_strategies", ())),
                claims=tuple(d.get("claims", ())),
                # strategies the full bench also runs on another model: {model: [strategies]}
                model_variants={k: tuple(v) for k, v in d.get("model_variants", {}).items()},
                # a UDA stream's claims are judged per target, as the papers' tables are
                claim_targets=tuple(t["name"] for t in d.get("targets", ())),
                claims_setting=(d.get("settings") or [None])[0],
                prompted=d["kind"] in ("mtil", "mtil-mini"),
                strategies=tuple(d.get("bench_strategies", ())),
                options=STREAM_OPTIONS.get(d["kind"], ()),
                # what a run would use, readable without the stream's data (`describe`)
                defaults=dict(d.get("defaults", {})),
                strategy_defaults={k: dict(v) for k, v in d.get("strategy_defaults", {}).items()},
                strategy_sources=dict(d.get("strategy_sources", {})),
            )
