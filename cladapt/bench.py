"""``cladapt bench``: every strategy on every embedded stream of its protocol, in parallel worker
processes sized to the machine, with one live progress bar per worker.

Each run is a fresh spawned process (fork after torch has started its thread pools is unsafe):
it imports torch and the plugins, warms the imports a run would otherwise pay inside its timed
region, sets its share of the CPU threads, runs its one job and exits, so no run inherits what an
earlier one (or a plugin) left in the process — torch's global settings, allocator memory, the
peak RSS its summary reports. At most ``workers`` run at once. One-off preparation (source
models, the tiny CLIP, generated streams) is cached on disk behind file locks, so two workers
never prepare the same thing twice. Rows go to the CSV as each run computes them
(:func:`cladapt.results.append_rows` serialises writers with a file lock).

Ctrl-C reaches every worker (same process group); each writes an ``interrupted`` error row for
the run it was in and exits; SIGTERM to the bench is passed on to the workers as SIGTERM. A worker
whose bench dies (even by SIGKILL) stops too (:func:`die_with_parent`).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cladapt.terminal import interruption_handled
from cladapt.workers import cpu_count

T = TypeVar("T")

# scheduling hint only (longest first) where no earlier results give measured wall times:
# rough single-core seconds per run on the embedded streams (benchmarks/bench_time.py)
_HINT_S = {"cotta": 320.0, "vida": 400.0, "cdan": 300.0, "dann": 250.0, "mcc": 250.0}
_HINT_PROTOCOL_S = {"uda": 150.0, "continual": 40.0, "test_time": 10.0}
HEARTBEAT_S = 60.0  # without a terminal: a progress line at least this often


@dataclass(frozen=True)
class Job:
    stream: str
    strategy: str
    seed: int
    pretrained: bool = False  # the model's pre-trained weights (``--pretrained``)
    sets: tuple[tuple[str, str], ...] = ()  # ``--set`` values (a claim's configured runs)
    model: str | None = None  # another model than the stream's default (its model_variants)

    def label(self) -> str:
        weights = " (pre-trained)" if self.pretrained else ""
        config = "".join(f" --set {k}={v}" for k, v in self.sets)
        model = f" --model {self.model}" if self.model else ""
        return f"{self.strategy}{weights}{model}{config} on {self.stream}, seed {self.seed}"


SUITES = ("quick", "full", "full-all")


def parse_pair(entry: str) -> tuple[str, bool]:
    """A stream's ``quick_strategies`` entry: ``nmc`` or ``nmc+pretrained``."""
    name, _, suffix = entry.partition("+")
    return name, suffix == "pretrained"


FULL_SEEDS = 3


def stream_seeds(stream, seeds: int | list[int] | None = None) -> list[int]:
    """The seeds to run on a stream: ``seeds`` (N: 0..N-1, or a list) when given, else its
    definition's ``bench_seeds`` (the number its claims need to be decided,
    ``benchmarks/claim_power.py``; 3 when it sets none)."""
    if seeds is None:
        seeds = int(stream.extra.get("bench_seeds", FULL_SEEDS))
    return list(range(seeds)) if isinstance(seeds, int) else list(seeds)


