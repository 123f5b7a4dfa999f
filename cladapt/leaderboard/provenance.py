"""What made a set of rows: the suite, devices, precision, CPU threads and dates — read from the
rows themselves, so a rebuilt site says the same as the bench that made it."""

from __future__ import annotations

import math

import pandas as pd

from cladapt.leaderboard.aggregate import params_of


def _precision(params_json: str) -> str:
    return str(params_of(params_json).get("precision", "not recorded"))


def _threads(df: pd.DataFrame, runs: pd.DataFrame) -> str:
    """Torch threads per run (``torch_threads``, with the CPU's instruction set in its note):
    "" when no row records them (results files older than the measurement)."""
    rows = df[(df.row_type == "summary") & (df.metric == "torch_threads")]
    if rows.empty:
        return ""
    recorded = rows.drop_duplicates("run_id").set_index("run_id")

    def count(value: float) -> str:  # a hand-edited cell may hold nan or 1e300
        ok = math.isfinite(value) and value == int(value) and 1 <= value <= 65536
        return str(int(value)) if ok else "invalid"

    label = recorded.value.astype(float).map(count) + " on " + recorded.note.fillna("")
    counts = runs.run_id.map(label).fillna("not recorded").value_counts()
    return ", ".join(f"{t} ({n} run{'s' if n != 1 else ''})" for t, n in counts.items())


def _covers(models: dict[tuple[str, str], set[str]], jobs, pretrained_streams=frozenset()) -> bool:
    """Every job of a suite has a run: its (stream, strategy), on pre-trained weights where the
    job asks for them and on others where it does not (unless the stream pre-trains its default
    model anyway, as mtil-mini does: ``pretrained_streams``)."""

    def has(job) -> bool:
        seen = models.get((job.stream, job.strategy), set())
        if job.pretrained or job.stream in pretrained_streams:
            return any(m.endswith("+pretrained") for m in seen)
        return any(not m.endswith("+pretrained") for m in seen)

    return all(has(j) for j in jobs)


def suite_name(df: pd.DataFrame, catalog) -> str:
    """``quick suite`` / ``full suite`` when the rows cover exactly (quick) or at least (full) a
    suite's runs, else ``a selection``; with the seed count."""
    from cladapt.bench import suite_jobs

    runs = df.drop_duplicates("run_id")
    models: dict[tuple[str, str], set[str]] = {}
    for r in runs.itertuples(index=False):
        models.setdefault((r.stream, r.strategy), set()).add(str(r.model))
    seeds = runs.groupby(["stream", "strategy", "model"]).seed.nunique()
    if not len(seeds):
        n = "no runs"
    elif seeds.min() == seeds.max():
        n = f"{seeds.max()} seed{'s' if seeds.max() > 1 else ''}"
    else:  # streams run their own number of seeds (bench_seeds)
        n = f"{seeds.min()}-{seeds.max()} seeds"
    quick = suite_jobs(catalog, "quick", 1)
    own = frozenset(  # streams whose default model is pre-trained (every run's model is)
        e.name for e in catalog.streams if (e.extra.get("defaults") or {}).get("pretrained")
    )
    if (
        models
        and _covers(models, quick, own)
        and set(models) <= {(j.stream, j.strategy) for j in quick}
    ):
        return f"quick suite ({n})"
    if models and _covers(models, suite_jobs(catalog, "full", 1), own):
        return f"full suite ({n})"
    return f"a selection of {len(models)} (stream, strategy) pairs ({n})"


def describe(df: pd.DataFrame, catalog=None) -> dict[str, str]:
    """Suite, devices, precision, torch threads and the dates of the runs, as short strings for
    the site."""
    runs = df.drop_duplicates("run_id")
    if runs.empty:
        return {"suite": "no runs", "devices": "", "precision": "", "threads": "", "dates": ""}
    dates = pd.to_datetime(runs.started_at, utc=True, errors="coerce").dropna()
    when = ""
    if len(dates):
        first, last = dates.min().strftime("%Y-%m-%d"), dates.max().strftime("%Y-%m-%d")
        when = first if first == last else f"{first} to {last}"
    precision = runs.params_json.map(_precision).value_counts()
    if catalog is None:
        from cladapt.manager import load_catalog

        catalog = load_catalog()
    return {
        "suite": suite_name(df, catalog),
        "devices": ", ".join(sorted(map(str, runs.device.unique()))),
        "precision": ", ".join(f"{p} ({n} runs)" for p, n in precision.items()),
        "threads": _threads(df, runs),
        "dates": when,
    }
