"""The ``cladapt`` command line (click + rich)."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from cladapt import __version__
from cladapt.config import field_help, parse_assignments
from cladapt.errors import (
    CladaptError,
    ConfigError,
    DataError,
    UnknownNameError,
    exception_text,
)
from cladapt.terminal import (
    clean,
    exit_code,
    install_signal_handlers,
    install_warning_printer,
    interruption_handled,
    plain,
)

# Logs and pipes get wide tables instead of rich's 80-column default for non-terminals.
console = Console() if sys.stdout.isatty() else Console(width=160)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)

DEBUG_ENV = "CLADAPT_DEBUG"
# a clone's committed leaderboard (leaderboard/) is written only when asked for by --out / --site
DEFAULT_RESULTS = Path("results/results.csv")
DEFAULT_SITE = Path("results/site")
COMMITTED = Path("leaderboard/results.csv")

plugin_option = click.option(
    "--plugin",
    "plugins",
    multiple=True,
    metavar="MODULE",
    help="extra plugin module to load; repeatable",
)
results_option = click.option(
    "--results",
    "results",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"results CSV(s) to read (default {DEFAULT_RESULTS}); repeatable",
)
site_option = click.option(
    "--site",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_SITE,
    show_default=True,
    help="directory of the static leaderboard site",
)


SEED_RANGE = click.IntRange(0, 2**32 - 1)


def _fail(message: str, code: int = 2) -> None:
    # printed as text: messages such as "pip install 'cladapt[ray]'" or names from a CSV must
    # print as written (no markup), without control characters
    line = plain("error: ", style="bold red") + plain(" ".join(clean(message).splitlines()))
    err_console.print(line, highlight=False, soft_wrap=True)
    sys.exit(code)


def entry() -> None:
    """The ``cladapt`` command: the click group, then an exit that never waits for a thread a
    plugin left running (Python would wait for it forever after the command is done, and a
    signal then would print a traceback): one warning line names the threads."""
    import threading

    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    _close_own_threads()
    left = [t.name for t in threading.enumerate() if t.is_alive() and not t.daemon]
    left = [n for n in left if n != threading.main_thread().name]
    if left:
        err_console.print(
            plain(f"warning: thread(s) left running by a plugin ({', '.join(left)}); not waiting"),
            highlight=False,
            soft_wrap=True,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _close_own_threads() -> None:
    """Join the harness's own idle worker threads (the CPU corruptions' pool), so that only a
    plugin's threads are left to warn about."""
    module = sys.modules.get("cladapt.data.corruptions")
    if module is not None and module._threads.cache_info().currsize:
        module._threads().shutdown(wait=True)
        module._threads.cache_clear()