def suite_jobs(
    catalog, suite: str, seeds: int | list[int] | None, only=(), streams=(), skip=()
) -> list[Job]:
    """The runs of a suite. ``quick``: each embedded stream's ``quick_strategies`` (the seed
    systems and the baselines each is judged against). ``full``: every strategy on every
    embedded stream in the bench, plus the quick suite's pre-trained variants; ``full-all``:
    also the embedded streams left out of the bench. ``only`` / ``streams`` restrict (a named
    stream or strategy is run even where the suite would leave it out); ``skip`` drops
    strategies (e.g. those whose optional extra is missing). ``seeds``: N (0..N-1) or a list;
    None: each stream's own (:func:`stream_seeds`)."""
    jobs: list[Job] = []
    for stream in catalog.streams:
        if not stream.extra.get("embedded") or (streams and stream.name not in streams):
            continue
        named = stream.name in streams
        quick = [parse_pair(e) for e in stream.extra.get("quick_strategies", ())]
        if suite == "quick" and not only and (quick or not named):
            pairs = quick  # (a stream without a quick list is not in the quick suite)
        else:  # the full suite, or strategies / a stream the user named
            if not (stream.extra.get("bench", True) or named or suite == "full-all"):
                continue
            pairs = [
                (s.name, False)
                for s in catalog.strategies
                if stream.protocols[0] in s.protocols and bench_pair(stream, s)
            ] + [p for p in quick if p[1]]
        chosen = stream_seeds(stream, seeds)
        names = [n for n, _ in pairs]
        jobs += [
            Job(stream.name, name, seed, pretrained)
            for name, pretrained in dict.fromkeys(pairs)
            if (not only or name in only) and name not in skip
            for seed in chosen
        ]
        # the runs a claim with ``sets`` reads (alpha-BN at batch 4): made wherever both of its
        # sides are in the suite, so no claim of a suite's rows is left "not run"
        for claim in stream.extra.get("claims", ()):
            if not claim.get("sets"):
                continue
            sets = tuple((str(k), str(v)) for k, v in sorted(claim["sets"].items()))
            sides = [claim["a"], claim["b"]]
            if all(s in names and s not in skip and (not only or s in only) for s in sides):
                jobs += [Job(stream.name, s, seed, False, sets) for s in sides for seed in chosen]
        # the same strategies on another model (model_variants: ViDA's claim on a ViT, as its
        # paper): part of the full suite, like the default model's runs
        if suite != "quick" or only or named:
            for model, strategies in stream.extra.get("model_variants", {}).items():
                jobs += [
                    Job(stream.name, name, seed, False, (), model)
                    for name in strategies
                    if name in names and name not in skip and (not only or name in only)
                    for seed in chosen
                ]
    return jobs


def bench_pair(stream, strategy) -> bool:
    """A stream may list the strategies it is benched with; prompt-only strategies (zero-shot,
    zscl) need a stream with class prompts."""
    listed = stream.extra.get("strategies")
    if listed:
        return strategy.name in listed
    return stream.extra.get("prompted", False) or not getattr(
        strategy.factory, "requires_prompts", False
    )


@dataclass
class JobResult:
    job: Job
    error: str | None  # None: the run completed
    seconds: float  # wall seconds in the worker, preparation included
    run_id: str = ""  # the run's id in the results file ('' if it never started)


def default_workers(device: str, out: Path | None = None) -> int:
    """Workers for this machine (:func:`cladapt.workers.default_workers`), a GPU filled at the
    largest CUDA peak measured in ``out``'s earlier runs."""
    from cladapt.workers import default_workers as rule
    from cladapt.workers import measured_gpu_peak_mb, probe_machine

    return rule(device, probe_machine(), measured_gpu_peak_mb(out) if out else None)


