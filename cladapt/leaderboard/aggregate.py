"""Aggregate result rows: mean and std over seeds per (stream, setting, strategy, model); a
strategy run with non-default ``--set`` values is its own entry (:func:`label_configurations`).

Only runs that finished (they have summary rows and no error row) count. When a seed was run
more than once for the same configuration, its latest run is used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from cladapt.errors import DataError
from cladapt.results import COLUMNS, escape_cell, read_results
from cladapt.terminal import clean, name_key

KEYS = ["stream", "protocol", "setting", "strategy", "model"]

# headline metrics per protocol, best direction first metric first ("min": lower is better)
HEADLINES: dict[str, list[tuple[str, str]]] = {
    "continual": [
        ("avg_accuracy", "max"),
        ("forgetting", "min"),
        ("bwt", "max"),
        ("fwt", "max"),
        ("avg_error_after_learning", "min"),
    ],
    "test_time": [("mean_error", "min")],
    "uda": [("target_error", "min"), ("source_accuracy", "max")],
}
COST = [
    "images_per_s",
    "peak_memory_mb",
    "saved_activation_mb",
    "trainable_params",
    "wall_time_s",
    "train_flops",
    "inference_flops",
]


def load(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Rows of every results file; rows present in more than one file count once."""
    frames = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"results file not found: {path}")
        df = read_results(path)
        if list(df.columns) != list(COLUMNS):
            raise DataError(f"{path} is not a cladapt results file (columns differ)")
        frames.append(df)
    if not frames:
        raise DataError("no results files given")
    merged = pd.concat(frames, ignore_index=True)
    merged = merged.drop_duplicates(ignore_index=True) if len(frames) > 1 else merged
    for key in KEYS:  # a zero-width or decomposed character never makes a second entry
        merged[key] = merged[key].map(name_key)
    return label_plugin_releases(label_weights(label_configurations(merged)))


def configurations(df: pd.DataFrame) -> pd.Series:
    """Each row's configuration label: the ``--set`` values that differ from the defaults
    (``params_json["config"]``, e.g. ``batch_size=4``); '' for a default run."""
    configs = {text: str(params_of(text).get("config") or "") for text in df.params_json.unique()}
    return df.params_json.map(configs).fillna("")


def label_configurations(df: pd.DataFrame) -> pd.DataFrame:
    """A run whose ``--set`` values differ from the defaults (:func:`configurations`) is another
    configuration: its strategy reads ``bn-adapt [batch_size=1.0]``, so it gets its own
    leaderboard row and never averages with (or replaces) the default run. Idempotent: rows
    already labelled (a site's published CSV read back) keep their label."""
    config = configurations(df)
    suffix = " [" + config + "]"
    differs = (config != "") & ~pd.Series(
        [s.endswith(x) for s, x in zip(df.strategy, suffix, strict=True)], index=df.index
    )
    if differs.any():
        df = df.copy()
        df.loc[differs, "strategy"] = df.strategy[differs] + suffix[differs]
    return df


def label_weights(df: pd.DataFrame) -> pd.DataFrame:
    """Runs of one configuration made from different source weights (``params_json``'s
    ``source_model`` digest: a retrained or replaced cache file) are different entries: their
    model reads ``small-cnn (weights 17fb926c)``, so one never replaces the other's row."""
    digests = {
        text: str(params_of(text).get("source_model") or "") for text in df.params_json.unique()
    }
    weights = df.params_json.map(digests).fillna("")
    groups = df[weights != ""].assign(_w=weights).groupby(KEYS)._w.nunique()
    mixed = groups[groups > 1]
    if mixed.empty:
        return df
    df = df.copy()
    key = pd.MultiIndex.from_frame(df[KEYS])
    hit = key.isin(mixed.index) & (weights != "").to_numpy()
    df.loc[hit, "model"] = df.model[hit] + " (weights " + weights[hit].str[:8] + ")"
    return df


