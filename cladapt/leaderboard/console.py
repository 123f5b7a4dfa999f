"""The leaderboard in a terminal: one compact table per (stream, setting) that fits 100 columns
(the headline metrics and two costs, short headers, one decimal), or ``wide`` tables with every
metric for a wide terminal or a log."""

from __future__ import annotations

import math

import pandas as pd
from rich import box
from rich.table import Table

from cladapt.leaderboard.aggregate import HEADLINES, metric_columns, ranking
from cladapt.terminal import plain

SHORT = {
    "avg_accuracy": "avg acc",
    "forgetting": "forget",
    "bwt": "BWT",
    "fwt": "FWT",
    "avg_error_after_learning": "err@learn",
    "transfer": "Transfer",
    "avg": "Avg",
    "last": "Last",
    "mean_error": "error",
    "target_error": "tgt err",
    "source_accuracy": "src acc",
    "images_per_s": "img/s",
    "wall_time_s": "wall s",
    "train_flops": "FLOPs",
    "inference_flops": "inf FLOPs",
    "peak_memory_mb": "peak MB",
    "trainable_params": "params",
}
COUNTS = ("images_per_s", "peak_memory_mb", "trainable_params")  # whole numbers, no spread
EXPONENT = ("train_flops", "inference_flops")


def cell(metric: str, mean: float, std: float, seeds: int) -> str:
    """A mean with its spread over seeds at the precision that means something; no spread for
    costs, nor for a value that is the same for every seed (a constant, not a 0.0 spread)."""
    if not math.isfinite(mean):
        return "–"
    if metric in COUNTS:
        return f"{mean:,.0f}"
    if metric in EXPONENT:
        return f"{mean:.2g}"
    if metric == "wall_time_s":
        return f"{mean:.1f}" if mean < 100 else f"{mean:.0f}"
    text = f"{mean:.1f}"
    if seeds > 1 and math.isfinite(std) and std > 0:
        text += f" ±{std:.1f}"
    return text


def compact_metrics(protocol: str, part: pd.DataFrame, stream: str = "") -> list[str]:
    """The metric the stream is ranked by first, then the other headline metrics (MTIL: ZSCL's
    Transfer / Avg / Last) and two costs."""
    heads = [m for m, _ in HEADLINES.get(protocol, [])]
    if "transfer_mean" in part and part["transfer_mean"].notna().any():
        heads = ["transfer", "avg", "last", "forgetting"]
    elif protocol == "continual":
        heads = ["avg_accuracy", "forgetting", "bwt", "fwt"]
    first, _ = ranking(stream, protocol, part)
    if first and first not in heads:
        heads = [first, *heads]
    present = [c for c in [*heads, "images_per_s", "wall_time_s"] if f"{c}_mean" in part]
    return [c for c in present if part[f"{c}_mean"].notna().any()]


def leaderboard_tables(
    table: pd.DataFrame, wide: bool = False, width: int | None = 100
) -> list[tuple[str, Table]]:
    """(title, table) per (stream, setting): the title says stream, setting, protocol and the
    model when there is one, so the table itself needs no such columns. A number is never cut:
    where a table would not fit ``width`` columns, its last columns are left out (costs first)
    and the title says which; ``width=None`` keeps every column (``--wide``)."""
    tables = []
    for (protocol, stream, setting), part in table.groupby(
        ["protocol", "stream", "setting"], sort=True
    ):
        metrics = (
            metric_columns(protocol, part, stream)
            if wide
            else compact_metrics(protocol, part, stream)
        )
        models = part.model.unique()
        title = f"{stream} · {setting} · {protocol}"
        if len(models) == 1:
            title += f" · {models[0]}"
        first, direction = ranking(stream, protocol, part)
        better = "lower" if direction == "min" else "higher"
        title += f" · ranked by {SHORT.get(first, first)} ({better} is better)"
        rows = []
        for _, r in part.iterrows():
            name = f"{r.strategy} (oracle)" if r.get("oracle", False) else str(r.strategy)
            cells = [name] + ([str(r.model)] if len(models) > 1 else []) + [str(r.seeds)]
            numbers = [
                cell(m, float(r[f"{m}_mean"]), float(r.get(f"{m}_std", math.nan)), r.seeds)
                for m in metrics
            ]
            rows.append((cells, numbers))
        heads = [SHORT.get(m, m) if not wide else m for m in metrics]
        keep = _fitting(heads, rows, width, names=1 + (len(models) > 1))
        if keep < len(metrics):
            title += f" (left out to fit: {', '.join(heads[keep:])}; --wide shows them)"
        t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        longest = [max([8] + [len(c[j]) for c, _ in rows]) for j in range(1 + (len(models) > 1))]
        t.add_column("strategy", overflow="fold", min_width=min(longest[0], 30))
        if len(models) > 1:
            t.add_column("model", overflow="fold", min_width=min(longest[1], 30))
        t.add_column("seeds", justify="right", no_wrap=True)
        for h in heads[:keep]:
            t.add_column(plain(h), justify="right", no_wrap=True, overflow="ignore")
        for cells, numbers in rows:
            t.add_row(*(plain(c) for c in cells), *numbers[:keep])
        tables.append((title, t))
    return tables


def _fitting(heads: list[str], rows: list, width: int | None, names: int) -> int:
    """How many metric columns fit ``width`` with every number and name whole; at least the
    first (the headline)."""
    if width is None:
        return len(heads)

    def need(i: int, values) -> int:
        return max([len(heads[i])] + [len(v) for v in values])

    fixed = sum(min(30, max([8] + [len(c[j]) for c, _ in rows])) + 3 for j in range(names))
    fixed += max([5] + [len(c[-1]) for c, _ in rows]) + 2  # seeds
    used, keep = fixed, 0
    for i in range(len(heads)):
        used += need(i, [n[i] for _, n in rows]) + 3
        if used > width and keep >= 1:
            break
        keep += 1
    return keep