def worker_device(device: str, worker: int) -> str:
    """Spread workers over the GPUs when there are several."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.device_count() > 1:
        return f"cuda:{worker % torch.cuda.device_count()}"
    return device


def order_jobs(
    jobs: list[Job],
    estimates: dict[tuple[str, str], float],
    protocols: dict[Job, str] | None = None,
) -> list[Job]:
    """Longest first (the classic greedy bound on the makespan of parallel machines): measured
    wall times from earlier results where there are any, else a coarse hint."""
    protocols = protocols or {}

    def cost(job: Job) -> float:
        if (job.stream, job.strategy) in estimates:
            return estimates[job.stream, job.strategy]
        return _HINT_S.get(job.strategy, 0.0) or _HINT_PROTOCOL_S.get(protocols.get(job), 30.0)

    return sorted(jobs, key=lambda j: (-cost(j), j.stream, j.strategy, j.seed))


def measured_wall_times(path: Path) -> dict[tuple[str, str], float]:
    """Mean ``wall_time_s`` per (stream, strategy) in an earlier results CSV (none: empty)."""
    from cladapt.leaderboard.aggregate import load

    try:
        df = load([path])
    except Exception:  # no file, or one that is not ours: only a scheduling hint is lost
        return {}
    rows = df[(df.row_type == "summary") & (df.metric == "wall_time_s")]
    return {k: float(v) for k, v in rows.groupby(["stream", "strategy"]).value.mean().items()}


# ---------------------------------------------------------------------------------------------
# progress: a run's phases, reported by the worker, shown as one bar per worker


class EventProgress:
    """The progress object a bench run gets: reports phase starts, advances (at most every
    0.2 s) and ends through ``emit``; nested phases form a stack, the innermost is shown."""

    def __init__(self, emit: Callable[..., None], worker: int) -> None:
        self.emit, self.worker = emit, worker

    def track(
        self,
        iterable: Iterable[T],
        total: int | None = None,
        description: str = "",
        transient: bool = False,
    ) -> Iterator[T]:
        self.emit("push", self.worker, description, total)
        done, last = 0, time.monotonic()
        try:
            for item in iterable:
                yield item
                done += 1
                now = time.monotonic()
                if now - last >= 0.2:
                    self.emit("advance", self.worker, done)
                    last = now
        finally:
            self.emit("pop", self.worker)


class BenchDisplay:
    """A rich display: the overall bar, then one bar per worker (its run and innermost phase)."""

    def __init__(self, console, total: int, workers: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            refresh_per_second=4,
        )
        self.overall = self.progress.add_task("bench", total=total)
        self.bars = [self.progress.add_task("", total=None, visible=False) for _ in range(workers)]
        self.runs: dict[int, str] = {}
        self.since: dict[int, float] = {}
        self.stacks: dict[int, list[tuple[str, int | None, int]]] = {}
        # without a terminal (nohup, CI, a batch job) the bars print nothing: log lines instead
        self.log = not console.is_terminal
        self.console, self.total, self.finished = console, total, 0
        self.started = self.last_line = time.monotonic()

    def __enter__(self) -> BenchDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def handle(self, kind: str, worker: int, *args: Any) -> None:
        stack = self.stacks.setdefault(worker, [])
        if kind == "start":
            self.runs[worker] = args[0].label()
            self.since[worker] = time.monotonic()
            stack.clear()
        elif kind == "push":
            stack.append((args[0], args[1], 0))
        elif kind == "advance" and stack:
            desc, total, _ = stack[-1]
            stack[-1] = (desc, total, args[0])
        elif kind == "pop" and stack:
            stack.pop()
        elif kind == "done":
            self.progress.advance(self.overall)
            self.finished += 1
            self._log_done(self.runs.pop(worker, "a run"), args[0] if args else None)
            stack.clear()
        self.tick()
        self._show(worker)

    def tick(self) -> None:
        """Without a terminal, a heartbeat line when none came for ``HEARTBEAT_S``."""
        if self.log and time.monotonic() - self.last_line > HEARTBEAT_S:
            self.heartbeat()

    def heartbeat(self) -> None:
        """A log line: how many runs are done, and what each worker is running (for how long,
        in which phase)."""
        now = time.monotonic()
        running = []
        for w, label in sorted(self.runs.items()):
            stack = self.stacks.get(w) or []
            phase = f", {stack[-1][0]}" if stack else ""
            running.append(f"{label} ({now - self.since.get(w, now):.0f} s{phase})")
        what = "; ".join(running) if running else "none"
        self._line(f"{self.finished}/{self.total} runs done; running: {what}")

    def _line(self, text: str) -> None:
        from cladapt.terminal import plain

        elapsed = time.monotonic() - self.started
        self.console.print(plain(f"[{elapsed:6.0f} s] {text}"), highlight=False, soft_wrap=True)
        self.last_line = time.monotonic()

    def _log_done(self, label: str, result: JobResult | None) -> None:
        if not self.log:
            return
        if result is None:
            outcome = "done"
        elif result.error:
            outcome = f"failed ({result.error[:200]})"
        else:
            outcome = f"done in {result.seconds:.0f} s"
        self._line(f"{self.finished}/{self.total} {label}: {outcome}")

    def _show(self, worker: int) -> None:
        bar = self.bars[worker]
        run = self.runs.get(worker)
        if run is None:
            self.progress.update(bar, visible=False)
            return
        stack = self.stacks.get(worker) or []
        desc, total, done = stack[-1] if stack else ("starting", None, 0)
        self.progress.update(
            bar, description=f"  {run} · {desc}", total=total, completed=done, visible=True
        )


# ---------------------------------------------------------------------------------------------
# workers


def warm_imports() -> None:
    """Pay the lazy imports of a first optimizer step (``torch._dynamo``, 2 s CPU and more under
    load) before any run's clock starts, so a run inside the bench and the same run alone
    record the same wall time."""
    import torch

    p = torch.nn.Parameter(torch.zeros(1))
    for make in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
        opt = make([p], lr=0.0)
        p.grad = torch.zeros(1)
        opt.step()


def _run_job(job: Job, catalog, device: str, out: Path, progress) -> JobResult:
    from cladapt.errors import CladaptError
    from cladapt.results import new_run_id
    from cladapt.runner import RunSpec, execute

    tic = time.perf_counter()
    run_id = new_run_id()
    try:
        execute(
            RunSpec(
                job.stream,
                job.strategy,
                dict(job.sets),
                seed=job.seed,
                device=device,
                out=out,
                pretrained=job.pretrained,
                model=job.model,
            ),
            catalog,
            progress,
            run_id=run_id,
        )
        error = None
    except CladaptError as exc:  # the run wrote its error row; the bench goes on
        error = str(exc)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a crash in one run (its error row is written) is reported too
        error = f"{type(exc).__name__}: {exc}"
    return JobResult(job, error, time.perf_counter() - tic, run_id)


@contextlib.contextmanager
def bench_lock(out: Path) -> Iterator[None]:
    """Hold ``OUT.bench.lock`` for the bench's whole duration: a second bench on the same results
    file is refused instead of moving the first one's file aside and mixing their rows. The lock
    is the kernel's (``flock``), so a bench killed outright releases it."""
    from cladapt.errors import CladaptError

    lock = out.with_name(out.name + ".bench.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except ImportError:  # pragma: no cover - Windows: no bench lock
                pass
            except OSError:
                raise CladaptError(
                    f"another cladapt bench is writing to {out}; wait for it to finish or pass "
                    "another --out"
                ) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if same:  # not a lock file that its holder removed while we waited
                try:
                    yield
                finally:
                    with contextlib.suppress(OSError):
                        os.unlink(lock)
                return
        finally:
            os.close(fd)


def die_with_parent(parent: int) -> None:
    """End this worker when the bench that started it dies, even by SIGKILL: on Linux the kernel
    sends SIGTERM (``PR_SET_PDEATHSIG``); everywhere a watchdog thread notices the new parent
    within a second. The run in progress then stops as on SIGTERM (its error row is written)
    and no further run starts, so a dead bench never goes on appending to its file."""
    import ctypes
    import threading

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # a run that swallows the signal: end the process anyway
        os._exit(143)

    if os.getppid() != parent:  # the bench died before this worker got here
        os._exit(143)
    threading.Thread(target=watch, name="cladapt-bench-watchdog", daemon=True).start()


def _job_main(
    slot: int,
    threads: int,
    device: str,
    out: Path,
    plugins: tuple[str, ...],
    job: Job,
    events: mp.Queue,
    parent: int,
) -> None:
    """One run in a fresh process: nothing a plugin or an earlier run did to the process (torch's
    global settings, memory held by the allocator, the peak RSS) reaches it."""
    die_with_parent(parent)
    import warnings

    from cladapt.errors import PluginWarning
    from cladapt.terminal import install_signal_handlers

    warnings.simplefilter("ignore", PluginWarning)  # the bench said it once, not every run

    install_signal_handlers()  # the first SIGINT/SIGTERM stops the run (error row), later ones wait

    def emit(*event: Any) -> None:
        events.put(event)

    try:
        emit("start", slot, job)
        import torch

        torch.set_num_threads(threads)
        from cladapt.manager import load_catalog

        catalog = load_catalog(plugins)
        warm_imports()
        result = _run_job(job, catalog, device, out, EventProgress(emit, slot))
    except KeyboardInterrupt as exc:
        from cladapt.errors import interruption_note

        result = JobResult(job, interruption_note(exc), 0.0)
    except Exception as exc:  # the catalog failed to load: the job reports it
        result = JobResult(job, f"{type(exc).__name__}: {exc}", 0.0)
    emit("done", slot, result)


def run_jobs(
    jobs: list[Job],
    *,
    out: Path,
    device: str,
    workers: int,
    plugins: tuple[str, ...],
    console,
) -> list[JobResult]:
    """Run ``jobs`` (in this order of hand-out), each in a fresh worker process, at most
    ``workers`` at once, and return their results as they finish."""
    workers = max(1, min(workers, len(jobs)))
    threads = worker_threads(device, workers)
    with BenchDisplay(console, len(jobs), workers) as display:
        return _run_pool(jobs, out, device, plugins, workers, threads, display)


def worker_threads(device: str, workers: int) -> int:
    """Torch threads per bench worker. On a CPU one, whatever the machine: a sum split over more
    threads rounds differently, so a leaderboard row made with one thread is the same number on
    any machine (the cores are used by running more workers). On a GPU the cores are shared out:
    the CPU side there only feeds the device."""
    from cladapt.device import resolve_device
    from cladapt.errors import CladaptError

    try:
        on_cpu = resolve_device(device).type == "cpu"
    except CladaptError:  # no such device here: each run reports it in its own error row
        on_cpu = True
    return 1 if on_cpu else max(1, cpu_count() // workers)


def _run_pool(jobs, out, device, plugins, workers, threads, display) -> list[JobResult]:
    """Keep ``workers`` job processes going (one process per job), feeding the display."""
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    pending = list(jobs)
    free = list(range(workers))  # slots: a display bar and a GPU each
    running: dict[int, tuple[Any, Job]] = {}
    results: list[JobResult] = []

    def start_jobs() -> None:
        while pending and free:
            slot, job = free.pop(0), pending.pop(0)
            args = (slot, threads, worker_device(device, slot), out, plugins, job, events)
            p = ctx.Process(target=_job_main, args=(*args, os.getpid()), daemon=True)
            p.start()
            running[slot] = (p, job)

    def handle(kind: str, slot: int, *args: Any) -> None:
        if kind == "done" and slot in running:
            p, _ = running.pop(slot)
            p.join(timeout=10)
            free.append(slot)
            results.append(args[0])
        display.handle(kind, slot, *args)

    try:
        start_jobs()
        while running:
            try:
                handle(*events.get(timeout=0.5))
            except queue.Empty:
                display.tick()
                dead = [s for s, (p, _) in running.items() if not p.is_alive()]
                while dead:  # a process may have reported just before it ended: read that first
                    try:
                        handle(*events.get_nowait())
                    except queue.Empty:
                        break
                for slot in [s for s in dead if s in running]:  # killed from outside (OOM)
                    p, job = running.pop(slot)
                    free.append(slot)
                    results.append(JobResult(job, f"worker died (exit {p.exitcode})", 0.0))
                    display.handle("done", slot)
            start_jobs()
    except KeyboardInterrupt as exc:
        interruption_handled()  # workers are being stopped: later signals wait
        _stop([p for p, _ in running.values()], getattr(exc, "signal_name", "SIGINT"))
        raise
    return results


def _stop(procs, signal_name: str = "SIGINT") -> None:
    """Pass the bench's stop on to every worker (each writes its run's error row, naming the
    signal), then wait."""
    sig = signal.SIGTERM if signal_name == "SIGTERM" else signal.SIGINT
    for p in procs:
        if p.is_alive() and p.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)
    deadline = time.monotonic() + 30
    for p in procs:
        p.join(timeout=max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.terminate()