class CladaptGroup(click.Group):
    """Turns CladaptError (and, unless CLADAPT_DEBUG=1, any error) into one line + exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CladaptError as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            _fail(exception_text(exc))
        except KeyboardInterrupt as exc:
            interruption_handled()
            runs = ctx.invoked_subcommand in ("run", "bench", "sweep")
            _fail(
                "interrupted; rows of completed evaluations are kept in the results file"
                if runs
                else "interrupted",
                code=exit_code(exc),
            )
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except BaseException as exc:  # also CancelledError, GeneratorExit from a plugin
            if os.environ.get(DEBUG_ENV):
                raise
            _fail(
                f"{type(exc).__name__}: {exception_text(exc)} "
                f"(set {DEBUG_ENV}=1 for the traceback)",
                code=1,
            )


@click.group(cls=CladaptGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cladapt")
def main() -> None:
    """Benchmark continual-learning, domain-adaptation and test-time-adaptation strategies."""
    install_signal_handlers()
    install_warning_printer(err_console)


def _catalog(plugins: tuple[str, ...]):
    from cladapt.manager import load_catalog

    return load_catalog(plugins)


@main.command()
@click.option("--stream", "-s", required=True, help="stream name (see `cladapt list streams`)")
@click.option(
    "--strategy", "-a", required=True, help="strategy name (see `cladapt list strategies`)"
)
@click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="hyper-parameter override; repeatable"
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=SEED_RANGE,
    help="seeds python/numpy/torch and data order (0 .. 2^32-1)",
)
@click.option(
    "--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N | mps"
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_RESULTS,
    show_default=True,
    help="results CSV to append to",
)
@click.option("--setting", default=None, help="protocol setting, e.g. episodic, task-incremental")
@click.option(
    "--model", default=None, help="model name: registered (`cladapt list models`) or any timm name"
)
@click.option(
    "--pretrained",
    is_flag=False,
    flag_value="default",
    default=None,
    metavar="[TAG|FILE]",
    help="load pretrained weights: timm's, or open_clip's default tag (openai), a tag or a file",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="weights to start from / source model",
)
@click.option(
    "--data-root", type=click.Path(file_okay=False), default=None, help="root of on-disk datasets"
)
@click.option("--download", is_flag=True, help="let torchvision download missing datasets (online)")
@plugin_option
@click.option(
    "--with",
    "regularizers",
    multiple=True,
    metavar="REGULARIZER",
    help="add a loss plugin (e.g. lwf, ewc) to the strategy; repeatable",
)
@click.option("--quiet", "-q", is_flag=True, help="no progress bars")
@click.option(
    "--dry-run",
    is_flag=True,
    help="print the run's plan (stream, strategy, model and weights, seed, device, every "
    "effective value it would record) and stop: nothing is trained, no row is written",
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=None,
    help="torch CPU threads (default on a CPU: 1, as the leaderboard's rows were made, so a run "
    "repeats them to the digit and keeps its speed on a loaded machine; on a GPU: the cores "
    "this process may use). The thread count changes a CPU run's rounding: a run at N > 1 "
    "threads is its own configuration on the leaderboard ([threads=N])",
)
def run(
    stream,
    strategy,
    sets,
    seed,
    device,
    out,
    setting,
    model,
    pretrained,
    checkpoint,
    data_root,
    download,
    plugins,
    regularizers,
    quiet,
    dry_run,
    threads,
):
    """Run one strategy on one stream and append the results to the CSV."""
    import torch

    from cladapt.device import resolve_device
    from cladapt.progress import NullProgress, RichProgress
    from cladapt.runner import RunSpec, execute
    from cladapt.workers import cpu_count

    on_cpu = resolve_device(device).type == "cpu"
    torch.set_num_threads(threads or (1 if on_cpu else cpu_count()))
    out = out.expanduser()

    spec = RunSpec(
        stream=stream,
        strategy=strategy,
        sets=parse_assignments(sets),
        seed=seed,
        device=device,
        out=out,
        setting=setting,
        model=model,
        pretrained=pretrained or False,
        checkpoint=checkpoint,
        data_root=data_root,
        plugins=tuple(plugins),
        regularizers=tuple(regularizers),
        download=download,
    )
    catalog = _catalog(spec.plugins)
    if dry_run:
        from cladapt.planning import plan
        from cladapt.runner import check_checkpoint_fits

        planned = plan(spec, catalog)
        check_checkpoint_fits(planned, catalog)  # a file that will not load fails here, not later
        _print_plan(planned)
        return
    progress = NullProgress() if quiet else RichProgress(console=err_console)
    if isinstance(progress, RichProgress):
        with progress:
            outcome = execute(spec, catalog, progress)
    else:
        outcome = execute(spec, catalog, progress)
    _print_outcome(outcome, out)


def _print_plan(planned) -> None:
    table = Table(title="the run, as planned (--dry-run: nothing runs)", title_justify="left")
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for what, value in planned.lines():
        table.add_row(plain(what), plain(value))
    console.print(table)


def _print_outcome(outcome, out: Path) -> None:
    run = outcome.run
    notes = run.stream.notes
    if notes:
        more = f" ({len(notes) - 1} more lines in the summary row's note)" if len(notes) > 1 else ""
        err_console.print(plain("note: ", style="yellow") + plain(notes[0] + more))
    tables = outcome.result.tables
    if "accuracy_matrix" in tables:
        R, names = tables["accuracy_matrix"], tables["names"]
        t = Table(
            title="accuracy (%) after training on row, evaluated on column", title_justify="left"
        )
        t.add_column("trained up to")
        for n in names:
            t.add_column(plain(n), justify="right")
        for i, row in enumerate(R):
            t.add_row(
                plain("initial" if i == 0 else names[i - 1]),
                *(f"{v:.1f}" if not np.isnan(v) else "" for v in row),
                end_section=i == len(R) - 1 and "per_task" in tables,
            )
        for label, row in tables.get("per_task", {}).items():  # MTIL: ZSCL's Table 1 rows
            t.add_row(plain(label), *(f"{v:.1f}" if not np.isnan(v) else "" for v in row))
        console.print(t)
    if "errors" in tables:
        t = Table(title="error (%) per domain", title_justify="left")
        for n in tables["errors"]:
            t.add_column(plain(n), justify="right")
        t.add_row(*(f"{v:.1f}" for v in tables["errors"].values()))
        console.print(t)
    if "target_accuracy" in tables:  # UDA: one row per source -> target pair, as tllib prints
        source = run.stream.source.name if run.stream.source is not None else "source"
        t = Table(title="accuracy (%) per pair", title_justify="left")
        for col in ("pair", "target", f"source ({source})"):
            t.add_column(plain(col), justify="right" if col != "pair" else "left")
        for target, acc in tables["target_accuracy"].items():
            src = tables.get("source_accuracy", {}).get(target, float("nan"))
            t.add_row(plain(f"{source} -> {target}"), f"{acc:.1f}", f"{src:.1f}")
        console.print(t)
    where = f"{run.protocol}, {run.setting}, seed {run.seed}"
    title = f"{run.strategy.name} on {run.stream.name} ({where})"
    t = Table(title=plain(title), title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in outcome.summary.items():
        t.add_row(plain(k), summary_value(k, v))
    console.print(t)
    console.print(plain(f"run {run.run_id}: rows appended to {out}"), highlight=False)


# counts: shown as whole numbers (a parameter count, a number of threads or recoveries)
COUNT_METRICS = ("params", "threads", "recoveries", "batches", "passes", "steps")


def summary_value(metric: str, value: float) -> str:
    """A summary metric as the run's table prints it: counts whole, large values in 3 digits."""
    if math.isfinite(value) and value == int(value) and metric.endswith(COUNT_METRICS):
        return f"{int(value):,}"
    return f"{value:.3g}" if abs(value) >= 1e6 else f"{value:.2f}"


