"""Wire stream + protocol + strategy + observers for one run, and account for its cost."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cladapt import __version__
from cladapt.config import build_config, norm_value, split_values
from cladapt.context import Run
from cladapt.defaults import DefaultBehaviour
from cladapt.device import (
    amp_dtype,
    peak_memory_mb,
    precision_facts,
    prefer_channels_last,
    reset_peak_memory,
    resolve_device,
    seed_everything,
)
from cladapt.errors import (
    CladaptError,
    ConfigError,
    DataError,
    UnknownNameError,
    exception_text,
    interruption_note,
)
from cladapt.hookspecs import hookimpl
from cladapt.manager import Catalog, load_catalog, run_manager
from cladapt.models.checkpoints import load_into, weights_digest
from cladapt.models.factory import Normalized, check_model_name, create_model
from cladapt.models.source import get_source_model
from cladapt.progress import NullProgress
from cladapt.protocols import PROTOCOLS, ProtocolResult
from cladapt.results import (
    Record,
    append_rows,
    check_results_path,
    error_record,
    new_run_id,
    now_iso,
)
from cladapt.stream import StreamOptions
from cladapt.terminal import interruption_handled, raise_if_interrupted

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
class RunOutcome:
    run: Run
    result: ProtocolResult
    summary: dict[str, float]


RowSink = Callable[[list[dict[str, Any]]], None]


class ResultWriter:
    """Observer plugin: turns records into rows and appends them to the CSV at once, or hands them
    to ``sink`` (a sweep's worker sends them to the driver, which owns the CSV)."""

    def __init__(
        self, path: Path | None, facts: dict[str, Any], sink: RowSink | None = None
    ) -> None:
        self.path, self.facts, self.sink = path, facts, sink
        self.records: list[Record] = []

    @hookimpl
    def cladapt_evaluated(self, records: list[Record]) -> None:
        self.write(records)

    def write(self, records: list[Record]) -> None:
        self.records.extend(records)
        rows = [{**self.facts, **vars(r)} for r in records]
        if self.sink is not None:
            self.sink(rows)
        elif self.path is not None:
            append_rows(self.path, rows)


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


def regularizer_entry(catalog: Catalog, name: str, protocol: str):
    entry = catalog.strategies.regularizers.get(name)
    if protocol not in entry.protocols:
        raise ConfigError(f"regularizer {name!r} does not apply to the {protocol} protocol")
    return entry


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


def layer(spec: RunSpec, catalog: Catalog) -> Layered:
    """Build the stream and layer every configuration for ``spec`` (no model, no rows)."""
    stream_entry, strategy_entry, protocol_cls = _resolve(spec, catalog)
    reg_names = list(dict.fromkeys([*strategy_entry.factory.regularizers, *spec.regularizers]))
    reg_entries = [regularizer_entry(catalog, name, protocol_cls.name) for name in reg_names]
    classes = [protocol_cls.Config, strategy_entry.factory.Config]
    classes += [e.factory.Config for e in reg_entries]
    stream_values, *values = split_values(spec.sets, StreamOptions, *classes)
    stream = _build_stream(spec, stream_entry, stream_values, catalog)
    # the stream's recipe (e.g. MTIL's AdamW at 1e-5, epochs for its size) sits between the
    # defaults and --set
    configs, differs = [], dict(_differing_options(stream_values))
    for cls, given in zip(classes, values, strict=True):
        base = _stream_defaults(stream, cls)
        cfg = build_config(cls, base | given)
        default = build_config(cls, base)
        differs |= {k: getattr(cfg, k) for k in given if getattr(cfg, k) != getattr(default, k)}
        configs.append(cfg)
    protocol_cfg, strategy_cfg, *reg_cfgs = configs
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
    )


def _build_stream(spec: RunSpec, entry, stream_values: dict[str, Any], catalog: Catalog):
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


