"""Static leaderboard site: index of streams (and the UDA pairs side by side), one page per
stream (sortable table, the papers' table layouts with published numbers beside them, per-domain
/ per-task heat maps, a headline-vs-compute plot with its Pareto front, run provenance) and the
CSV it was built from.

Templates are jinja2 with autoescaping on: every string that comes from a CSV is HTML-escaped;
plots are matplotlib SVG inlined (matplotlib escapes its text). Sorting is a few lines of our
own JavaScript; no external assets, no server needed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from cladapt import __version__
from cladapt.errors import DataError
from cladapt.leaderboard.aggregate import (
    HEADLINES,
    aggregate,
    finished_runs,
    metric_columns,
    params_of,
    ranking,
    run_status,
)
from cladapt.leaderboard.claims import RULE as CLAIM_RULE
from cladapt.leaderboard.claims import claims_of, evaluate
from cladapt.leaderboard.plots import Point, tradeoff_svg
from cladapt.leaderboard.provenance import describe
from cladapt.leaderboard.views import paper_tables, uda_table
from cladapt.terminal import clean

LABELS = {
    "transfer": "Transfer %",
    "avg": "Avg % (MTIL)",
    "last": "Last %",
    "avg_accuracy": "final avg acc %",
    "forgetting": "forgetting",
    "bwt": "BWT",
    "fwt": "FWT",
    "avg_error_after_learning": "error after learning %",
    "mean_error": "mean error %",
    "target_error": "target error %",
    "source_accuracy": "source acc %",
    "images_per_s": "images/s",
    "peak_memory_mb": "peak MB",
    "saved_activation_mb": "saved for backward MB",
    "trainable_params": "trainable params",
    "wall_time_s": "wall s",
    "train_flops": "train FLOPs",
    "inference_flops": "inference FLOPs",
}


PEAK_KINDS = {"process_peak_rss": "peak RSS MB (process)", "cuda_max_allocated": "peak CUDA MB"}


def peak_label(rows: pd.DataFrame) -> str:
    """What the ``peak_memory_mb`` column of these rows measured (each summary row's note says):
    the process's peak RSS on a CPU (model, data, Python and all), the CUDA allocator's peak on a
    GPU; neither is the activation memory ``saved for backward MB`` measures."""
    peaks = rows[(rows.metric == "peak_memory_mb") & (rows.row_type == "summary")]
    kinds = set(peaks.note.fillna("")) if "note" in peaks else set()
    if len(kinds) == 1 and (kind := kinds.pop()) in PEAK_KINDS:
        return PEAK_KINDS[kind]
    return "peak MB (RSS on CPU rows, CUDA on GPU rows)" if kinds else LABELS["peak_memory_mb"]


INTEGER_METRICS = ("trainable_params", "train_flops", "inference_flops", "peak_memory_mb")


@dataclass
class Heatmap:
    title: str
    cols: list[str]
    rows: list[tuple[str, list[tuple[str, str]]]] = field(
        default_factory=list
    )  # label, [(text, css)]


MANIFEST = ".cladapt-site.json"  # what the last build wrote (stale pages are removed)
STAGING = ".cladapt-build-"  # a build being rendered (removed by the next build if left)
PENDING = ".cladapt-pending"  # a committed build not yet moved into place
PLAN = ".cladapt-plan.json"  # in PENDING: what to move in and which earlier files are stale
LOCK = ".cladapt-build.lock"


def slug(name: str) -> str:
    """A unique, stable, bounded file stem: readable part + hash of the exact name (names such
    as ``a/b``, ``a b`` and ``a_b`` would otherwise map to one file)."""
    readable = re.sub(r"[^a-zA-Z0-9_.-]+", "_", name).strip("_.")[:60] or "stream"
    return f"{readable}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _colour(value: float, lo: float, hi: float, higher_is_better: bool) -> str:
    if not math.isfinite(value) or hi <= lo:
        return "background:#eee"
    t = (value - lo) / (hi - lo)
    t = t if higher_is_better else 1 - t
    return f"background:hsl({int(120 * t)},65%,80%)"


def _heatmap(title: str, table: pd.DataFrame, higher_is_better: bool) -> Heatmap:
    values = table.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    hm = Heatmap(title, [str(c) for c in table.columns])
    for label, row in table.iterrows():
        cells = [
            ("" if not math.isfinite(v) else f"{v:.1f}", _colour(v, lo, hi, higher_is_better))
            for v in row
        ]
        hm.rows.append((str(label), cells))
    return hm


def _ordered(values: pd.Series) -> list[str]:
    return list(dict.fromkeys(values))  # order of first appearance = stream order


def _models_apart(evals: pd.DataFrame) -> pd.DataFrame:
    """A stream's per-experience rows with runs of a second model (digits-c's ViT variant)
    labelled by it, ``tent (tiny-vit)``, so that the papers' tables and the breakdowns never
    average two models' runs; the stream's most common model keeps the plain name."""
    if evals.empty or evals.model.nunique() < 2:
        return evals
    main = evals.drop_duplicates("run_id").model.value_counts().index[0]
    other = evals.model != main
    evals = evals.copy()
    evals.loc[other, "strategy"] = evals.strategy[other] + " (" + evals.model[other] + ")"
    return evals


def breakdowns(evals: pd.DataFrame, protocol: str) -> list[Heatmap]:
    """Accuracy matrices of the continual strategies (row: trained up to; column: evaluated)."""
    maps: list[Heatmap] = []
    if protocol == "continual":
        e = evals[evals.metric == "accuracy"]
        for (strategy, setting), g in e.groupby(["strategy", "setting"], sort=True):
            t = g.pivot_table(
                index="trained_upto", columns="eval_experience", values="value", aggfunc="mean"
            )
            t = t.reindex(index=_ordered(g.trained_upto), columns=_ordered(g.eval_experience))
            maps.append(
                _heatmap(f"{strategy} ({setting}): accuracy % after training on row", t, True)
            )
    # test-time and UDA streams: their tables in the papers' layouts (views.py) carry the colours
    return maps


def plotted_metric(table: pd.DataFrame, stream: str, protocol: str) -> tuple[str, str]:
    """(metric, direction) the trade-off plot shows: the metric the stream is ranked by
    (:func:`cladapt.leaderboard.aggregate.ranking`), so the plot, its heading and the tables
    always speak of the same metric."""
    return ranking(stream, protocol, table)


@dataclass
class Plot:
    setting: str
    svg: str
    caption: str


def tradeoff_plots(table: pd.DataFrame, stream: str, protocol: str) -> list[Plot]:
    """One plot per setting (strategies are compared, and a Pareto front drawn, within a
    setting only): :func:`tradeoff_plot` of that setting's rows on the stream's ranking
    metric."""
    metric, direction = plotted_metric(table, stream, protocol)
    plots = []
    for setting, part in table.groupby("setting", sort=True):
        svg = tradeoff_plot(part, metric, direction)
        if svg:
            plots.append(Plot(str(setting), svg, plot_caption(part, stream, protocol)))
    return plots


def tradeoff_plot(table: pd.DataFrame, metric: str, direction: str) -> str:
    """``metric`` vs compute (training FLOPs where counted, log scale when they span decades;
    wall time otherwise), one point per strategy with its std over seeds, the Pareto front
    drawn; ``table``: one setting's rows."""
    x_metric = compute_axis(table)
    if f"{metric}_mean" not in table or f"{x_metric}_mean" not in table:
        return ""
    points = [
        Point(
            label=str(r.strategy),
            x=float(getattr(r, f"{x_metric}_mean")),
            y=float(getattr(r, f"{metric}_mean")),
            y_err=float(getattr(r, f"{metric}_std", float("nan"))),
            reference=bool(getattr(r, "oracle", False)),
        )
        for r in table.itertuples()
    ]
    x_label = "training FLOPs" if x_metric == "train_flops" else "wall time per run (s)"
    return tradeoff_svg(points, x_label, LABELS.get(metric, metric), direction == "max")