@main.command(name="list")
@click.argument(
    "what", type=click.Choice(["strategies", "streams", "models"]), default="strategies"
)
@plugin_option
def list_(what: str, plugins: tuple[str, ...]) -> None:
    """List registered strategies, streams or models."""
    catalog = _catalog(plugins)
    registry = getattr(catalog, what)
    t = Table()
    t.add_column("name", style="bold")
    if what != "models":
        t.add_column("protocol")
    if what == "streams":
        t.add_column("offline")
    t.add_column("description")
    t.add_column("plugin", style="dim")
    for e in registry:
        cells = [plain(e.name)]
        if what != "models":
            cells.append(plain(", ".join(e.protocols)))
        if what == "streams":
            cells.append(plain("yes" if e.extra.get("embedded") else "needs --data-root"))
        description = listed_description(e) if what == "strategies" else e.description
        cells += [plain(description), plain(e.origin)]
        t.add_row(*cells)
    console.print(t)


def listed_description(entry) -> str:
    """A strategy's one-sentence description, and the packages it needs beyond cladapt's own
    (installed or not) for strategies that declare ``requires`` (Avalanche's)."""
    needs = getattr(entry.factory, "requires", ())
    if not needs:
        return entry.description
    state = (
        "not installed: an optional extra" if missing_requirements(entry.factory) else "installed"
    )
    return f"{entry.description} Needs {', '.join(needs)} ({state})."


@main.command()
@click.argument("name")
@click.option(
    "--stream",
    "-s",
    default=None,
    help="the values a run of the strategy on this stream would use, and where each comes from",
)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="as `cladapt run --set`")
@click.option("--with", "regularizers", multiple=True, metavar="REGULARIZER", help="as `run`")
@click.option("--data-root", type=click.Path(file_okay=False), default=None)
@plugin_option
def describe(name, stream, sets, regularizers, data_root, plugins) -> None:
    """Show a strategy's hyper-parameters (what --set accepts), with --stream the values a run
    would use and where each comes from; or a stream's definition."""
    catalog = _catalog(plugins)
    if name not in catalog.strategies and name not in catalog.streams:
        known = [e.name for e in catalog.strategies] + [e.name for e in catalog.streams]
        raise UnknownNameError("strategy or stream", name, known)
    if stream is None and name in catalog.streams and name not in catalog.strategies:
        _describe_stream(catalog, name, data_root)
        return
    entry = catalog.strategies.get(name)
    console.print(
        plain(entry.name, style="bold") + plain(f": {(entry.factory.__doc__ or '').strip()}\n"),
        highlight=False,
    )
    if stream is not None:
        _describe_planned(catalog, name, stream, sets, regularizers, data_root)
        return
    from cladapt.protocols import PROTOCOLS

    groups = [(f"strategy {entry.name}", entry.factory.Config)]
    groups += [(f"protocol {p}", PROTOCOLS[p].Config) for p in entry.protocols]
    groups += [  # regularisers the strategy composes itself (lwf, ewc)
        (f"regularizer {r}", catalog.strategies.regularizers.get(r).factory.Config)
        for r in entry.factory.regularizers
    ]
    for title, cls in groups:
        t = Table(title=plain(title), title_justify="left")
        for col in ("parameter", "type", "default", "range", "help"):
            t.add_column(col)
        for field_name, typ, default, valid, help_ in field_help(cls):
            t.add_row(
                plain(field_name), plain(typ), plain(repr(default)), plain(valid), plain(help_)
            )
        console.print(t)


def _describe_planned(catalog, strategy, stream, sets, regularizers, data_root) -> None:
    from cladapt.planning import RunSpec, definition_values, effective_values, plan

    spec = RunSpec(
        stream=stream,
        strategy=strategy,
        sets=parse_assignments(sets),
        out=None,
        data_root=data_root,
        regularizers=tuple(regularizers),
    )
    try:
        planned = plan(spec, catalog)
    except DataError as exc:  # the data is not here: the values do not depend on it
        label, rows = definition_values(spec, catalog)
        planned, missing = None, exception_text(exc)
    else:
        label, rows = planned.strategy_label, effective_values(planned)
    t = Table(
        title=plain(f"{label} on {stream}: the values a run would use"),
        title_justify="left",
    )
    for col in ("configuration", "parameter", "value", "from"):
        t.add_column(col, overflow="fold")
    for group, key, value, source in rows:
        t.add_row(plain(group), plain(key), plain(repr(value)), plain(source))
    console.print(t)
    if planned is None:
        console.print(
            plain(f"(from the stream's definition; its data is not here: {missing})"),
            highlight=False,
        )
        return
    console.print(
        plain(f"setting {planned.setting}, model {planned.model_label}, device {planned.device}"),
        highlight=False,
    )