def execute(
    spec: RunSpec,
    catalog: Catalog | None = None,
    progress=None,
    *,
    run_id: str | None = None,
    sink: RowSink | None = None,
) -> RunOutcome:
    """Run one (stream, strategy, seed). Every completed evaluation is in the CSV as soon as it is
    computed; a failure or Ctrl-C appends an ``error`` row and re-raises. With ``sink`` the rows go
    to it instead of ``spec.out`` (which is then not touched); ``run_id`` defaults to a new one."""
    catalog = catalog or load_catalog(spec.plugins)
    progress = progress or NullProgress()
    # fail now, not after the run: a foreign file, a read-only folder
    if spec.out is not None and sink is None:
        check_results_path(spec.out)
    if not 0 <= int(spec.seed) < 2**32:
        raise ConfigError(f"--seed {spec.seed}: expected an integer in 0 .. 2^32-1")
    generator = seed_everything(spec.seed)
    layered = layer(spec, catalog)
    stream, protocol_cls, protocol_cfg = layered.stream, layered.protocol_cls, layered.protocol
    strategy_entry, reg_names = layered.strategy_entry, layered.reg_names
    strategy = strategy_entry.factory(layered.strategy)
    regularizers = [
        e.factory(cfg) for e, cfg in zip(layered.reg_entries, layered.regularizers, strict=True)
    ]
    setting = spec.setting or stream.default_setting
    allowed = stream.settings or protocol_cls.settings
    if setting not in allowed:
        raise UnknownNameError(f"setting for stream {stream.name!r}", setting, allowed)
    device = resolve_device(spec.device)
    model_name = spec.model or stream.defaults.get("model", "small-cnn")
    # the stream's pretrained weights go with its default model only
    pretrained = spec.pretrained or (
        stream.defaults.get("pretrained", False) if not spec.model else False
    )
    check_model_name(catalog.models, model_name)
    _check_pretrained(spec.pretrained, model_name, catalog)
    if spec.checkpoint and not Path(spec.checkpoint).is_file():
        raise DataError(f"checkpoint not found: {spec.checkpoint}")
    prepare = (
        catalog.models.get(model_name).extra.get("prepare")
        if model_name in catalog.models
        else None
    )
    if prepare is not None and pretrained:  # one-off, cached (e.g. pre-training clip-tiny)
        prepare(input_shape=stream.input_shape, progress=progress)
    model_kwargs = {"class_names": stream.class_names}
    if stream.prompts is not None:
        model_kwargs["prompts"] = stream.prompts

    excluded_s = [0.0]  # one-off source-model training: not this run's wall time

    def build() -> torch.nn.Module:
        model = create_model(
            catalog.models,
            model_name,
            stream.num_classes,
            stream.input_shape,
            pretrained,
            **model_kwargs,
        )
        if stream.normalization is not None:
            model = Normalized(model, *stream.normalization)
        elif stream.normalize_for_pretrained and pretrained:
            model = pretrained_normalization(model)
        return prefer_channels_last(model)

    def make_model() -> torch.nn.Module:
        torch.manual_seed(spec.seed)
        model = build()
        if spec.checkpoint:  # a plain model's weights, also for streams that add normalisation
            load_into(model.model if isinstance(model, Normalized) else model, spec.checkpoint)
        return model.to(device)

    def source_model() -> torch.nn.Module:
        if spec.checkpoint or (stream.source is None and pretrained):
            return make_model()
        if stream.source is None:
            raise CladaptError(
                f"stream {stream.name!r} has no source data; pass --pretrained (a model trained "
                "on the source distribution, e.g. timm ImageNet weights) or --checkpoint PATH"
            )

        # a one-off, cached cost shared by all strategies: not charged to this run's wall time
        tic = time.perf_counter()
        cache_name = model_name + ("-pretrained" if pretrained else "")
        model = get_source_model(stream, cache_name, build, device, progress=progress)
        # which weights: rows from two caches (two trainings of one recipe) must not look alike
        params = json.loads(facts["params_json"])
        params["source_model"] = weights_digest(model)
        facts["params_json"] = json.dumps(params, sort_keys=True, default=str)
        excluded_s[0] += time.perf_counter() - tic
        return model

    run_id = run_id or new_run_id()
    run = Run(
        run_id=run_id,
        stream=stream,
        protocol=protocol_cls.name,
        setting=setting,
        strategy=strategy,
        model_name=model_name,
        seed=spec.seed,
        device=device,
        params=protocol_cfg,
        hook=None,
        create_model=make_model,
        source_model=source_model,
        amp_dtype=amp_dtype(protocol_cfg.amp),
        generator=generator,
        progress=progress,
    )
    facts = {
        "run_id": run_id,
        "started_at": now_iso(),
        "cladapt_version": __version__,
        "stream": stream.name,
        "protocol": protocol_cls.name,
        "setting": setting,
        # a composed run is its own entry: finetune --with lwf is "finetune+lwf"
        "strategy": "+".join(
            [strategy_entry.name]
            + [n for n in reg_names if n not in strategy_entry.factory.regularizers]
        ),
        "params_json": json.dumps(
            run.params_dict()
            | {"pretrained": pretrained}
            | precision_facts(protocol_cfg.amp)
            | {f"with_{r.name}": dataclasses.asdict(r.cfg) for r in regularizers}
            | ({"stream": stream.facts} if stream.facts else {})
            | {"config": layered.config},
            sort_keys=True,
            default=str,
        ),
        "model": model_label(model_name, pretrained, spec.checkpoint),
        "seed": spec.seed,
        "device": str(device),
    }
    writer = ResultWriter(spec.out, facts, sink)
    pm = run_manager(DefaultBehaviour(), writer, *spec.run_plugins, *regularizers, strategy)
    run.hook = pm.hook

    pm.add_hookcall_monitoring(lambda *_: raise_if_interrupted(), lambda *_: None)
    reset_peak_memory(device)
    start = time.perf_counter()
    status = "error"
    try:
        try:
            result = protocol_cls().run(run)
            raise_if_interrupted()  # a swallowed Ctrl-C is never scored
            status = "ok"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            pm.hook.cladapt_teardown(run=run, status=status)
        summary = _summary(run, result, pm, start, excluded_s[0])
        peak_kind = run.state.get("_peak_kind", "")
        writer.write(
            [
                Record(k, v, row_type="summary", note=_summary_note(k, peak_kind, stream.notes))
                for k, v in summary.items()
            ]
        )
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM through the CLI's handler
        interruption_handled()
        writer.write([error_record(interruption_note(exc))])
        raise
    except SystemExit as exc:  # sys.exit() in a plugin: a failure, never a finished run
        note = f"a plugin called sys.exit({exc.code!r}) during the run"
        writer.write([error_record(note)])
        raise CladaptError(note) from None
    except Exception as exc:
        text = exception_text(exc)
        note = text if isinstance(exc, CladaptError) else f"{type(exc).__name__}: {text}"
        writer.write([error_record(note)])
        raise
    return RunOutcome(run=run, result=result, summary=summary)