def plot_caption(table: pd.DataFrame, stream: str, protocol: str) -> str:
    """The plot's key, only the parts that apply: std bars where some point has a spread over
    seeds, hollow markers where an oracle reference is drawn."""
    metric, _ = plotted_metric(table, stream, protocol)
    std = table.get(f"{metric}_std")
    parts = ["Mean over seeds" + (", bars: std." if std is not None and (std > 0).any() else ".")]
    parts.append("Dashed: the Pareto front (no other strategy is both cheaper and better).")
    if "oracle" in table and table.oracle.astype(bool).any():
        parts.append("Hollow markers: oracle references.")
    return " ".join(parts)


def compute_axis(table: pd.DataFrame) -> str:
    """FLOPs where the protocol counts them, wall time otherwise."""
    col = "train_flops_mean"
    return "train_flops" if col in table and table[col].notna().all() else "wall_time_s"


def build_site(
    df: pd.DataFrame,
    site: Path,
    inputs: Sequence[Path] = (),
    csv_name: str = "results.csv",
    catalog=None,
) -> list[Path]:
    """Write the site to ``site`` and return the files written.

    Everything is rendered inside ``site`` first and moved into place only when all of it
    succeeded (see :func:`_install`), so a failure never leaves a half-written site. The rows
    are published as ``csv_name`` (readable back by ``cladapt leaderboard --results``);
    ``inputs`` are never written over nor removed: when the published CSV is one of them it is
    left as it is, and it is an error if it would have to change. Files the previous build wrote
    and this one does not (pages of streams that disappeared) are removed; a file no build wrote
    that this build would replace is an error; other files in ``site`` are left alone."""
    site = Path(site)
    check_site(site, inputs)
    protected = {p.resolve() for p in inputs}
    if catalog is None:
        from cladapt.manager import load_catalog

        catalog = load_catalog()
    pages = _Pages.of(df, catalog, csv_name)
    files: dict[str, str] = {}  # relative path -> content
    index_rows = []
    for stream, rows in df.groupby("stream", sort=True):
        # every stream gets a page, also one whose runs all failed or were killed
        page, html, rows_of_stream = pages.stream_page(stream, rows)
        files[page] = html
        index_rows += rows_of_stream
    files["index.html"] = pages.index(index_rows)
    csv = _published_csv(df, site / csv_name, protected)
    if csv is not None:
        files[csv_name] = csv
    return _install(site, files, protected)