def _describe_stream(catalog, name: str, data_root: str | None) -> None:
    """A stream's definition: protocol, settings, size, defaults and the claims it checks."""
    from cladapt.leaderboard.claims import claims_of

    entry = catalog.streams.get(name)
    offline = "embedded: runs offline" if entry.extra.get("embedded") else "reads --data-root"
    console.print(
        plain(entry.name, style="bold")
        + plain(f" ({entry.protocols[0]} protocol, {offline}): {entry.description}"),
        highlight=False,
    )
    from cladapt.planning import RunSpec, build_stream

    try:
        built = build_stream(RunSpec(name, "", data_root=data_root, out=None), entry, {}, catalog)
    except DataError as exc:
        console.print(plain(f"not built here: {exception_text(exc)}"), highlight=False)
        built = None
    if built is not None:
        shape = "x".join(str(n) for n in built.input_shape)
        console.print(
            plain(
                f"{built.num_classes} classes, images {shape}, settings: "
                f"{', '.join(built.settings) or 'default'}; defaults: "
                f"{', '.join(f'{k}={v!r}' for k, v in built.defaults.items()) or 'none'}"
            ),
            highlight=False,
        )
        t = Table(title="experiences", title_justify="left")
        for col in ("name", "kind", "train", "unlabelled", "test"):
            t.add_column(col)
        rows = [built.source] if built.source is not None else []
        for exp in rows + list(built.experiences):
            sizes = [len(d) if d is not None else "" for d in (exp.train, exp.unlabelled, exp.test)]
            label = f"{exp.name} (source)" if exp is built.source else exp.name
            t.add_row(plain(label), plain(exp.kind), *(plain(str(n)) for n in sizes))
        console.print(t)
    claims = [c for c in claims_of(catalog) if c.stream == name]
    if claims:
        t = Table(title="published claims this stream is a miniature of", title_justify="left")
        for col in ("paper", "claim", "checked as"):
            t.add_column(col, overflow="fold")
        for c in claims:
            t.add_row(
                plain(c.paper), plain(c.claim), plain(f"{c.a} {c.relation} {c.b} ({c.metric})")
            )
        console.print(t)


def _default_results() -> Path:
    """``results/results.csv``; if there is none, a one-line error that names the committed
    leaderboard of a clone as the other choice."""
    if not DEFAULT_RESULTS.is_file():
        hint = f"; the committed leaderboard: --results {COMMITTED}" if COMMITTED.is_file() else ""
        raise DataError(f"no {DEFAULT_RESULTS} here (cladapt run / bench write it){hint}")
    return DEFAULT_RESULTS


def _print_leaderboard(table, wide: bool = False) -> None:
    """Compact tables that fit the terminal, at most 100 columns, never cutting a number
    (columns are left out instead, and said); ``wide``: every metric, as wide as it takes."""
    from cladapt.leaderboard.console import leaderboard_tables

    width = min(console.width, 100)
    out = Console(width=max(console.width, 400)) if wide else Console(width=width)
    tables = leaderboard_tables(table, wide=wide, width=None if wide else width)
    for title, t in tables:
        out.print(plain(title, style="bold"), soft_wrap=True)
        out.print(t)
    if tables:
        console.print(plain("values: mean ±std over seeds; --wide for every metric", style="dim"))


def _print_claims(df, catalog=None, suite: str | None = None) -> None:
    """The streams' published claims, evaluated on ``df``'s rows (streams without rows left
    out); each claim the rows cannot decide is listed with the runs it needs and the command
    that makes them (``suite``: the bench suite that made the rows, said in the heading)."""
    from cladapt.leaderboard.claims import RULE, claims_of, evaluate

    catalog = catalog or _catalog(())
    present = set(df.stream)
    verdicts = evaluate([c for c in claims_of(catalog) if c.stream in present], df)
    if not verdicts:
        return
    shown = [v for v in verdicts if v.status != "not run"]
    t = Table(title="published claims on these rows", title_justify="left")
    for name in ("stream", "claim", "status", "numbers", "paper"):
        t.add_column(name, overflow="fold")
    colours = {"held": "green", "not held": "red"}
    for v in shown:
        t.add_row(
            plain(v.claim.stream),
            plain(_claim_statement(v.claim)),
            plain(v.status, style=colours.get(v.status, "yellow")),
            plain(v.numbers),
            plain(v.claim.paper.split(",")[0]),
        )
    out = console if console.width <= 140 else Console(width=140)
    if shown:
        out.print(t)
    missing = [v for v in verdicts if v.status == "not run"]
    if missing:
        which = f"the {suite} suite does not make" if suite else "these rows do not have"
        count = f"{len(missing)} claim{'s' if len(missing) > 1 else ''}"
        out.print(plain(f"{count} need runs {which}:", style="dim"))
        for v in missing:
            sets = " ".join(f"--set {k}={x}" for k, x in v.claim.sets.items())
            runs = ", ".join(v.missing) + (f" (with {sets})" if sets else "")
            out.print(
                plain(
                    f"  {v.claim.stream}: {_claim_statement(v.claim)}: needs {runs}: {v.command()}",
                    style="dim",
                ),
                soft_wrap=True,
            )
    out.print(plain(f"rule: {RULE}", style="dim"))


