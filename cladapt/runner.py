"""One run in three steps: :func:`cladapt.planning.plan` (a :class:`RunPlan`, checked before any
work), :func:`build` (the models, the strategy, the writer, the plugin manager: a
:class:`BuiltRun`) and :func:`run` (the protocol, error rows, the summary). :func:`execute` is
the three in a row."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from cladapt import __version__
from cladapt.context import Run
from cladapt.defaults import DefaultBehaviour
from cladapt.device import (
    amp_dtype,
    kept_torch_state,
    peak_memory_mb,
    prefer_channels_last,
    reset_peak_memory,
    seed_everything,
)
from cladapt.errors import CladaptError, exception_text, interruption_note
from cladapt.hookspecs import hookimpl
from cladapt.leaderboard.aggregate import RESERVED_METRICS
from cladapt.manager import Catalog, load_catalog, run_manager
from cladapt.models.checkpoints import load_into, weights_digest
from cladapt.models.factory import Normalized, create_model
from cladapt.models.source import get_source_model
from cladapt.optim import check_learning_rates
from cladapt.planning import (  # noqa: F401  (RunSpec, model_label: the runner's public names)
    RunPlan,
    RunSpec,
    model_label,
    plan,
)
from cladapt.progress import NullProgress
from cladapt.protocols import ProtocolResult
from cladapt.results import Record, append_rows, error_record, new_run_id, now_iso
from cladapt.terminal import interruption_handled, raise_if_interrupted


@dataclass
class RunOutcome:
    run: Run
    result: ProtocolResult
    summary: dict[str, float]


RowSink = Callable[[list[dict[str, Any]]], None]


class ResultWriter:
    """Observer plugin: turns records into rows and appends them to the CSV at once, or hands them
    to ``sink`` (a sweep's worker sends them to the driver, which owns the CSV). ``params`` is
    recorded as each row's ``params_json``, with what the run learns while it runs
    (``recorded``: the source model's digest) added."""

    def __init__(
        self,
        path: Path | None,
        facts: dict[str, Any],
        params: dict[str, Any],
        sink: RowSink | None = None,
    ) -> None:
        self.path, self.facts, self.params, self.sink = path, facts, params, sink
        self.recorded: dict[str, Any] = {}
        self.records: list[Record] = []

    @hookimpl
    def cladapt_evaluated(self, records: list[Record]) -> None:
        self.write(records)

    def write(self, records: list[Record]) -> None:
        self.records.extend(records)
        facts = dict(self.facts)  # params_json keeps its column
        facts["params_json"] = json.dumps(self.params | self.recorded, sort_keys=True, default=str)
        rows = [{**facts, **vars(r)} for r in records]
        if self.sink is not None:
            self.sink(rows)
        elif self.path is not None:
            append_rows(self.path, rows)


class RunGuard:
    """Observer plugin: what no plugin may change while a run goes on, checked after the
    strategy's setup and around every experience (called after the strategy's own hooks):
    the stream's experiences and their data (a run is scored on every experience the plan
    built), the protocol's and the strategy's parameters (the rows record the plan: a change
    would make ``params_json`` false) and each optimizer's learning rate (in its sane range)."""

    def __init__(self, plan: RunPlan) -> None:
        self.stream = plan.stream
        self.experiences = [_fingerprint(e) for e in plan.stream.experiences]
        self.params = dataclasses.asdict(plan.layered.protocol)
        self.strategy = dataclasses.asdict(plan.layered.strategy)

    def check(self, run: Run, when: str) -> None:
        who = f"strategy {run.strategy.name!r}"
        now = [_fingerprint(e) for e in run.stream.experiences]
        if run.stream is not self.stream or now != self.experiences:
            raise CladaptError(
                f"{who} changed the stream's experiences or their data ({when}); a run is "
                "scored on every experience its plan built, as built"
            )
        for label, planned, cfg in (
            ("run.params", self.params, run.params),
            ("its Config", self.strategy, getattr(run.strategy, "cfg", None)),
        ):
            if cfg is None or not dataclasses.is_dataclass(cfg):
                continue
            changed = {
                k: (v, getattr(cfg, k, None))
                for k, v in planned.items()
                if getattr(cfg, k, None) != v
            }
            if changed:
                k, (old, new) = next(iter(changed.items()))
                raise CladaptError(
                    f"{who} changed {label}.{k} from {old!r} to {new!r} ({when}): the rows record "
                    "the planned values, so parameters are read-only during a run; set them with "
                    "--set"
                )
        if run.optimizer is not None:
            check_learning_rates(run.optimizer)

    @hookimpl(trylast=True)
    def cladapt_setup(self, run: Run) -> None:
        self.check(run, "in setup")

    @hookimpl(trylast=True)
    def cladapt_before_experience(self, run: Run, experience) -> None:
        self.check(run, f"before {experience.name}")

    @hookimpl(trylast=True)
    def cladapt_after_experience(self, run: Run, experience) -> None:
        self.check(run, f"after {experience.name}")


def _fingerprint(exp) -> tuple:
    splits = (exp.train, exp.test, exp.dev, exp.unlabelled)
    return (id(exp), exp.name) + tuple((id(d), len(d)) if d is not None else None for d in splits)


class Models:
    """The run's models, made as its plan says: ``fresh()`` (a new model of the run's
    architecture on the device, from ``--checkpoint`` when given) and ``source()`` (the model
    a test-time or UDA run starts from). Training a source model is a one-off, cached cost shared
    by all strategies: its time (``untimed_s``) is not charged to the run, and its weights'
    digest is recorded (``recorded['source_model']``) so that rows from two trainings of one
    recipe never look alike."""

    def __init__(self, plan: RunPlan, catalog: Catalog, recorded: dict[str, Any], progress):
        self.plan, self.catalog, self.recorded, self.progress = plan, catalog, recorded, progress
        self.untimed_s = 0.0

    def architecture(self) -> torch.nn.Module:
        """The model as the stream feeds it (its input normalisation), randomly initialised or
        with the library's pretrained weights; on the CPU."""
        plan, stream = self.plan, self.plan.stream
        kwargs: dict[str, Any] = {"class_names": stream.class_names}
        if stream.prompts is not None:
            kwargs["prompts"] = stream.prompts
        model = create_model(
            self.catalog.models,
            plan.model_name,
            stream.num_classes,
            stream.input_shape,
            plan.pretrained,
            **kwargs,
        )
        if stream.normalization is not None:
            model = Normalized(model, *stream.normalization)
        elif stream.normalize_for_pretrained and plan.pretrained:
            model = pretrained_normalization(model)
        return prefer_channels_last(model)

    def fresh(self) -> torch.nn.Module:
        torch.manual_seed(self.plan.spec.seed)
        model = self.architecture()
        checkpoint = self.plan.spec.checkpoint
        if checkpoint:  # a plain model's weights, also for streams that add normalisation
            load_into(model.model if isinstance(model, Normalized) else model, checkpoint)
        return model.to(self.plan.device)

    def source(self) -> torch.nn.Module:
        plan, stream = self.plan, self.plan.stream
        if plan.spec.checkpoint or (
            stream.source is None and (plan.pretrained or stream.random_source)
        ):
            return self.fresh()
        if stream.source is None:
            why = f" ({stream.source_missing})" if stream.source_missing else ""
            ways = ["--checkpoint PATH (the source model's weights)"]
            default = (stream.defaults or {}).get("model")
            if plan.model_name not in self.catalog.models:  # a timm model: library weights
                ways.append("--pretrained (its library's ImageNet weights)")
            elif default and default not in self.catalog.models:
                ways.append(f"--model {default} --pretrained (the stream's default model)")
            if stream.has_source_data:
                ways.append("--data-root DIR holding the source data, to train one")
            raise CladaptError(
                f"stream {stream.name!r} has no source data{why}; pass " + ", or ".join(ways)
            )
        tic = time.perf_counter()
        cache_name = plan.model_name + ("-pretrained" if plan.pretrained else "")
        model = get_source_model(
            stream, cache_name, self.architecture, plan.device, progress=self.progress
        )
        self.recorded["source_model"] = weights_digest(model)
        self.untimed_s += time.perf_counter() - tic
        return model


@dataclass
class BuiltRun:
    """A planned run with everything it runs with: the run context the hooks receive, the
    writer of its rows, its plugin manager and its models."""

    plan: RunPlan
    context: Run
    writer: ResultWriter
    pm: Any
    models: Models
    regularizers: list[Any] = field(default_factory=list)


def build(
    plan: RunPlan,
    catalog: Catalog,
    progress=None,
    *,
    run_id: str | None = None,
    sink: RowSink | None = None,
) -> BuiltRun:
    """Seed, prepare pre-trained weights (one-off, cached), instantiate the strategy and the
    regularisers, and wire the writer and the plugin manager. Rows go to ``sink`` when given,
    else to the plan's results file."""
    progress = progress or NullProgress()
    spec, layered = plan.spec, plan.layered
    generator = seed_everything(spec.seed)
    strategy = layered.strategy_entry.factory(layered.strategy)
    regularizers = [
        e.factory(cfg) for e, cfg in zip(layered.reg_entries, layered.regularizers, strict=True)
    ]
    entry = catalog.models.get(plan.model_name) if plan.model_name in catalog.models else None
    prepare = entry.extra.get("prepare") if entry is not None else None
    if prepare is not None and plan.pretrained:  # one-off, cached (e.g. pre-training clip-tiny)
        prepare(input_shape=plan.stream.input_shape, progress=progress)
    run_id = run_id or new_run_id()
    facts = {
        "run_id": run_id,
        "started_at": now_iso(),
        "cladapt_version": __version__,
        "stream": plan.stream.name,
        "protocol": plan.protocol_cls.name,
        "setting": plan.setting,
        "strategy": plan.strategy_label,
        "params_json": "",  # the writer's, at each write
        "model": plan.model_label,
        "seed": spec.seed,
        "device": str(plan.device),
    }
    writer = ResultWriter(spec.out, facts, plan.params, sink)
    models = Models(plan, catalog, writer.recorded, progress)
    # the guard is registered first: among the trylast implementations it is called last
    pm = run_manager(
        RunGuard(plan), DefaultBehaviour(), writer, *spec.run_plugins, *regularizers, strategy
    )
    context = Run(
        run_id=run_id,
        stream=plan.stream,
        protocol=plan.protocol_cls.name,
        setting=plan.setting,
        strategy=strategy,
        model_name=plan.model_name,
        seed=spec.seed,
        device=plan.device,
        params=layered.protocol,
        hook=pm.hook,
        create_model=models.fresh,
        source_model=models.source,
        amp_dtype=amp_dtype(layered.protocol.amp),
        generator=generator,
        progress=progress,
    )
    return BuiltRun(plan, context, writer, pm, models, regularizers)


def run(built: BuiltRun) -> RunOutcome:
    """Run the protocol. Every completed evaluation is in the CSV as soon as it is computed; a
    failure or Ctrl-C appends an ``error`` row and re-raises; a finished run appends its
    summary rows."""
    ctx, writer, pm = built.context, built.writer, built.pm
    thread_errors: list[str] = []

    def before_hook(*_) -> None:
        raise_if_interrupted()
        raise_thread_error(thread_errors)

    pm.add_hookcall_monitoring(before_hook, lambda *_: None)
    reset_peak_memory(ctx.device)
    start = time.perf_counter()
    status = "error"
    try:
        try:
            with threads_reported(thread_errors):
                result = built.plan.protocol_cls().run(ctx)
            raise_if_interrupted()  # a swallowed Ctrl-C is never scored
            raise_thread_error(thread_errors)  # nor a run whose plugin's thread failed
            status = "ok"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            pm.hook.cladapt_teardown(run=ctx, status=status)
        summary = _summary(ctx, result, pm, start, built.models.untimed_s)
        peak_kind = ctx.state.get("_peak_kind", "")
        notes = ctx.stream.notes
        writer.write(
            [
                Record(k, v, row_type="summary", note=_summary_note(k, peak_kind, notes))
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
    except BaseException as exc:  # asyncio's CancelledError, GeneratorExit, a test runner's
        note = f"a plugin raised {type(exc).__name__}: {exception_text(exc)}"
        writer.write([error_record(note)])
        raise CladaptError(note) from None
    return RunOutcome(run=ctx, result=result, summary=summary)


@contextmanager
def threads_reported(errors: list[str]):
    """While a run goes on, an exception in a thread a plugin started is recorded (instead of
    Python's traceback on stderr) for :func:`raise_thread_error` to stop the run with."""
    previous = threading.excepthook

    def hook(args) -> None:
        name = getattr(args.thread, "name", "?")
        errors.append(f"{name!r}: {args.exc_type.__name__}: {exception_text(args.exc_value)}")

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


def raise_thread_error(errors: list[str]) -> None:
    if errors:
        raise CladaptError(f"a plugin's thread {errors[0]} (the run is not scored)")


def execute(
    spec: RunSpec,
    catalog: Catalog | None = None,
    progress=None,
    *,
    run_id: str | None = None,
    sink: RowSink | None = None,
) -> RunOutcome:
    """Plan, build and run one (stream, strategy, seed). With ``sink`` the rows go to it
    instead of ``spec.out`` (which is then not touched); ``run_id`` defaults to a new one."""
    catalog = catalog or load_catalog(spec.plugins)
    with kept_torch_state():  # what a plugin sets process-wide ends with its run
        the_plan = plan(replace(spec, out=None) if sink is not None else spec, catalog)
        # a checkpoint that does not fit is bad input, refused before any row (as a missing one)
        check_checkpoint_fits(the_plan, catalog)
        return run(build(the_plan, catalog, progress, run_id=run_id, sink=sink))


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
        # floating-point sums are split across the threads, so the thread count is part of what
        # a CPU run's numbers depend on (docs/architecture.md, "Data path and devices")
        "torch_threads": float(torch.get_num_threads()),
    }
    if run.stream.notes:  # e.g. tasks of a NEVIS list that were not found on disk
        summary["experiences"] = float(len(run.stream.experiences))
    measured = set(summary) | RESERVED_METRICS
    for impl in reversed(pm.hook.cladapt_describe.get_hookimpls()):
        extra = impl.function(run=run)
        summary |= _described(plugin_label(impl.plugin), extra, measured)
    return summary


def check_checkpoint_fits(plan: RunPlan, catalog: Catalog) -> None:
    """Load the run's ``--checkpoint`` into a model of its architecture (on the CPU) and
    discard it: the one-line error a run would stop with, before any run (``--dry-run``)."""
    if plan.spec.checkpoint:
        Models(plan, catalog, {}, NullProgress()).fresh().to("cpu")


def plugin_label(plugin: object) -> str:
    """A run plugin as a user knows it: a strategy or regulariser by its registered name, a
    module by its name, anything else by its class (never pluggy's object id)."""
    name = getattr(plugin, "name", None) or getattr(plugin, "__name__", None)
    return str(name) if name else type(plugin).__name__


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
                f"{where} returned {key!r}, a metric or column the harness measures or ranks "
                "by itself: a plugin may add metrics under names of its own, never replace one"
            )
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise CladaptError(f"{where} returned {key}={value!r}, not a number") from None
        if not math.isfinite(number):
            raise CladaptError(f"{where} returned {key}={value!r}, not a finite number")
        out[key] = number
    return out


def pretrained_normalization(model: torch.nn.Module) -> torch.nn.Module:
    """Wrap a timm model with the input mean / std of its pretrained weights (``pretrained_cfg``;
    e.g. 0.5 / 0.5 for AugReg ViTs, ImageNet's for torchvision ResNets); others as they are."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "mean" in cfg and "std" in cfg:
        return Normalized(model, tuple(cfg["mean"]), tuple(cfg["std"]))
    return model


def _summary_note(metric: str, peak_kind: str, notes: list[str]) -> str:
    if metric == "peak_memory_mb":
        return peak_kind
    if metric == "experiences":
        return " | ".join(notes)[:2000]
    if metric == "torch_threads":  # the kernels' instruction set also changes the rounding
        return f"cpu {torch.backends.cpu.get_cpu_capability()}"
    return ""