def _published_csv(df: pd.DataFrame, target: Path, protected: set[Path]) -> str | None:
    """The rows as the site publishes them; ``None`` when the target is one of the inputs
    (left as it is: it must already hold exactly these rows)."""
    from cladapt.results import read_results, rows_to_csv

    if target.resolve() in protected:
        if not _same_rows(read_results(target), df):
            raise DataError(
                f"{target} is one of the --results inputs and would be overwritten by the "
                "merged rows; build the site into another --site folder"
            )
        return None
    return rows_to_csv(df[list(df.columns)].to_dict("records"), header=True)


_PROVENANCE = [
    "run_id",
    "started_at",
    "cladapt_version",
    "setting",
    "strategy",
    "model",
    "seed",
    "device",
    "params_json",
]


@dataclass
class _Pages:
    """What every page of one build shares: the rows, their aggregate, the finished runs and
    each run's status, the strategies' reference marks, the claims' verdicts, the header."""

    env: Environment
    df: pd.DataFrame
    table: pd.DataFrame
    runs: pd.DataFrame
    status: dict[str, str]
    references: dict[str, str]
    verdicts: list
    made: dict
    csv_name: str

    @classmethod
    def of(cls, df: pd.DataFrame, catalog, csv_name: str) -> _Pages:
        env = Environment(
            loader=PackageLoader("cladapt.leaderboard", "templates"),
            autoescape=select_autoescape(["html"]),
            finalize=_printable,
        )
        env.filters["num"] = _num
        return cls(
            env=env,
            df=df,
            table=aggregate(df),
            runs=finished_runs(df),
            status=run_status(df),
            references={e.name: getattr(e.factory, "reference", "") for e in catalog.strategies},
            verdicts=evaluate([c for c in claims_of(catalog) if c.stream in set(df.stream)], df),
            made=describe(df, catalog),  # suite, devices, precision, dates: in every header
            csv_name=csv_name,
        )

    def _finished_evals(self) -> pd.DataFrame:
        df = self.df
        return df[(df.row_type == "eval") & df.run_id.isin(set(self.runs.run_id))]

    def _ranked(self, stream: str, protocol: str) -> tuple[pd.DataFrame, str, str]:
        """The stream's aggregate rows ranked within each setting by its ranking metric
        (:func:`cladapt.leaderboard.aggregate.ranking`), oracles last."""
        table = self.table
        st = table[table.stream == stream] if "stream" in table else table
        metric, direction = ranking(stream, protocol, st)
        st = st.assign(reference=[self.references.get(n, "") for n in st.strategy])
        if f"{metric}_mean" in st and len(st):
            key = st[f"{metric}_mean"] * (1 if direction == "min" else -1)
            st = st.assign(_key=key).sort_values(["setting", "oracle", "_key"]).drop(columns="_key")
        return st, metric, direction

    def _provenance(self, rows: pd.DataFrame) -> pd.DataFrame:
        runs = rows.drop_duplicates("run_id")[_PROVENANCE]
        runs = runs.assign(status=lambda d: [self.status[r] for r in d.run_id])
        runs["params_diff"] = params_differences(runs)
        runs["only"] = runs.groupby("strategy").run_id.transform("count").eq(1)
        return runs

    def stream_page(self, stream: str, rows: pd.DataFrame) -> tuple[str, str, list[dict]]:
        """(path, html, the stream's rows of the index: one per setting, each with its best
        method by the stream's ranking metric)."""
        protocol = rows.protocol.iloc[0]
        st, metric, direction = self._ranked(stream, protocol)
        evals = _models_apart(self._finished_evals().query("stream == @stream"))
        # reference points (joint's upper bound, zero-shot, oracles) are never "best"
        methods = st[(st.reference == "") & ~st.oracle] if "oracle" in st else st
        page = f"streams/{slug(stream)}.html"
        excluded = sorted(set(st.strategy) - set(methods.strategy))
        index_rows = []
        for setting, part in st.groupby("setting", sort=True):
            ranked = methods[methods.setting == setting]
            best = ranked.iloc[0] if f"{metric}_mean" in ranked and len(ranked) else None
            index_rows.append(
                {
                    "stream": stream,
                    "setting": setting,
                    "page": page,
                    "protocol": protocol,
                    "strategies": part.strategy.nunique(),
                    "runs": int(part.runs.sum()),
                    "best": None if best is None else best.strategy,
                    "metric": LABELS.get(metric, metric),
                    "direction": direction,
                    "value": None if best is None else best[f"{metric}_mean"],
                    "excluded": [n for n in excluded if n in set(part.strategy)],
                }
            )
        if not index_rows:  # every run failed or was killed: the stream is still listed
            index_rows.append(
                {
                    "stream": stream,
                    "setting": "",
                    "page": page,
                    "protocol": protocol,
                    "strategies": rows.strategy.nunique(),
                    "runs": 0,
                    "best": None,
                    "metric": LABELS.get(metric, metric),
                    "direction": direction,
                    "value": None,
                    "excluded": [],
                }
            )
        html = self.env.get_template("stream.html").render(
            stream=stream,
            protocol=protocol,
            headline=metric,
            direction=direction,
            cols=metric_columns(protocol, st, stream),
            labels=LABELS | {"peak_memory_mb": peak_label(rows)},
            rows=st.to_dict("records"),
            heatmaps=breakdowns(evals, protocol),
            plots=tradeoff_plots(st, stream, protocol) if metric and len(st) else [],
            excluded=excluded,
            tables=paper_tables(stream, protocol, evals, st),
            runs=self._provenance(rows).to_dict("records"),
            csv=f"../{self.csv_name}",
            version=__version__,
            integer_metrics=INTEGER_METRICS,
            made=self.made,
            claims=[
                v for v in self.verdicts if v.claim.stream == stream or stream in v.claim.shown_with
            ],
            rule=CLAIM_RULE,
        )
        return page, html, index_rows

    def index(self, index_rows: list[dict]) -> str:
        finished = self._finished_evals()
        uda = uda_table(finished[finished.protocol == "uda"], self.table)
        return self.env.get_template("index.html").render(
            streams=index_rows,
            csv=self.csv_name,
            version=__version__,
            protocols=sorted(HEADLINES),
            tables=[uda] if uda else [],
            made=self.made,
            claims=self.verdicts,
            rule=CLAIM_RULE,
        )