def _claim_statement(claim) -> str:
    return claim.statement + "".join(f" at {k}={x}" for k, x in claim.sets.items())


@main.group(invoke_without_command=True)
@results_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "md", "json"]),
    default="table",
    show_default=True,
)
@click.option("--wide", is_flag=True, help="tables with every metric (wider than 100 columns)")
@click.pass_context
def leaderboard(ctx: click.Context, results: tuple[Path, ...], fmt: str, wide: bool) -> None:
    """Aggregate result CSVs: mean ± std over seeds per (stream, setting, strategy, model)."""
    if ctx.invoked_subcommand:
        return
    from cladapt.leaderboard import aggregate as agg

    df = agg.load(results or (_default_results(),))
    table = agg.aggregate(df)
    if fmt == "table":
        _print_leaderboard(table, wide=wide)
        if note := agg.uncounted(df):
            console.print(plain(note, style="dim"))
        _print_claims(df)
    elif fmt == "csv":  # spreadsheet-bound: formula-like cells neutralised (docs/metrics.md)
        click.echo(agg.to_csv(table), nl=False)
    elif fmt == "md":
        click.echo(agg.to_markdown(table))
    else:
        click.echo(agg.to_json(table))


@leaderboard.command("build")
@site_option
@results_option
def leaderboard_build(site: Path, results: tuple[Path, ...]) -> None:
    """Generate the static leaderboard site (open SITE/index.html in a browser)."""
    from cladapt.leaderboard.aggregate import load
    from cladapt.leaderboard.site import build_site

    inputs = results or (_default_results(),)
    files = build_site(load(inputs), site, inputs=inputs)
    pages = [f for f in files if f.suffix == ".html"]
    console.print(
        plain(f"wrote {len(pages)} pages to {site}/ (open {site / 'index.html'})"),
        highlight=False,
    )


def _names(values: str | tuple[str, ...]) -> list[str]:
    """Names from repeated options, each of which may be a comma-separated list; a name given
    twice is one name (a grid never runs one configuration twice)."""
    values = (values,) if isinstance(values, str) else values
    return list(dict.fromkeys(v.strip() for value in values for v in value.split(",") if v.strip()))


SEEDS_HELP = "N: the N seeds 0..N-1; a,b,c: those seeds (one seed: '5,'); a..b: a to b inclusive"


def parse_seeds(spec: str) -> list[int]:
    """The seeds a ``--seeds`` value names, the same way in ``bench`` and ``sweep``."""
    text = spec.strip()
    try:
        if ".." in text:
            lo, hi = (int(v) for v in text.split(".."))
            seeds = list(range(lo, hi + 1))
        elif "," in text:
            seeds = [int(v) for v in text.split(",") if v.strip()]  # repeats are refused below
        else:
            seeds = list(range(int(text)))
    except ValueError:
        seeds = []
    if not seeds or any(not 0 <= s < 2**32 for s in seeds) or len(set(seeds)) != len(seeds):
        raise CladaptError(
            f"--seeds {spec!r}: give N (seeds 0..N-1, N >= 1), a list 'a,b,c' or a range 'a..b' "
            "of distinct seeds in 0 .. 2^32-1"
        )
    return seeds


def selection_options(required: bool):
    """``--stream``, ``--strategy`` and ``--seeds``, spelled and read the same in every command
    that runs a grid (``bench`` restricts its suite with them, ``sweep`` builds its grid)."""
    role = "run on" if required else "restrict to"

    def decorate(f):
        f = click.option("--seeds", "seeds", default=None, metavar="SEEDS", help=SEEDS_HELP)(f)
        f = click.option(
            "--strategy",
            "--strategies",
            "--only",
            "strategies",
            multiple=True,
            required=required,
            metavar="NAMES",
            help=f"strategies to {role} (repeat or comma-separate)",
        )(f)
        return click.option(
            "--stream",
            "--streams",
            "-s",
            "streams",
            multiple=True,
            required=required,
            metavar="NAMES",
            help=f"streams to {role} (repeat or comma-separate)",
        )(f)

    return decorate


