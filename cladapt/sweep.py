"""Grids of runs (streams x strategies x seeds), on Ray when it is installed, else in-process.

Each run is one Ray task that calls :func:`cladapt.runner.execute` in a worker process, possibly
on another machine. The driver alone writes the results CSV: a worker sends each batch of rows
through a relay actor on the driver's node, and the driver appends them with the locked append
of :mod:`cladapt.results` as they arrive, so a run killed mid-way keeps its completed evaluations
and a worker never needs the CSV path. A task whose worker dies is re-executed by Ray under a new
run id; the driver closes the lost attempt with an ``incomplete`` error row. A run whose key
(stream, strategy, the ``--set`` values that differ from the defaults, model, setting, seed)
already has a finished summary in the CSV is skipped, so a sweep can be re-run after a crash and
only does what is missing. A failed run records an error row and the sweep goes on.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cladapt.errors import CladaptError, ConfigError, DataError
from cladapt.planning import RunSpec
from cladapt.results import Record, append_rows, error_record, new_run_id, now_iso


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


def run_key(stream: str, strategy: str, config: str, model: str, setting: str, seed: int) -> str:
    """A run's identity: everything that changes its result (the ``--set`` values that differ
    from the defaults, as the run records them in ``params_json["config"]``)."""
    parts = {
        "stream": stream,
        "strategy": strategy,
        "config": config,
        "model": model,
        "setting": setting,
        "seed": int(seed),
    }
    return json.dumps(parts, sort_keys=True)


def finished_keys(path: Path) -> set[str]:
    """Keys of the finished runs in ``path``. Rows written before runs recorded their
    configuration (no ``config`` in ``params_json``) match nothing: they are run again."""
    if not path.is_file():
        return set()
    from cladapt.leaderboard.aggregate import params_of
    from cladapt.results import read_results

    df = read_results(path)
    failed = set(df.loc[df.row_type == "error", "run_id"])
    runs = df[(df.row_type == "summary") & ~df.run_id.isin(failed)].drop_duplicates("run_id")
    keys = set()
    for row in runs.itertuples():
        params = params_of(row.params_json)
        if "config" in params:
            keys.add(
                run_key(
                    row.stream, row.strategy, params["config"], row.model, row.setting, row.seed
                )
            )
    return keys


def job_identity(spec: RunSpec, catalog) -> tuple[str, str, str, str]:
    """(strategy label, config, model label, setting) the run of ``spec`` will record."""
    from cladapt.planning import plan

    planned = plan(replace(spec, out=None), catalog)
    return planned.strategy_label, planned.layered.config, planned.model_label, planned.setting


def plan(
    streams: Iterable[str],
    strategies: Iterable[str],
    seeds: Iterable[int],
    base: RunSpec,
    catalog=None,
) -> tuple[list[SweepJob], list[str]]:
    """(jobs to run, keys skipped because the CSV already has a finished run of them)."""
    from cladapt.manager import load_catalog

    catalog = catalog or load_catalog(base.plugins)
    done = finished_keys(Path(base.out)) if base.out is not None else set()
    jobs, skipped = [], []
    planned: set[str] = set()
    seeds = list(dict.fromkeys(seeds))
    for stream in streams:
        for strategy in strategies:
            spec = replace(base, stream=stream, strategy=strategy)
            try:
                label_, config, model, setting = job_identity(spec, catalog)
            except DataError:  # its data is not here: the run fails and records why
                label_, config, model, setting = strategy, "", spec.model or "", ""
            except CladaptError as exc:  # refused before anything runs, naming the job
                raise CladaptError(f"{strategy} on {stream}: {exc}") from None
            for seed in seeds:
                key = run_key(stream, label_, config, model, setting, seed)
                if key in done:
                    skipped.append(key)
                elif key not in planned:  # one configuration named twice runs once
                    planned.add(key)
                    jobs.append(SweepJob(replace(spec, seed=seed), key))
    return jobs, skipped


def label(job: SweepJob) -> str:
    return f"{job.spec.strategy} on {job.spec.stream}, seed {job.spec.seed}"


class LocalChannel:
    """Where a run's rows go when the run executes in the process that owns the CSV."""

    def __init__(self, out: Path | None) -> None:
        self.out = out

    def started(self, key: str, run_id: str) -> None:
        pass

    def rows(self, key: str, run_id: str, rows: list[dict[str, Any]]) -> None:
        if self.out is not None:
            append_rows(self.out, rows)