def params_differences(runs: pd.DataFrame) -> list[str]:
    """Per run, the ``params_json`` values that differ from the most common value of that key
    among the runs of the same strategy (``key=value, ...``; '' when none): a page shows these,
    the full JSON on demand, instead of every parameter of every run."""
    parsed = [params_of(text) for text in runs.params_json]
    out = [""] * len(parsed)
    for strategy in set(runs.strategy):
        idx = [i for i, s in enumerate(runs.strategy) if s == strategy]
        keys = {k for i in idx for k in parsed[i]}
        common = {}
        for k in keys:
            values = [json.dumps(parsed[i].get(k), sort_keys=True) for i in idx]
            # ties go to the value seen first: a rebuilt page must not change with hash seeds
            common[k] = max(dict.fromkeys(values), key=values.count)
        for i in idx:
            diff = [
                f"{k}={json.dumps(parsed[i].get(k), sort_keys=True)}"
                for k in sorted(keys)
                if json.dumps(parsed[i].get(k), sort_keys=True) != common[k]
            ]
            out[i] = ", ".join(diff)
    return out


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    def key(d: pd.DataFrame) -> list[tuple]:
        return sorted(map(tuple, d.astype(str).to_numpy().tolist()))

    return len(a) == len(b) and key(a) == key(b)