@main.command()
@click.option(
    "--full",
    is_flag=True,
    help="every strategy on every embedded stream, each stream's bench_seeds (3 unless its "
    "definition says; what the committed leaderboard is made from); default: the quick suite, "
    "1 seed",
)
@click.option(
    "--suite",
    type=click.Choice(["embedded", "embedded-all"]),
    default="embedded",
    show_default=True,
    help="with --full: embedded = the bench's streams; embedded-all = every embedded stream",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_RESULTS,
    show_default=True,
)
@site_option
@click.option(
    "--append", is_flag=True, help="keep the rows already in --out (default: start it afresh)"
)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=None,
    help="parallel worker processes (default: one per usable CPU core; on CUDA as many per GPU "
    "as its free memory holds at the largest measured run peak, at most one per core)",
)
@selection_options(required=False)
@click.option(
    "--profile",
    is_flag=True,
    help="print the time per (stream, strategy): worker seconds and recorded wall_time_s",
)
@click.option(
    "--dry-run", is_flag=True, help="list the runs the suite would make, per stream, and stop"
)
@plugin_option
def bench(
    full,
    suite,
    out,
    site,
    append,
    device,
    workers,
    streams,
    strategies,
    seeds,
    profile,
    dry_run,
    plugins,
):
    """Run the benchmark suite on the embedded streams, then build the site. Default: the quick
    suite (the seed systems and their baselines, 1 seed); --full: every strategy, at each
    stream's number of seeds (3 unless its definition sets bench_seeds)."""
    from cladapt.bench import (
        bench_lock,
        suite_jobs,
    )
    from cladapt.leaderboard.site import check_site
    from cladapt.results import check_results_path, is_sink

    out, site = out.expanduser(), site.expanduser()
    if is_sink(out):  # the bench summarises its rows: a sink would run everything for nothing
        raise ConfigError(f"bench needs a results file to summarise; --out {out} keeps no rows")
    catalog = _catalog(plugins)
    only, streams = _names(strategies), _names(streams)
    # --full without --seeds: each stream's own number (its definition's bench_seeds, else 3)
    seed_list = parse_seeds(seeds) if seeds else (None if full else [0])
    for name in only:
        catalog.strategies.get(name)  # unknown names fail here, with a suggestion
    for name in streams:
        catalog.streams.get(name)
    unavailable = {
        s.name: ", ".join(missing)
        for s in catalog.strategies
        if (missing := missing_requirements(s.factory))
    }
    suite_name = "quick" if not full else ("full" if suite == "embedded" else "full-all")
    jobs = suite_jobs(catalog, suite_name, seed_list, only, streams, skip=set(unavailable))
    for name, missing in unavailable.items():
        if full or name in only:
            err_console.print(plain(f"skipping {name}: needs {missing} (optional extra)"))
    if not jobs:
        raise ConfigError("no runs in this selection (--stream / --strategy / --full)")
    if dry_run:
        _print_jobs(jobs, catalog)
        return
    # fail now, not after the runs: never delete or append to a file that is not a results CSV,
    # never build into a folder a site must not go
    check_results_path(out)
    check_site(site, [out])
    if site.resolve() == out.resolve():
        raise ConfigError(f"--site {site} is the results file (--out); name a folder for the site")
    with bench_lock(out):
        _bench(jobs, catalog, out, site, append, device, workers, profile, plugins, suite_name)


def _bench(jobs, catalog, out, site, append, device, workers, profile, plugins, suite_name):
    from cladapt.bench import default_workers, measured_wall_times, order_jobs, run_jobs
    from cladapt.leaderboard.aggregate import aggregate, load
    from cladapt.leaderboard.site import build_site
    from cladapt.results import move_aside, read_results

    err_console.print(plain(f"{len(jobs)} runs, {_seeds_said(jobs)}"), highlight=False)
    protocol_of = {j: catalog.streams.get(j.stream).protocols[0] for j in jobs}
    jobs = order_jobs(jobs, measured_wall_times(out) if out.exists() else {}, protocol_of)
    workers = workers or default_workers(device, out)  # before --out is replaced: its peaks
    kept: set[str] = set()  # with --append: the runs already in the file are summarised too
    if append and out.exists() and out.stat().st_size:
        kept = set(read_results(out).run_id)
    backup = None if append else move_aside(out)  # under the writers' lock; nothing deleted
    if backup is not None:
        err_console.print(plain(f"the earlier {out} was moved to {backup}"))
    tic = time.perf_counter()
    results = run_jobs(
        jobs, out=out, device=device, workers=workers, plugins=tuple(plugins), console=err_console
    )
    elapsed = time.perf_counter() - tic
    failures = [f"{r.job.label()}: {r.error}" for r in results if r.error]
    made = {r.run_id for r in results if r.run_id}
    # the summary and the site hold the runs this bench made (and, with --append, the file's
    # earlier ones), never rows another process appended to the same file meanwhile
    df = load([out]) if out.exists() else None
    if df is None or not len(df[df.run_id.isin(made | kept)]):
        _exit_if_failed(failures or ["no run of the bench wrote a row"])
        return
    df = df[df.run_id.isin(made | kept)].reset_index(drop=True)
    _print_leaderboard(aggregate(df))
    _print_claims(df, catalog, suite=suite_name)
    if profile:
        _print_profile(results, df, elapsed, workers)
    pages = [f for f in build_site(df, site, inputs=[out], catalog=catalog) if f.suffix == ".html"]
    console.print(
        plain(
            f"{len(jobs)} runs on {min(workers, len(jobs))} workers, {len(failures)} failed; "
            f"results in {out}, site in {site}/ ({len(pages)} pages)"
        ),
        highlight=False,
    )
    _exit_if_failed(failures)