def label_plugin_releases(df: pd.DataFrame) -> pd.DataFrame:
    """Runs of one configuration made by different releases of a third-party plugin
    (``params_json``'s ``plugin`` version) are different entries: the strategy reads
    ``my-tent (my-tta 0.2.0)``, so a new release never averages with (or replaces) an old one."""
    releases = {}
    for text in df.params_json.unique():
        plugin = params_of(text).get("plugin") or {}
        version = plugin.get("version") if isinstance(plugin, dict) else None
        releases[text] = f"{plugin.get('package', '?')} {version}" if version else ""
    release = df.params_json.map(releases).fillna("")
    groups = df[release != ""].assign(_r=release).groupby(KEYS)._r.nunique()
    mixed = groups[groups > 1]
    if mixed.empty:
        return df
    df = df.copy()
    hit = pd.MultiIndex.from_frame(df[KEYS]).isin(mixed.index) & (release != "").to_numpy()
    df.loc[hit, "strategy"] = df.strategy[hit] + " (" + release[hit] + ")"
    return df


def run_strategies(df: pd.DataFrame) -> pd.Series:
    """The strategy each row's run was made with, its configuration label removed (the inverse
    of :func:`label_configurations`): what a results file records and a claim names."""
    suffix = " [" + configurations(df) + "]"
    return pd.Series(
        [
            s[: -len(x)] if x != " []" and s.endswith(x) else s
            for s, x in zip(df.strategy, suffix, strict=True)
        ],
        index=df.index,
        dtype=object,
    )


def params_of(params_json: object) -> dict:
    """A row's ``params_json`` as a dict ({} for a cell that is not a JSON object, also one
    nested too deep to decode)."""
    try:
        value = json.loads(str(params_json))
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def finished_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Summary rows of runs without an error row, latest run per (configuration, seed)."""
    failed = set(df.loc[df.row_type == "error", "run_id"])
    summary = df[(df.row_type == "summary") & ~df.run_id.isin(failed)]
    latest = summary.groupby([*KEYS, "seed"]).started_at.transform("max")
    summary = summary[summary.started_at == latest]
    keep = summary.groupby([*KEYS, "seed"]).run_id.transform("max")  # ties within one second
    return summary[summary.run_id == keep]


def run_status(df: pd.DataFrame) -> dict[str, str]:
    """run_id -> ok (a summary row), error (an error row) or incomplete (neither: the process
    was killed before it could write either, e.g. SIGKILL or a power cut)."""
    status = {r: "incomplete" for r in df.run_id.unique()}
    status.update({r: "ok" for r in df.loc[df.row_type == "summary", "run_id"]})
    status.update({r: "error" for r in df.loc[df.row_type == "error", "run_id"]})
    return status


def uncounted(df: pd.DataFrame) -> str:
    """A sentence on the runs the leaderboard leaves out, or ''."""
    counts = pd.Series(run_status(df)).value_counts()
    parts = []
    if counts.get("error"):
        parts.append(f"{counts['error']} failed")
    if counts.get("incomplete"):
        parts.append(f"{counts['incomplete']} incomplete (killed before they finished)")
    return f"not counted: {' and '.join(parts)} run(s)" if parts else ""


# names a plugin's ``cladapt_describe`` may not use: the columns of a row (the aggregate pivots on
# them) and every metric a protocol measures or the leaderboard ranks and costs by
RESERVED_METRICS = frozenset(
    set(COLUMNS)
    | {m for metrics in HEADLINES.values() for m, _ in metrics}
    | {"transfer", "avg", "last", "error", "accuracy", "error_after_learning"}
    | {"top5_error_after_learning", "oracle", "torch_threads", "experiences"}
    | {"peak_trainable_params", "target_accuracy", "reference_images"}
    | set(COST)
)


def headline(protocol: str) -> tuple[str, str]:
    return HEADLINES.get(protocol, [("", "min")])[0]


# the metrics a stream's papers lead with, where they are not its protocol's: MTIL's ZSCL
# reports Transfer, Avg and Last (Avg, over every step, ranks); NEVIS'22 the average error
# right after learning each task
MTIL_HEADLINES = [("transfer", "max"), ("avg", "max"), ("last", "max")]


def stream_headlines(stream: str, protocol: str, table: pd.DataFrame) -> list[tuple[str, str]]:
    """The stream's headline metrics, the ranking one first (:func:`ranking`)."""
    if "avg_mean" in table and "transfer_mean" in table and table.avg_mean.notna().any():
        return [MTIL_HEADLINES[1], MTIL_HEADLINES[0], MTIL_HEADLINES[2]]
    if stream.startswith("nevis") and "avg_error_after_learning_mean" in table:
        return [("avg_error_after_learning", "min"), ("avg_accuracy", "max")]
    if protocol == "test_time" and (
        "mean_error_mean" not in table or not table.mean_error_mean.notna().any()
    ):
        # a cost probe (the ``probe`` setting) records cost only
        return [("saved_activation_mb", "min"), ("trainable_params", "min")]
    return HEADLINES.get(protocol, [("", "min")])