def planned_facts(spec: RunSpec, run_id: str) -> dict[str, Any]:
    """The facts of a run known before it builds anything: for error rows written on its behalf
    (a failure before the run's own writer exists, a lost worker, Ctrl-C on the driver)."""
    from cladapt import __version__
    from cladapt.manager import load_catalog
    from cladapt.planning import _resolve

    try:
        protocol = _resolve(spec, load_catalog(spec.plugins))[2].name
    except Exception:  # noqa: BLE001 - an unknown name is the run's error, reported elsewhere
        protocol = ""
    return {
        "run_id": run_id,
        "started_at": now_iso(),
        "cladapt_version": __version__,
        "stream": spec.stream,
        "protocol": protocol,
        "setting": spec.setting or "",
        "strategy": spec.strategy,
        "params_json": json.dumps(spec.sets, sort_keys=True, default=str),
        "model": spec.model or "",
        "seed": spec.seed,
        "device": spec.device,
    }


def error_row(facts: dict[str, Any], note: str) -> dict[str, Any]:
    return {**facts, **vars(error_record(note))}


def run_job(
    spec: RunSpec, key: str = "", channel=None, threads: int | None = None
) -> tuple[bool, str]:
    """Execute one run in whatever process calls it, its rows sent through ``channel`` (default:
    appended to ``spec.out``); (ok, message). Every attempt has its own run id, announced before
    anything else, so the driver can tell a retried run from the rows of a lost attempt."""
    import socket

    import torch

    from cladapt.errors import CladaptError, DataError
    from cladapt.manager import load_catalog
    from cladapt.runner import execute

    channel = channel or LocalChannel(spec.out)
    run_id = new_run_id()
    channel.started(key, run_id)
    sent = [0]

    def sink(rows: list[dict[str, Any]]) -> None:
        sent[0] += len(rows)
        channel.rows(key, run_id, rows)

    if threads:
        torch.set_num_threads(threads)
    try:
        if spec.data_root and not Path(spec.data_root).expanduser().is_dir():
            raise DataError(
                f"--data-root {spec.data_root} does not exist on node {socket.gethostname()}: "
                "put the data at the same path on every worker node (or on a shared store)"
            )
        outcome = execute(spec, load_catalog(spec.plugins), run_id=run_id, sink=sink)
    except Exception as exc:  # noqa: BLE001 - a sweep records the failure and goes on
        msg = str(exc) if isinstance(exc, CladaptError) else f"{type(exc).__name__}: {exc}"
        if not sent[0]:  # it failed before its own writer existed: the error row is ours to write
            sink([error_row(planned_facts(spec, run_id), msg)])
        return False, msg
    headline = next(iter(outcome.result.headline.items()), ("", float("nan")))
    return True, f"{headline[0]}={headline[1]:.4g}"


Callback = Callable[[str, SweepJob, str], None]  # (event, job, message)


def run_sequential(jobs: list[SweepJob], on_event: Callback, threads: int | None = None) -> None:
    for job in jobs:
        on_event("start", job, "")
        ok, msg = run_job(job.spec, job.key, threads=threads)
        on_event("done" if ok else "failed", job, msg)


def run_threads(device: str, address: str | None, cpus_per_run: float) -> int | None:
    """Torch threads of each run of a sweep on CPUs: one on this machine, as ``bench`` and the
    leaderboard's rows (the thread count changes a CPU run's rounding, so it is part of a run's
    identity), the CPUs each run reserves on a cluster; None on a GPU (the cores are shared
    out, and the count changes nothing there)."""
    from cladapt.device import resolve_device

    try:
        on_cpu = resolve_device(device).type == "cpu"
    except CladaptError:  # a device not here: the runs fail and say why
        on_cpu = True
    if not on_cpu:
        return None
    return max(1, int(cpus_per_run)) if address else 1


@dataclass(frozen=True)
class Resources:
    """What each Ray task reserves. ``gpus=None``: one GPU per run when the cluster has GPUs.
    ``retries``: re-executions after a *system* failure (the worker process or its node died);
    a run's own error is recorded and never retried."""

    cpus: float = 1.0
    gpus: float | None = None
    retries: int = 3