def _print_jobs(jobs, catalog) -> None:
    """``bench --dry-run``: the runs the suite would make, per stream, and nothing else."""
    table = Table(title=f"{len(jobs)} runs (--dry-run: nothing runs)", title_justify="left")
    for col in ("stream", "strategies", "seeds"):
        table.add_column(col, overflow="fold")
    per_stream: dict[str, dict[str, set[int]]] = {}
    for j in jobs:
        label = j.strategy + ("+pretrained" if j.pretrained else "")
        per_stream.setdefault(j.stream, {}).setdefault(label, set()).add(j.seed)
    for stream, strategies in per_stream.items():
        seeds = sorted({s for v in strategies.values() for s in v})
        table.add_row(
            plain(stream), plain(", ".join(strategies)), plain(", ".join(map(str, seeds)))
        )
    console.print(table)


def _seeds_said(jobs) -> str:
    """``seeds 0, 1, 2``, or per stream where the streams run different seeds."""
    per_stream: dict[str, set[int]] = {}
    for j in jobs:
        per_stream.setdefault(j.stream, set()).add(j.seed)
    lists = {s: ", ".join(map(str, sorted(v))) for s, v in per_stream.items()}
    if len(set(lists.values())) == 1:
        return f"seeds {next(iter(lists.values()))}"
    return "seeds " + "; ".join(f"{s}: {v}" for s, v in lists.items())


def _print_profile(results, df, elapsed: float, workers: int) -> None:
    """Where the bench's time went: per (stream, strategy), the worker seconds of all its runs
    (one-off preparation such as source-model training included, in whichever run met it
    first) and the mean ``wall_time_s`` a run recorded (preparation excluded)."""
    import pandas as pd

    spent = pd.DataFrame(
        [(r.job.stream, r.job.strategy, r.seconds) for r in results],
        columns=["stream", "strategy", "seconds"],
    )
    walls = df[(df.row_type == "summary") & (df.metric == "wall_time_s")]
    walls = walls.groupby(["stream", "strategy"]).value.mean().rename("wall_time_s")
    table = (
        spent.groupby(["stream", "strategy"])
        .seconds.agg(["count", "sum"])
        .join(walls)
        .sort_values("sum", ascending=False)
    )
    t = Table(title="bench profile (seconds)", title_justify="left")
    for name in ("stream", "strategy", "runs", "worker s", "wall_time_s / run"):
        t.add_column(name, justify="left" if name in ("stream", "strategy") else "right")
    for (stream, strategy), row in table.iterrows():
        t.add_row(
            plain(stream),
            plain(strategy),
            str(int(row["count"])),
            f"{row['sum']:.0f}",
            f"{row['wall_time_s']:.1f}" if pd.notna(row["wall_time_s"]) else "",
        )
    console.print(t)
    console.print(
        plain(
            f"total: {spent.seconds.sum():.0f} worker-seconds on {workers} workers, "
            f"{elapsed:.0f} s elapsed"
        ),
        highlight=False,
    )


class _SweepDisplay:
    """A sweep's progress bar (done / failed / running) and the failures to report at the end."""

    def __init__(self, label) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.label = label
        self.counts = {"done": 0, "failed": 0, "running": 0}
        self.failures: list[str] = []
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
        )

    def start(self, total: int) -> None:
        self.task = self.progress.add_task("sweep", total=total)

    def on_event(self, event: str, job, message: str) -> None:
        counts = self.counts
        if event == "retry":
            err_console.print(
                plain(f"{self.label(job)}: its worker was lost; retried as {message}"),
                highlight=False,
            )
            return
        if event == "start":
            counts["running"] += 1
        else:
            counts["running"] -= 1
            counts[event] += 1
            self.progress.advance(self.task)
            if event == "failed":
                self.failures.append(f"{self.label(job)}: {message}")
        self.progress.update(
            self.task,
            description=f"done {counts['done']}  failed {counts['failed']}  "
            f"running {counts['running']}",
        )


def _exit_if_failed(failures: list[str]) -> None:
    """List the runs of a bench or sweep that failed (each already has an error row); exit 1."""
    for line in failures:
        err_console.print(plain("failed: ", style="red") + plain(line), highlight=False)
    if failures:
        sys.exit(1)


def missing_requirements(strategy_cls) -> list[str]:
    """Modules a strategy needs (``Strategy.requires``) that are not installed."""
    import importlib.util

    return [m for m in getattr(strategy_cls, "requires", ()) if importlib.util.find_spec(m) is None]


