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
from cladapt.terminal import clean

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
    return label_configurations(merged)


def label_configurations(df: pd.DataFrame) -> pd.DataFrame:
    """A run whose ``--set`` values differ from the defaults (``params_json["config"]``, e.g.
    ``batch_size=1.0``) is another configuration: its strategy reads ``bn-adapt
    [batch_size=1.0]``, so it gets its own leaderboard row and never averages with (or replaces)
    the default run."""
    configs = {text: str(params_of(text).get("config") or "") for text in df.params_json.unique()}
    config = df.params_json.map(configs)
    differs = config != ""
    if differs.any():
        df = df.copy()
        df.loc[differs, "strategy"] = df.strategy[differs] + " [" + config[differs] + "]"
    return df


def params_of(params_json: object) -> dict:
    """A row's ``params_json`` as a dict ({} for a cell that is not a JSON object)."""
    try:
        value = json.loads(str(params_json))
    except ValueError:
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


def headline(protocol: str) -> tuple[str, str]:
    return HEADLINES.get(protocol, [("", "min")])[0]


# the metrics a stream's papers lead with, where they are not its protocol's: MTIL's ZSCL
# reports Transfer, Avg and Last (Avg, over every step, ranks); NEVIS'22 the average error
# right after learning each task
MTIL_HEADLINES = [("transfer", "max"), ("avg", "max"), ("last", "max")]


def stream_headlines(stream: str, protocol: str, table: pd.DataFrame) -> list[tuple[str, str]]:
    """The stream's headline metrics, the ranking one first."""
    if "avg_mean" in table and "transfer_mean" in table and table.avg_mean.notna().any():
        return [MTIL_HEADLINES[1], MTIL_HEADLINES[0], MTIL_HEADLINES[2]]
    if stream.startswith("nevis") and "avg_error_after_learning_mean" in table:
        return [("avg_error_after_learning", "min"), ("avg_accuracy", "max")]
    return HEADLINES.get(protocol, [("", "min")])


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
    order = []
    for _, row in out.iterrows():
        metric, direction = headline(row.protocol)
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