class _Relay:
    """A Ray actor on the driver's node that holds rows in transit: a worker's ``put`` returns
    once the rows are here, the driver ``drain``s them a few times a second into the CSV."""

    def __init__(self) -> None:
        self.items: list[tuple] = []

    def put(self, item: tuple) -> None:
        self.items.append(item)

    def drain(self) -> list[tuple]:
        items, self.items = self.items, []
        return items


class RelayChannel:
    """A worker's end of the relay (pickled into each task)."""

    def __init__(self, relay) -> None:
        self.relay = relay

    def started(self, key: str, run_id: str) -> None:
        import ray

        ray.get(self.relay.put.remote(("started", key, run_id, [])))

    def rows(self, key: str, run_id: str, rows: list[dict[str, Any]]) -> None:
        import ray

        ray.get(self.relay.put.remote(("rows", key, run_id, rows)))


class Ledger:
    """The driver's account of every attempt: it writes the rows it is sent to the one CSV, and
    closes with an error row each attempt that will never finish (a lost worker, Ctrl-C), so an
    unfinished run is never mistaken for a finished one and no finished run is written twice."""

    def __init__(self, out: Path, specs: dict[str, RunSpec]) -> None:
        self.out, self.specs = out, specs
        self.attempts: dict[str, list[str]] = {}
        self.facts: dict[str, dict[str, Any]] = {}
        self.closed: set[str] = set()

    def receive(self, kind: str, key: str, run_id: str, rows: list[dict[str, Any]]) -> bool:
        """Record one message; True when it starts a retry of ``key``."""
        if kind == "started":
            earlier = self.attempts.setdefault(key, [])
            retry = bool(earlier)
            for old in earlier:
                self.close(old, f"incomplete: its worker was lost; retried as run {run_id}")
            earlier.append(run_id)
            self.facts.setdefault(run_id, planned_facts(self.specs[key], run_id))
            return retry
        if rows:
            append_rows(self.out, rows)
            base = {k: v for k, v in rows[0].items() if k not in _RECORD_FIELDS}
            self.facts[run_id] = base
            if any(r["row_type"] in ("summary", "error") for r in rows):
                self.closed.add(run_id)
        return False

    def close(self, run_id: str, note: str) -> None:
        if run_id not in self.closed:
            append_rows(self.out, [error_row(self.facts[run_id], note)])
            self.closed.add(run_id)

    def close_key(self, key: str, note: str) -> None:
        for run_id in self.attempts.get(key, []):
            self.close(run_id, note)


_RECORD_FIELDS = {f.name for f in dataclasses.fields(Record)}


def default_gpus_per_run(address: str | None, cluster_gpus: float, out: Path) -> float:
    """0 without GPUs; on a cluster one GPU per run; on this machine a GPU's share such that it
    holds as many runs as its free memory allows (:mod:`cladapt.workers`)."""
    if cluster_gpus <= 0:
        return 0.0
    if address:
        return 1.0
    from cladapt.workers import (
        DEFAULT_RUN_PEAK_MB,
        measured_gpu_peak_mb,
        probe_machine,
        runs_per_gpu,
    )

    free = probe_machine().gpu_free_mb
    if not free:
        return 1.0
    peak = measured_gpu_peak_mb(out) or DEFAULT_RUN_PEAK_MB
    return 1.0 / runs_per_gpu(min(free), peak)