@main.command()
@selection_options(required=True)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="parameters for every run")
@click.option("--model", default=None, help="model for every run (default: each stream's)")
@click.option("--setting", default=None, help="protocol setting for every run")
@click.option("--device", default="auto", show_default=True)
@click.option("--data-root", default=None, type=click.Path(file_okay=False))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_RESULTS,
    show_default=True,
)
@click.option(
    "--address", default=None, help="an existing Ray cluster (default: start one locally)"
)
@click.option(
    "--workers", type=click.IntRange(1), default=None, help="local Ray workers (default: all cores)"
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "ray", "sequential"]),
    default="auto",
    show_default=True,
    help="auto: Ray if installed (pip install 'cladapt[ray]'), else in-process",
)
@click.option(
    "--cpus-per-run",
    type=click.FloatRange(0, min_open=True),
    default=1.0,
    show_default=True,
    help="CPUs each Ray task reserves (on a cluster also its torch threads)",
)
@click.option(
    "--gpus-per-run",
    type=click.FloatRange(0),
    default=None,
    help="GPUs each Ray task reserves, fractions allowed (default: 0 without GPUs; 1 on a "
    "cluster; on this machine the share that fills a GPU with runs); a run given a GPU uses "
    "--device cuda",
)
@click.option(
    "--retries",
    type=click.IntRange(0),
    default=3,
    show_default=True,
    help="re-executions of a run whose worker or node died (a run's own error is not retried)",
)
@plugin_option
def sweep(
    streams,
    strategies,
    seeds,
    sets,
    model,
    setting,
    device,
    data_root,
    out,
    address,
    workers,
    backend,
    cpus_per_run,
    gpus_per_run,
    retries,
    plugins,
):
    """Run a grid of runs (streams x strategies x seeds) on Ray; finished runs are skipped."""

    import torch

    from cladapt.results import check_results_path
    from cladapt.runner import RunSpec
    from cladapt.sweep import Resources, label, plan, ray_available, run_threads
    from cladapt.sweep import sweep as run_sweep

    out = out.expanduser()
    catalog = _catalog(plugins)
    stream_names, strategy_names = _names(streams), _names(strategies)
    seed_list = parse_seeds(seeds or "1")
    for name in stream_names:
        catalog.streams.get(name)  # unknown names fail before anything runs
    for name in strategy_names:
        catalog.strategies.get(name)
    check_results_path(out)
    if backend == "ray" and not ray_available():
        raise CladaptError("--backend ray needs Ray: pip install 'cladapt[ray]'")
    if address and not ray_available():
        raise CladaptError("--address needs Ray: pip install 'cladapt[ray]'")
    base = RunSpec(
        stream="",
        strategy="",
        sets=parse_assignments(sets),
        device=device,
        out=out.resolve(),
        setting=setting,
        model=model,
        data_root=data_root,
        plugins=tuple(plugins),
    )
    threads = run_threads(device, address, cpus_per_run)
    if threads is not None:  # the runs' identity (planned here) holds their thread count
        torch.set_num_threads(threads)
    jobs, skipped = plan(stream_names, strategy_names, seed_list, base, catalog)
    err_console.print(plain(f"seeds {', '.join(map(str, seed_list))}"), highlight=False)
    if backend == "sequential":
        err_console.print("running the sweep sequentially in this process", highlight=False)
    elif backend == "auto" and not ray_available():
        err_console.print(
            "Ray is not installed: running the sweep sequentially in this process "
            "(pip install 'cladapt\\[ray]' for parallel runs)",
            highlight=False,
        )
    display = _SweepDisplay(label)
    with display.progress:
        display.start(len(jobs))
        resources = Resources(cpus=cpus_per_run, gpus=gpus_per_run, retries=retries)
        used = run_sweep(jobs, display.on_event, backend, address, workers, resources, threads)
    counts = display.counts
    console.print(
        plain(
            f"{len(jobs)} runs ({used}), {counts['done']} done, {counts['failed']} failed, "
            f"{len(skipped)} skipped (already in {out})"
        ),
        highlight=False,
    )
    _exit_if_failed(display.failures)


@main.command(name="new-plugin")
@click.argument("name")
@click.option(
    "--dir",
    "parent",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="where to create the package directory",
)
def new_plugin(name: str, parent: Path) -> None:
    """Scaffold a third-party plugin package (one strategy, one stream, a test)."""
    from cladapt.scaffold import names
    from cladapt.scaffold import new_plugin as scaffold

    root = scaffold(name, parent)
    n = names(name)
    console.print(
        f"created {root}\n  pip install -e '{root}[test]'\n"
        f"  cladapt run --stream {n['stream']} --strategy {n['strategy']}\n"
        "  see docs/writing-a-plugin.md",
        highlight=False,
        markup=False,
    )


if __name__ == "__main__":  # pragma: no cover
    entry()
