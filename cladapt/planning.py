"""A run as a value before it runs: :func:`plan` turns what the user asked for (a
:class:`RunSpec`) into a :class:`RunPlan` — the resolved registry entries, the stream, every
configuration layered (defaults < stream defaults < ``--set``), the setting, device, model and
weights, the labels the results will carry and what ``params_json`` records — and makes every
check that can fail before work starts. Nothing is trained or loaded into a model, and no row is
written (the results folder is created if missing, to test that it is writable)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cladapt.config import build_config, norm_value, split_values
from cladapt.device import precision_facts, resolve_device, seed_everything
from cladapt.errors import ConfigError, DataError, UnknownNameError
from cladapt.manager import Catalog
from cladapt.models.factory import check_model_name
from cladapt.protocols import PROTOCOLS
from cladapt.results import check_cell, check_results_path
from cladapt.stream import StreamOptions

DEFAULT_OUT = Path("results") / "results.csv"  # never the committed leaderboard/ by default


@dataclass
class RunSpec:
    """What the user asked for (the CLI's options, or a Python caller's)."""

    stream: str
    strategy: str
    sets: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    out: Path | None = DEFAULT_OUT
    setting: str | None = None
    model: str | None = None
    pretrained: bool | str = False  # True / a tag such as 'openai' / a weights file
    checkpoint: str | None = None
    data_root: str | None = None
    plugins: tuple[str, ...] = ()
    download: bool = False  # let torchvision download datasets (online users)
    regularizers: tuple[str, ...] = ()  # composed with the strategy (--with NAME)
    run_plugins: tuple[object, ...] = ()  # extra run-event plugins: observers, regularisers


@dataclass
class Layered:
    """A run's stream and its configurations, each layered as defaults < stream defaults <
    ``--set``; ``config``: the ``--set`` values that differ from what the run would use without
    them (``''`` for a default run) — with the stream, the strategy, the model, the setting and
    the seed, the run's identity on the leaderboard and in a sweep's resume key."""

    stream: Any
    stream_entry: Any
    strategy_entry: Any
    protocol_cls: Any
    reg_names: list[str]
    reg_entries: list[Any]
    protocol: Any
    strategy: Any
    regularizers: list[Any]
    config: str
    # the --set values as routed: stream options, then one dict per config (protocol, strategy,
    # regularisers), each key to the first config that declares it
    stream_values: dict[str, Any]
    given: list[dict[str, Any]]
    # SHA-256 prefix of each weights file the strategy is given (``weight_files``), read once
    weight_digests: dict[str, str]


@dataclass
class RunPlan:
    """Everything a run will use and record, decided before any work starts."""

    spec: RunSpec
    layered: Layered
    setting: str
    device: torch.device
    model_name: str
    pretrained: bool | str
    strategy_label: str  # a composed run is its own entry: finetune --with lwf is finetune+lwf
    model_label: str
    params: dict[str, Any]  # params_json; the run adds the source model's digest once it has one

    @property
    def stream(self):
        return self.layered.stream

    @property
    def protocol_cls(self):
        return self.layered.protocol_cls

    def lines(self) -> list[tuple[str, str]]:
        """(what, value) pairs that say what the run would do: ``cladapt run --dry-run``."""
        spec, stream = self.spec, self.stream
        sizes = ", ".join(
            f"{e.name} ({len(e.test)} test)" if e.test is not None else e.name
            for e in stream.experiences[:6]
        )
        more = len(stream.experiences) - 6
        return [
            (
                "stream",
                f"{stream.name} ({self.protocol_cls.name} protocol, setting {self.setting})",
            ),
            ("experiences", sizes + (f", ... {more} more" if more > 0 else "")),
            ("strategy", self.strategy_label),
            ("model", self.model_label),
            ("seed", str(spec.seed)),
            ("device", str(self.device)),
            ("configuration (what differs from the defaults)", self.layered.config or "none"),
            ("results", str(spec.out) if spec.out is not None else "not written"),
            ("params_json", json.dumps(self.params, sort_keys=True, default=str)),
        ]


def effective_values(planned: RunPlan) -> list[tuple[str, str, Any, str]]:
    """(group, parameter, value, where the value comes from) of every configuration the run
    uses: ``default``, ``stream <name>`` (its definition's defaults, with the official file a
    strategy's settings there come from) or ``--set`` (routed as :func:`layer` routed it)."""
    layered, stream = planned.layered, planned.stream
    titles = [f"protocol {layered.protocol_cls.name}", f"strategy {layered.strategy_entry.name}"]
    titles += [f"regularizer {name}" for name in layered.reg_names]
    configs = [layered.protocol, layered.strategy, *layered.regularizers]
    rows = [("stream options", k, v, "--set") for k, v in sorted(layered.stream_values.items())]
    owners = [layered.strategy_entry.name, layered.strategy_entry.name, *layered.reg_names]
    for title, cfg, given, owner in zip(titles, configs, layered.given, owners, strict=True):
        rows += _value_rows(title, cfg, given, stream, owner)
    return rows


def _value_rows(title: str, cfg, given: dict[str, Any], stream, owner: str) -> list[tuple]:
    from_stream = _stream_defaults(stream, type(cfg), owner)
    own = getattr(stream, "strategy_defaults", {}).get(owner, {})
    cited = getattr(stream, "strategy_sources", {}).get(owner, "")
    rows = []
    for f in dataclasses.fields(cfg):
        if f.name in given:
            source = "--set"
        elif f.name in own and cited:
            source = f"stream {stream.name}: {cited}"
        elif f.name in from_stream:
            source = f"stream {stream.name}"
        else:
            source = "default"
        rows.append((title, f.name, getattr(cfg, f.name), source))
    return rows


def definition_values(
    spec: RunSpec, catalog: Catalog
) -> tuple[str, list[tuple[str, str, Any, str]]]:
    """What :func:`effective_values` says, read from the stream's registered definition alone:
    for a stream whose data is not on this machine (the values a run would use do not depend
    on its files). Returns (strategy label, rows)."""
    from cladapt.stream import Stream

    stream_entry, strategy_entry, protocol_cls = _resolve(spec, catalog)
    extra = stream_entry.extra
    stub = Stream(
        name=stream_entry.name,
        protocol=protocol_cls.name,
        experiences=[],
        class_names=[],
        input_shape=(3, 32, 32),
        defaults=dict(extra.get("defaults", {})),
        strategy_defaults=dict(extra.get("strategy_defaults", {})),
        strategy_sources=dict(extra.get("strategy_sources", {})),
    )
    classes = [protocol_cls.Config, strategy_entry.factory.Config]
    _, *values = split_values(spec.sets, StreamOptions, *classes)
    rows = []
    titles = [f"protocol {protocol_cls.name}", f"strategy {strategy_entry.name}"]
    for title, cls, given in zip(titles, classes, values, strict=True):
        cfg = build_config(cls, _stream_defaults(stub, cls, strategy_entry.name) | given)
        rows += _value_rows(title, cfg, given, stub, strategy_entry.name)
    return strategy_entry.name, rows


def plan(spec: RunSpec, catalog: Catalog) -> RunPlan:
    """Resolve, layer and check ``spec``. The stream is built (its definition carries defaults
    the configurations need) under the run's seed, so that a builder drawing from the global
    random state builds the same stream every time; nothing else has side effects."""
    if spec.out is not None:  # fail now, not after the run: a foreign file, a read-only folder
        check_results_path(spec.out)
    if not 0 <= int(spec.seed) < 2**32:
        raise ConfigError(f"--seed {spec.seed}: expected an integer in 0 .. 2^32-1")
    seed_everything(spec.seed)
    layered = layer(spec, catalog)
    check_requirements(layered.strategy_entry)  # a missing optional extra: no row, as bad input
    stream, protocol_cls = layered.stream, layered.protocol_cls
    setting = spec.setting or stream.default_setting
    allowed = stream.settings or protocol_cls.settings
    if setting not in allowed:
        raise UnknownNameError(f"setting for stream {stream.name!r}", setting, allowed)
    device = resolve_device(spec.device)
    extras = []
    if "standard_images_per_domain" in stream.facts:  # a truncated real benchmark
        extras.append(f"images_per_domain={stream.facts['images_per_domain']}")
    # what a strategy says about how it will run here (EATA without Fisher images is ETA)
    facts = getattr(layered.strategy_entry.factory, "configuration_facts", None)
    if callable(facts):  # a plugin's class need not derive from Strategy
        extras += [str(f) for f in facts(stream, layered.strategy)]
    threads = torch.get_num_threads()
    if device.type == "cpu" and threads != 1:
        # a CPU kernel splits its sums over the threads, so the thread count changes the
        # result's last bits: a run at N threads is its own configuration (the leaderboard's
        # rows are one-thread runs, the default of `cladapt run` and `bench` on a CPU)
        extras.append(f"threads={threads}")
    if extras:
        layered = dataclasses.replace(
            layered, config=", ".join(([layered.config] if layered.config else []) + extras)
        )
    model_name = spec.model or stream.defaults.get("model", "small-cnn")
    # the stream's pretrained weights go with its default model only
    pretrained = spec.pretrained or (
        stream.defaults.get("pretrained", False) if not spec.model else False
    )
    check_model_name(catalog.models, model_name)
    _check_pretrained(spec.pretrained, model_name, catalog)
    if spec.checkpoint:  # a missing file, a FIFO, a file that is no checkpoint: said now
        from cladapt.models.checkpoints import check_checkpoint_file

        check_checkpoint_file(spec.checkpoint)
    own = layered.strategy_entry.factory.regularizers
    params = _params(layered, pretrained)
    # every row carries params_json: one the results file cannot hold fails now, not mid-run
    check_cell("params_json", json.dumps(params, sort_keys=True, default=str))
    return RunPlan(
        spec=spec,
        layered=layered,
        setting=setting,
        device=device,
        model_name=model_name,
        pretrained=pretrained,
        strategy_label="+".join(
            [layered.strategy_entry.name] + [n for n in layered.reg_names if n not in own]
        ),
        model_label=model_label(
            model_name, pretrained, spec.checkpoint, registered=model_name in catalog.models
        ),
        params=params,
    )


def _params(layered: Layered, pretrained: bool | str) -> dict[str, Any]:
    """What ``params_json`` records: the protocol's and the strategy's effective configs, the
    weights, the precision, each composed regulariser's config, the stream's facts and the
    configuration label."""
    stream = layered.stream
    params = dataclasses.asdict(layered.protocol) | dataclasses.asdict(layered.strategy)
    # weights a strategy loads from a file it is given (e.g. ViDA's adapters): the file's
    # content, not only its path, is what changes the result
    params |= {f"{name}_sha256": digest for name, digest in layered.weight_digests.items()}
    params |= {"pretrained": pretrained} | precision_facts(layered.protocol.amp)
    for entry, cfg in zip(layered.reg_entries, layered.regularizers, strict=True):
        params[f"with_{getattr(entry.factory, 'name', entry.name)}"] = dataclasses.asdict(cfg)
    if stream.facts:
        params["stream"] = stream.facts
    from cladapt.manager import plugin_release

    release = plugin_release(layered.strategy_entry.origin)
    if release:  # a third-party strategy: which release of its package made the row
        params["plugin"] = release
    return params | {"config": layered.config}


def _resolve(spec: RunSpec, catalog: Catalog):
    stream_entry = catalog.streams.get(spec.stream)
    strategy_entry = catalog.strategies.get(spec.strategy)
    protocol_name = stream_entry.protocols[0]
    if protocol_name not in strategy_entry.protocols:
        fitting = [s.name for s in catalog.strategies if protocol_name in s.protocols]
        raise ConfigError(
            f"strategy {spec.strategy!r} does not support the {protocol_name} protocol of stream "
            f"{spec.stream!r}; strategies that do: {', '.join(fitting)}"
        )
    return stream_entry, strategy_entry, PROTOCOLS[protocol_name]


def check_requirements(entry) -> None:
    """A strategy's optional modules (``Strategy.requires``, e.g. avalanche) must be importable:
    checked before any row is written, like every other input a run cannot start without."""
    missing = [m for m in getattr(entry.factory, "requires", ()) if not _importable(m)]
    if missing:
        install = getattr(entry.factory, "install_hint", "") or f"pip install {missing[0]}"
        raise ConfigError(
            f"strategy {entry.name!r} needs {', '.join(missing)}, which is not installed: {install}"
        )


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_hook_names(entry) -> None:
    """Refuse a strategy or regulariser with a method marked ``@hookimpl`` whose name is no
    cladapt hook (``cladapt_adpat``): pluggy would register it and never call it, and the run
    would be scored as if the method were not there."""
    from cladapt.manager import unknown_hooks

    for hook, close in unknown_hooks(entry.factory):
        hint = f"; did you mean {close}?" if close else ""
        raise ConfigError(
            f"{entry.name!r} (plugin {entry.origin}) marks {hook} as a cladapt hook, but no "
            f"cladapt hook has that name{hint} (it would never be called)"
        )


def regularizer_entry(catalog: Catalog, name: str, protocol: str):
    entry = catalog.strategies.regularizers.get(name)
    if protocol not in entry.protocols:
        raise ConfigError(f"regularizer {name!r} does not apply to the {protocol} protocol")
    return entry


def layer(spec: RunSpec, catalog: Catalog) -> Layered:
    """Build the stream and layer every configuration for ``spec`` (no model, no rows)."""
    stream_entry, strategy_entry, protocol_cls = _resolve(spec, catalog)
    reg_names = list(dict.fromkeys([*strategy_entry.factory.regularizers, *spec.regularizers]))
    reg_entries = [regularizer_entry(catalog, name, protocol_cls.name) for name in reg_names]
    for entry in (strategy_entry, *reg_entries):
        check_hook_names(entry)
    classes = [protocol_cls.Config, strategy_entry.factory.Config]
    classes += [e.factory.Config for e in reg_entries]
    stream_values, *values = split_values(spec.sets, StreamOptions, *classes)
    stream = build_stream(spec, stream_entry, stream_values, catalog)
    # the stream's recipe (e.g. MTIL's AdamW at 1e-5, epochs for its size) sits between the
    # defaults and --set
    configs, differs = [], dict(_differing_options(stream_values))
    own = stream.strategy_defaults.get(strategy_entry.name, {})
    fields = set(protocol_cls.Config.__dataclass_fields__)
    unknown = sorted(set(own) - fields - set(strategy_entry.factory.Config.__dataclass_fields__))
    if unknown:
        raise ConfigError(
            f"stream {stream.name!r} sets {', '.join(unknown)} for strategy "
            f"{strategy_entry.name!r}, which has no such parameter"
        )
    owners = [strategy_entry.name, strategy_entry.name, *reg_names]
    for cls, given, owner in zip(classes, values, owners, strict=True):
        base = _stream_defaults(stream, cls, owner)
        cfg = build_config(cls, base | given)
        default = build_config(cls, base)
        differs |= {k: getattr(cfg, k) for k in given if getattr(cfg, k) != getattr(default, k)}
        configs.append(cfg)
    protocol_cfg, strategy_cfg, *reg_cfgs = configs
    # a weights file a strategy is given is its content: another file at the same path is
    # another configuration, so the label names the content's digest beside the path
    digests = {
        name: _file_digest(path)
        for name in getattr(strategy_cfg, "weight_files", ())
        if (value := getattr(strategy_cfg, name)) and (path := Path(value).expanduser()).is_file()
    }
    for name, digest in digests.items():
        if name in differs:
            differs[name] = f"{differs[name]} (sha256 {digest})"
    return Layered(
        stream=stream,
        stream_entry=stream_entry,
        strategy_entry=strategy_entry,
        protocol_cls=protocol_cls,
        reg_names=reg_names,
        reg_entries=reg_entries,
        protocol=protocol_cfg,
        strategy=strategy_cfg,
        regularizers=reg_cfgs,
        config=", ".join(f"{k}={norm_value(v)}" for k, v in sorted(differs.items())),
        stream_values=stream_values,
        given=values,
        weight_digests=digests,
    )


def build_stream(spec: RunSpec, entry, stream_values: dict[str, Any], catalog: Catalog):
    """Build ``entry``'s stream for ``spec`` (data root, seed, download, its ``--set`` options)
    and check it: its name, its image shapes, a test set in every experience."""
    # only builders that read torchvision datasets take `download`
    extra = {"download": True} if spec.download else {}
    extra |= _stream_options(entry, stream_values, catalog)
    try:
        stream = entry.factory(data_root=spec.data_root, seed=spec.seed, **extra)
        stream.embedded = bool(entry.extra.get("embedded", False))
    except TypeError as exc:
        if extra and "download" in str(exc):
            raise ConfigError(
                f"stream {spec.stream!r} cannot download its data; drop --download"
            ) from None
        raise
    if stream.name != entry.name:  # rows are filed under the stream's name
        raise ConfigError(
            f"the builder of stream {entry.name!r} returned a stream named "
            f"{stream.name!r}; a builder must name its stream as it is registered"
        )
    stream.check_shapes()
    stream.check_not_empty()
    return stream


def _differing_options(values: dict[str, Any]) -> dict[str, Any]:
    """Stream options given with a value other than their default (which keeps the stream's
    own)."""
    if not values:
        return {}
    given, default = build_config(StreamOptions, values), StreamOptions()
    return {k: getattr(given, k) for k in values if getattr(given, k) != getattr(default, k)}


def _stream_options(entry, values: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    """The ``--set`` stream options (typed, checked), refused by streams that do not take them."""
    if not values:
        return {}
    accepted = entry.extra.get("options", ())
    for key in values:
        if key not in accepted:
            takers = [s.name for s in catalog.streams if key in s.extra.get("options", ())]
            raise ConfigError(
                f"stream {entry.name!r} does not take --set {key}; streams that do: "
                + (", ".join(takers) or "none")
            )
    options = build_config(StreamOptions, values)
    return {k: getattr(options, k) for k in values}


def _stream_defaults(stream, config_cls, owner: str | None = None) -> dict[str, Any]:
    """The stream's defaults that are fields of ``config_cls``, with the stream's settings for
    strategy ``owner`` (``strategy_defaults``) over them."""
    values = dict(stream.defaults) | dict(getattr(stream, "strategy_defaults", {}).get(owner, {}))
    return {k: v for k, v in values.items() if k in config_cls.__dataclass_fields__}


def model_label(
    name: str, pretrained: bool | str, checkpoint: str | None, registered: bool = False
) -> str:
    """The results' ``model`` column: the model as run, so that runs from different weights
    never share a leaderboard row — ``small-cnn``, ``small-cnn+pretrained``,
    ``ViT-B-16+openai`` (an open_clip tag), ``resnet50.a1_in1k+pretrained`` (timm's weights,
    their tag named), ``small-cnn@source.pt#1a2b3c4d`` (a checkpoint,
    with the start of its SHA-256: two files of one name are two models)."""
    if checkpoint:
        return f"{name}@{Path(checkpoint).name}#{_file_digest(checkpoint)}"
    if pretrained in (False, None, "", "false"):
        return name
    if pretrained in (True, "true", "default"):
        return f"{name if registered else timm_weights_name(name)}+pretrained"
    path = Path(str(pretrained)).expanduser()
    if path.is_file():
        return f"{name}+{path.name}#{_file_digest(path)}"
    return f"{name}+{pretrained}"


def timm_weights_name(name: str) -> str:
    """A timm model name with the weights ``--pretrained`` loads: ``resnet50`` is
    ``resnet50.a1_in1k`` (timm's default tag, the RSB A1 recipe), not torchvision's V1 weights
    (``resnet50.tv_in1k``) that most published tables use. Registered and open_clip names, and
    names that carry a tag, are returned as they are."""
    bare = name.removeprefix("timm:")
    if "." in bare or "/" in bare:
        return name
    try:
        from timm.models import get_pretrained_cfg, is_model
    except ImportError:  # pragma: no cover - timm is a dependency
        return name
    if not is_model(bare):
        return name
    cfg = get_pretrained_cfg(bare)
    tag = getattr(cfg, "tag", None) if cfg is not None else None
    return f"{name}.{tag}" if tag else name


def _file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:8]


def _check_pretrained(pretrained: bool | str, model_name: str, catalog: Catalog) -> None:
    """``--pretrained TAG|FILE`` names open_clip weights; other models take the bare flag."""
    if not isinstance(pretrained, str) or pretrained in ("default", "true"):
        return
    from cladapt.models.clip import is_open_clip_name

    if model_name in catalog.models or not is_open_clip_name(model_name):
        raise ConfigError(
            f"--pretrained {pretrained}: a weights tag or file only applies to open_clip models; "
            f"for {model_name!r} pass --pretrained without a value (its library's weights) or "
            "--checkpoint FILE"
        )
    if ("/" in pretrained or pretrained.endswith((".bin", ".pt", ".pth", ".safetensors"))) and (
        not Path(pretrained).expanduser().is_file()
    ):
        raise DataError(f"--pretrained {pretrained}: no such weights file")
