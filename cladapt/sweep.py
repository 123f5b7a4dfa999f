"""Grids of runs (streams x strategies x seeds), on Ray when it is installed, else in-process.

Each run is one Ray task that calls :func:`cladapt.runner.execute` in a worker process; all
workers append to the same results CSV through the locked append of :mod:`cladapt.results`, so
rows are never torn or lost. A run whose key (stream, strategy, the swept ``--set`` values, model,
setting, seed) already has a finished summary in the CSV is skipped, so a sweep can be re-run
after a crash and only does what is missing. A failed run records an error row (``execute`` does
that) and the sweep goes on.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cladapt.errors import ConfigError, UnknownNameError
from cladapt.runner import RunSpec


@dataclass(frozen=True)
class SweepJob:
    spec: RunSpec
    key: str


@dataclass
class SweepReport:
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    backend: str = "sequential"


def _norm(value: Any) -> str:
    """One spelling per typed value: 0.010 == 1e-2, True == true, (1, 2) == [1.0, 2.0]. Values
    must be typed first (:func:`typed_sets`): the string "false" and False differ here."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(float(value))
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_norm(v) for v in value) + "]"
    return str(value)


def typed_sets(catalog, stream: str, strategy: str, sets: dict[str, Any]) -> dict[str, Any]:
    """``--set`` strings converted to their parameters' types for this (stream, strategy), the
    way the run itself will read them, so that a key matches the run's ``params_json``."""
    from cladapt.config import coerce, split_values
    from cladapt.runner import _resolve, regularizer_entry

    strategy_entry = catalog.strategies.get(strategy)
    protocol_cls = _resolve(RunSpec(stream, strategy), catalog)[2]
    regs = [
        regularizer_entry(catalog, name, protocol_cls.name)
        for name in strategy_entry.factory.regularizers
    ]
    from cladapt.stream import StreamOptions

    classes = [
        StreamOptions,
        protocol_cls.Config,
        strategy_entry.factory.Config,
        *(r.factory.Config for r in regs),
    ]
    typed: dict[str, Any] = {}
    try:
        parts = split_values(sets, *classes)
    except UnknownNameError as exc:
        raise ConfigError(f"{exc} (for {strategy} on {stream})") from None
    for cls, part in zip(classes, parts, strict=True):
        hints = typing.get_type_hints(cls)
        typed |= {k: coerce(v, hints[k], k) for k, v in part.items()}
    return typed


def run_key(
    stream: str,
    strategy: str,
    sets: dict[str, Any],
    model: str | None,
    setting: str | None,
    seed: int,
) -> str:
    parts = {
        "stream": stream,
        "strategy": strategy,
        "params": {k: _norm(v) for k, v in sorted(sets.items())},
        "model": model or "*",
        "setting": setting or "*",
        "seed": int(seed),
    }
    return json.dumps(parts, sort_keys=True)


def finished_keys(
    path: Path, template: dict[str, Any], model: str | None, setting: str | None
) -> set[str]:
    """Keys of the finished runs in ``path``, projected on the swept parameter names."""
    if not path.is_file():
        return set()
    from cladapt.results import read_results

    df = read_results(path)
    runs = df[df.row_type == "summary"].drop_duplicates("run_id")
    keys = set()
    for row in runs.itertuples():
        params = json.loads(row.params_json or "{}")
        if any(k not in params for k in template):
            continue
        keys.add(
            run_key(
                row.stream,
                row.strategy,
                {k: params[k] for k in template},
                row.model.split("@")[0] if model else None,
                row.setting if setting else None,
                row.seed,
            )
        )
    return keys


def plan(
    streams: Iterable[str],
    strategies: Iterable[str],
    seeds: Iterable[int],
    base: RunSpec,
    catalog=None,
) -> tuple[list[SweepJob], list[str]]:
    """(jobs to run, keys skipped because the CSV already has them)."""
    from cladapt.manager import load_catalog

    catalog = catalog or load_catalog(base.plugins)
    done = finished_keys(Path(base.out), base.sets, base.model, base.setting)
    jobs, skipped = [], []
    for stream in streams:
        for strategy in strategies:
            typed = typed_sets(catalog, stream, strategy, base.sets)
            for seed in seeds:
                key = run_key(stream, strategy, typed, base.model, base.setting, seed)
                if key in done:
                    skipped.append(key)
                else:
                    spec = replace(base, stream=stream, strategy=strategy, seed=seed)
                    jobs.append(SweepJob(spec, key))
    return jobs, skipped


def label(job: SweepJob) -> str:
    return f"{job.spec.strategy} on {job.spec.stream}, seed {job.spec.seed}"


def run_job(spec: RunSpec, threads: int | None = None) -> tuple[bool, str]:
    """Execute one run (in whatever process calls it); (ok, message)."""
    import torch

    from cladapt.errors import CladaptError
    from cladapt.manager import load_catalog
    from cladapt.runner import execute

    if threads:
        torch.set_num_threads(threads)
    try:
        outcome = execute(spec, load_catalog(spec.plugins))
    except CladaptError as exc:
        return False, str(exc)
    except Exception as exc:  # noqa: BLE001 - a sweep records the failure and goes on
        return False, f"{type(exc).__name__}: {exc}"
    headline = next(iter(outcome.result.headline.items()), ("", float("nan")))
    return True, f"{headline[0]}={headline[1]:.4g}"


Callback = Callable[[str, SweepJob, str], None]  # (event, job, message)


def run_sequential(jobs: list[SweepJob], on_event: Callback) -> None:
    for job in jobs:
        on_event("start", job, "")
        ok, msg = run_job(job.spec)
        on_event("done" if ok else "failed", job, msg)


def run_on_ray(
    jobs: list[SweepJob], on_event: Callback, address: str | None, workers: int | None
) -> None:
    import ray

    if not ray.is_initialized():
        env = {k: v for k, v in os.environ.items() if k.startswith("CLADAPT_")}
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "runtime_env": {"env_vars": env} if env else None,
        }
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers or os.cpu_count(), **kwargs)
    cpus = int(ray.available_resources().get("CPU", 1))
    threads = max(1, (os.cpu_count() or 1) // max(1, min(cpus, len(jobs) or 1)))
    task = ray.remote(num_cpus=1, max_retries=0)(run_job)
    pending = {}
    for job in jobs:
        ref = task.remote(job.spec, threads if not address else None)
        pending[ref] = job
        on_event("start", job, "")
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    ok, msg = ray.get(ref)
                except Exception as exc:  # worker died: the run's rows so far stay in the CSV
                    ok, msg = False, f"{type(exc).__name__}: {exc}"
                on_event("done" if ok else "failed", job, msg)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def sweep(
    jobs: list[SweepJob],
    on_event: Callback,
    backend: str = "auto",
    address: str | None = None,
    workers: int | None = None,
) -> str:
    """Run ``jobs``; returns the backend used ("ray" or "sequential")."""
    use_ray = backend == "ray" or (backend == "auto" and ray_available())
    if use_ray and jobs:
        run_on_ray(jobs, on_event, address, workers)
        return "ray"
    run_sequential(jobs, on_event)
    return "sequential"