def check_site(site: Path, inputs: Iterable[Path] = ()) -> None:
    """Refuse, before any work and before anything in it changes, a ``--site`` a build must not
    write into: the root or home folder, a file, a dangling symlink, a path through a file, or a
    folder that holds files no cladapt build wrote (a site folder is new, empty, or a site; the
    build's own input files, ``inputs``, may be in it: they are never written over)."""
    site = Path(site).expanduser()
    given = {Path(p).expanduser().resolve() for p in inputs}
    try:
        where = site.resolve()
        if where == Path(where.anchor) or where == Path.home().resolve():
            raise DataError(
                f"--site {site} is the {'root' if where == Path(where.anchor) else 'home'} "
                "folder; name a folder for the site, e.g. --site results/site"
            )
        if site.is_symlink() and not site.exists():
            raise DataError(f"--site {site} is a symlink to nothing; name a folder for the site")
        if site.exists() and not site.is_dir():
            raise DataError(f"--site {site} is a file, not a folder")
        if not site.exists():
            parent = site.parent
            while not parent.exists() and parent != parent.parent:
                parent = parent.parent
            if not parent.is_dir():
                raise DataError(f"--site {site}: {parent} is a file, not a folder")
            return
        own = (MANIFEST, LOCK, PENDING)
        others = sorted(
            e.name
            for e in site.iterdir()
            if e.name not in own and not e.name.startswith(STAGING) and e.resolve() not in given
        )
    except OSError as exc:
        raise DataError(f"--site {site}: {exc.strerror or exc}") from None
    if others and not (site / MANIFEST).is_file():
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise DataError(
            f"--site {site} holds files no cladapt build wrote ({shown}); it was left untouched: "
            "build the site into a new or empty folder"
        )