def _summary(run: Run, result, pm, start: float, excluded_s: float) -> dict[str, float]:
    """Headline metrics, cost, and what plugins add (``cladapt_describe``): a plugin may add
    metrics of its own but never replace a measured one, and only finite numbers."""
    device = run.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - start - excluded_s - run.untimed_s
    peak, run.state["_peak_kind"] = peak_memory_mb(device)
    summary = dict(result.headline)
    summary |= {
        "wall_time_s": wall,
        "images_per_s": run.images_seen / wall if wall > 0 else float("nan"),
        "trainable_params": float(run.trainable_parameters()),
        "peak_memory_mb": peak,
    }
    if run.stream.notes:  # e.g. tasks of a NEVIS list that were not found on disk
        summary["experiences"] = float(len(run.stream.experiences))
    measured = set(summary)
    for impl in reversed(pm.hook.cladapt_describe.get_hookimpls()):
        extra = impl.function(run=run)
        summary |= _described(impl.plugin_name, extra, measured)
    return summary


def _described(plugin: str, extra: object, measured: set[str]) -> dict[str, float]:
    if extra is None:
        return {}
    where = f"plugin {plugin!r}: cladapt_describe"
    if not isinstance(extra, dict):
        raise CladaptError(f"{where} returned a {type(extra).__name__}, expected a dict")
    out = {}
    for key, value in extra.items():
        if not isinstance(key, str) or key in measured:
            raise CladaptError(
                f"{where} returned {key!r}, a metric the run measures itself: "
                "a plugin may add metrics, never replace one"
            )
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise CladaptError(f"{where} returned {key}={value!r}, not a number") from None
        if not math.isfinite(number):
            raise CladaptError(f"{where} returned {key}={value!r}, not a finite number")
        out[key] = number
    return out


def model_label(name: str, pretrained: bool | str, checkpoint: str | None) -> str:
    """The results' ``model`` column: the model as run, so that runs from different weights
    never share a leaderboard row — ``small-cnn``, ``small-cnn+pretrained``,
    ``ViT-B-16+openai`` (an open_clip tag), ``small-cnn@source.pt#1a2b3c4d`` (a checkpoint,
    with the start of its SHA-256: two files of one name are two models)."""
    if checkpoint:
        return f"{name}@{Path(checkpoint).name}#{_file_digest(checkpoint)}"
    if pretrained in (False, None, "", "false"):
        return name
    if pretrained in (True, "true", "default"):
        return f"{name}+pretrained"
    path = Path(str(pretrained)).expanduser()
    if path.is_file():
        return f"{name}+{path.name}#{_file_digest(path)}"
    return f"{name}+{pretrained}"


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


def pretrained_normalization(model: torch.nn.Module) -> torch.nn.Module:
    """Wrap a timm model with the input mean / std of its pretrained weights (``pretrained_cfg``;
    e.g. 0.5 / 0.5 for AugReg ViTs, ImageNet's for torchvision ResNets); others as they are."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "mean" in cfg and "std" in cfg:
        return Normalized(model, tuple(cfg["mean"]), tuple(cfg["std"]))
    return model


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


def _stream_defaults(stream, config_cls) -> dict[str, Any]:
    """The stream's defaults that are fields of ``config_cls``."""
    return {k: v for k, v in stream.defaults.items() if k in config_cls.__dataclass_fields__}


def _summary_note(metric: str, peak_kind: str, notes: list[str]) -> str:
    if metric == "peak_memory_mb":
        return peak_kind
    if metric == "experiences":
        return " | ".join(notes)[:2000]
    return ""