def run_on_ray(
    jobs: list[SweepJob],
    on_event: Callback,
    address: str | None,
    workers: int | None,
    resources: Resources = Resources(),
    threads: int | None = None,
) -> None:
    import ray

    _init_ray(address, workers)
    out = Path(jobs[0].spec.out) if jobs and jobs[0].spec.out else None
    if out is None:
        raise ConfigError("a Ray sweep needs --out: the driver writes every run's rows there")
    gpus = resources.gpus
    if gpus is None:
        gpus = default_gpus_per_run(address, ray.cluster_resources().get("GPU", 0), out)
    _check_fits(ray.nodes(), resources.cpus, gpus)
    if threads is not None:  # CPU runs: what run_threads decided (the runs' identity has it)
        pass
    elif address:  # torch threads match the CPUs each run reserves on its node
        threads = max(1, int(resources.cpus))
    else:  # on a GPU, this machine's cores shared by the runs that fit at once
        cpus = int(ray.available_resources().get("CPU", 1))
        threads = max(1, (os.cpu_count() or 1) // max(1, min(cpus, len(jobs) or 1)))
    relay = _driver_relay()
    channel = RelayChannel(relay)
    task = ray.remote(run_job).options(
        num_cpus=resources.cpus,
        num_gpus=gpus,
        max_retries=resources.retries,
        retry_exceptions=False,
    )
    ledger = Ledger(out, {job.key: job.spec for job in jobs})
    pending = {}
    for job in jobs:
        spec = replace(job.spec, out=None)  # a worker never touches the user's CSV
        if gpus and spec.device == "auto":
            spec = replace(spec, device="cuda")
        pending[task.remote(spec, job.key, channel, threads)] = job
    _RayCollector(relay, ledger, {job.key: job for job in jobs}, on_event).wait(pending)


def _init_ray(address: str | None, workers: int | None) -> None:
    """Join the cluster at ``address``, or start a local one with ``workers`` CPUs; the
    ``CLADAPT_*`` environment (the cache folder) travels to every worker."""
    import ray

    if ray.is_initialized():
        return
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


def _driver_relay():
    """A relay actor pinned to the driver's node: workers send their rows there."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    return (
        ray.remote(_Relay)
        .options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
        .remote()
    )


@dataclass
class _RayCollector:
    """Waits for the sweep's tasks, hands the rows the relay holds to the ledger, and reports
    each run's start, retry, end or failure; on Ctrl-C cancels what is left and closes it."""

    relay: Any
    ledger: Ledger
    by_key: dict[str, SweepJob]
    on_event: Callback

    def drain(self) -> None:
        import ray

        for kind, key, run_id, rows in ray.get(self.relay.drain.remote()):
            if self.ledger.receive(kind, key, run_id, rows):
                self.on_event("retry", self.by_key[key], f"run {run_id}")
            elif kind == "started":
                self.on_event("start", self.by_key[key], "")

    def wait(self, pending: dict[Any, SweepJob]) -> None:
        import ray

        try:
            while pending:
                self._collect(pending)
        except KeyboardInterrupt:
            from cladapt.terminal import interruption_handled

            interruption_handled()  # cleanup below: later signals wait
            for ref in pending:
                ray.cancel(ref, force=True)
            self.drain()
            for job in pending.values():
                self.ledger.close_key(job.key, "interrupted: the sweep was cancelled (Ctrl-C)")
            raise
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def _collect(self, pending: dict[Any, SweepJob]) -> None:
        import ray

        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.25)
        results = {}
        for ref in ready:
            try:
                results[ref] = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - lost more often than it may be retried
                results[ref] = (False, f"{type(exc).__name__}: {exc}".splitlines()[0])
        self.drain()  # after the results: a finished task's rows are all in the relay by now
        for ref, (ok, msg) in results.items():
            job = pending.pop(ref)
            if not ok:
                self.ledger.close_key(job.key, f"incomplete: {msg}")
            if job.key not in self.ledger.attempts:  # never started anywhere
                self.on_event("start", job, "")
            self.on_event("done" if ok else "failed", job, msg)


def _check_fits(nodes: list[dict], cpus: float, gpus: float) -> None:
    """A task no node can hold would wait forever: refuse it in one line instead."""
    alive = [n["Resources"] for n in nodes if n.get("Alive")]
    if not any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in alive):
        most_cpus = max((r.get("CPU", 0) for r in alive), default=0)
        most_gpus = max((r.get("GPU", 0) for r in alive), default=0)
        raise ConfigError(
            f"no node of the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs for one run (the "
            f"largest has {most_cpus:g} CPUs, {most_gpus:g} GPUs): lower --cpus-per-run / "
            "--gpus-per-run"
        )


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
    resources: Resources = Resources(),
    threads: int | None = None,
) -> str:
    """Run ``jobs``; returns the backend used ("ray" or "sequential"). ``threads``: each run's
    torch threads (:func:`run_threads`)."""
    use_ray = backend == "ray" or (backend == "auto" and ray_available())
    if use_ray and jobs:
        run_on_ray(jobs, on_event, address, workers, resources, threads)
        return "ray"
    run_sequential(jobs, on_event, threads)
    return "sequential"