def ranking(stream: str, protocol: str, table: pd.DataFrame) -> tuple[str, str]:
    """(metric, direction) a stream's strategies are ranked by, within each setting: its
    papers' headline (MTIL: ZSCL's Avg; NEVIS: error after learning), else its protocol's.
    The terminal, the site's tables, its plots and the index's "best" all use this one rule."""
    return stream_headlines(stream, protocol, table)[0]


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration; ``<metric>_mean`` / ``<metric>_std`` columns; sorted by each
    protocol's headline metric."""
    runs = finished_runs(df)
    if runs.empty:
        return pd.DataFrame(columns=[*KEYS, "seeds", "runs", "oracle"])
    wide = runs.pivot_table(
        index=[*KEYS, "seed", "run_id"], columns="metric", values="value", aggfunc="first"
    )
    wide = wide.reset_index()
    metrics = [c for c in wide.columns if c not in (*KEYS, "seed", "run_id")]
    grouped = wide.groupby(KEYS)
    out = grouped[metrics].agg(["mean", "std"])
    out.columns = [f"{m}_{stat}" for m, stat in out.columns]
    out["seeds"] = grouped.seed.nunique()
    out["runs"] = grouped.run_id.nunique()
    out = out.reset_index()
    # oracle references (e.g. target-oracle: trained on the labelled target) are marked and
    # ranked after the methods they bound, never as a stream's best
    oracle = out.pop("oracle_mean") if "oracle_mean" in out else pd.Series(0.0, index=out.index)
    out = out.drop(columns=["oracle_std"], errors="ignore")
    out["oracle"] = oracle.fillna(0).gt(0)
    rules = {
        (stream, protocol): ranking(stream, protocol, part)
        for (stream, protocol), part in out.groupby(["stream", "protocol"])
    }
    order = []
    for _, row in out.iterrows():
        metric, direction = rules[row.stream, row.protocol]
        value = row.get(f"{metric}_mean", float("nan"))
        order.append(value if direction == "min" else -value)
    out["_order"] = order
    return (
        out.sort_values(["stream", "setting", "oracle", "_order"])
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def metric_columns(protocol: str, table: pd.DataFrame, stream: str = "") -> list[str]:
    first = [m for m, _ in stream_headlines(stream, protocol, table)] if stream else []
    if "transfer_mean" in table and table.transfer_mean.notna().any():
        first = [m for m, _ in MTIL_HEADLINES] + first
    names = list(dict.fromkeys(first + [m for m, _ in HEADLINES.get(protocol, [])] + COST))
    return [m for m in names if f"{m}_mean" in table.columns and table[f"{m}_mean"].notna().any()]


_MD_SPECIAL = re.compile(r"([\\`*\[\]|])")


def markdown_cell(value: object) -> str:
    """A table cell as literal text: the characters that make markdown tables, links, code or
    emphasis backslash-escaped, ``& < >`` as entities (a ``<script>`` in a name must not reach a
    rendered page), on one line."""
    text = clean(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text.replace("\n", " "))


def to_markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    lines = ["| " + " | ".join(markdown_cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        cells = [f"{v:.4g}" if isinstance(v, float) else markdown_cell(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_csv(table: pd.DataFrame) -> str:
    """The aggregated table as CSV for spreadsheets: text cells that a spreadsheet would run as
    a formula get a leading ``'`` (OWASP), numbers are left as they are."""
    out = table.map(escape_cell)
    out.columns = [escape_cell(str(c)) for c in out.columns]  # metric names come from plugins
    return out.to_csv(index=False)


def to_json(table: pd.DataFrame) -> str:
    return json.dumps(json.loads(table.to_json(orient="records")), indent=1)