def _install(site: Path, files: dict[str, str], inputs: set[Path]) -> list[Path]:
    """Install ``files`` into ``site`` (see :func:`build_site` for the promises).

    The build is rendered into ``site/.cladapt-build-XXXX`` (inside the site, so no rename
    crosses a file system even when ``site`` is a mount point), then committed by one directory
    rename to ``site/.cladapt-pending``; the files are moved from there into place and the
    stale ones removed. A build killed before the commit leaves nothing (its folder is removed by
    the next build); one killed after it is completed by the next build before anything else.
    Before the commit every destination is checked (inside the site, no symlink out of it,
    writable), so a build that fails on a fault it can see changes nothing; a file the last build
    wrote that was changed since (runs appended to the published CSV, an edited page) is moved
    aside to ``NAME.<time>.bak``, never replaced or removed."""
    from filelock import FileLock

    created = not site.exists()
    site.mkdir(parents=True, exist_ok=True)
    committed = False
    try:
        with FileLock(site / LOCK):  # two builds into one folder take turns
            _finish_pending(site, inputs)
            for leftover in site.glob(f"{STAGING}*"):
                shutil.rmtree(leftover, ignore_errors=True)
            _refuse_foreign(site, files, inputs)
            staging = Path(tempfile.mkdtemp(prefix=STAGING, dir=site))
            try:
                for rel, content in files.items():
                    (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                    (staging / rel).write_text(content, encoding="utf-8")
                previous = _manifest(site)
                _check_destinations(site, list(files) + list(set(previous) - set(files)))
                _keep_changed(site, previous, inputs)
                plan = {"files": sorted(files), "previous": sorted(previous)}
                (staging / PLAN).write_text(json.dumps(plan), encoding="utf-8")
                digests = {rel: _digest(content.encode("utf-8")) for rel, content in files.items()}
                (staging / MANIFEST).write_text(json.dumps(digests, indent=1), encoding="utf-8")
                os.rename(staging, site / PENDING)  # the commit point
                committed = True
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            _finish_pending(site, inputs)
    except BaseException:
        if created and not committed:  # a folder this build made holds nothing of a site
            shutil.rmtree(site, ignore_errors=True)
        raise
    return [site / rel for rel in files]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _inside(site: Path, rel: str) -> Path:
    """``site / rel``, refused unless it stays inside the site (a symlinked folder on the way
    would send the page elsewhere) and is not itself a symlink."""
    target = site / rel
    root = site.resolve()
    if not target.parent.resolve().is_relative_to(root) or target.is_symlink():
        raise DataError(
            f"--site {site}: {rel} would be written through a symlink out of the site; "
            "it was left untouched: remove the symlink or build into another --site folder"
        )
    return target


def _check_destinations(site: Path, rels: list[str]) -> None:
    """Every file the build moves into place or removes: inside the site, and its folder
    writable (a read-only folder found after the commit would leave a half-moved site)."""
    for rel in rels:
        target = _inside(site, rel)
        folder = target.parent
        while not folder.exists():
            folder = folder.parent
        if not os.access(folder, os.W_OK | os.X_OK) or (
            target.exists() and not os.access(target, os.W_OK)
        ):
            raise DataError(
                f"--site {site}: cannot write {rel} (permission denied on {folder}); "
                "nothing in the site was changed"
            )


def _keep_changed(site: Path, previous: dict[str, str], inputs: set[Path]) -> None:
    """Move aside each file the last build wrote whose content changed since (its digest is in
    the manifest), so that neither a replacement nor a stale-page removal destroys it."""
    import warnings

    from cladapt.results import ResultsWarning, move_aside

    for rel, digest in previous.items():
        target = site / rel
        if not digest or not target.is_file() or target.resolve() in inputs:
            continue
        if _digest(target.read_bytes()) != digest:
            backup = move_aside(target)
            warnings.warn(
                f"{target} changed since the last build wrote it; it was kept as {backup}",
                ResultsWarning,
                stacklevel=2,
            )


def _finish_pending(site: Path, inputs: set[Path]) -> None:
    """Move a committed build into place (idempotent: safe to repeat after a kill)."""
    pending = site / PENDING
    if not (pending / PLAN).is_file():
        shutil.rmtree(pending, ignore_errors=True)  # never committed
        return
    plan = json.loads((pending / PLAN).read_text(encoding="utf-8"))
    try:
        for rel in plan["files"]:
            if (pending / rel).is_file():
                target = _inside(site, rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(pending / rel, target)
        for rel in set(plan["previous"]) - set(plan["files"]):
            stale = site / rel
            if (
                stale.is_file()
                and not stale.is_symlink()
                and stale.resolve().is_relative_to(site.resolve())
                and stale.resolve() not in inputs  # an input is never stale
            ):
                stale.unlink()
        if (pending / MANIFEST).is_file():
            os.replace(pending / MANIFEST, site / MANIFEST)
    except OSError as exc:
        raise DataError(
            f"--site {site}: a committed build could not be moved into place "
            f"({exc.strerror or exc}: {exc.filename}); fix that and build again: the next build "
            "completes it"
        ) from None
    shutil.rmtree(pending, ignore_errors=True)


def _refuse_foreign(site: Path, files: dict[str, str], inputs: set[Path]) -> None:
    """Never write over a file that no earlier build wrote (a user's ``index.html``, a results
    CSV that is not an input of this build)."""
    ours = set(_manifest(site))
    for rel in files:
        target = site / rel
        if (target.exists() or target.is_symlink()) and rel not in ours:
            raise DataError(
                f"--site {site} already holds {rel}, which no earlier cladapt build wrote there; "
                "it was left untouched: move it away or build into another --site folder"
            )


def _manifest(site: Path) -> dict[str, str]:
    """The files the last build wrote, each with the SHA-256 of what it wrote ('' where an
    older manifest recorded names only)."""
    try:
        recorded = json.loads((site / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if isinstance(recorded, list):  # written before digests were recorded
        return {n: "" for n in recorded if isinstance(n, str)}
    if isinstance(recorded, dict):
        return {k: v for k, v in recorded.items() if isinstance(k, str) and isinstance(v, str)}
    return {}


def _printable(value):
    """Every value a template prints, without control, bidi or zero-width characters (a
    ``\u202e`` in a name from a CSV would reverse the text around it on the page)."""
    if isinstance(value, Markup):
        return Markup(clean(value))
    return clean(value) if isinstance(value, str) else value


def _num(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float) and abs(value) >= 1e5:
        return f"{value:.3g}"
    return f"{value:,.{digits}f}"
