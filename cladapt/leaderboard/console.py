"""The leaderboard in a terminal: one compact table per (stream, setting) that fits 100 columns
(the headline metrics and two costs, short headers, one decimal), or ``wide`` tables with every
metric for a wide terminal or a log."""

from __future__ import annotations

import math

import pandas as pd
from rich import box
from rich.table import Table

from cladapt.leaderboard.aggregate import HEADLINES, metric_columns
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


def compact_metrics(protocol: str, part: pd.DataFrame) -> list[str]:
    """The headline metrics (MTIL: ZSCL's Transfer / Avg / Last) and two costs."""
    heads = [m for m, _ in HEADLINES.get(protocol, [])]
    if "transfer_mean" in part and part["transfer_mean"].notna().any():
        heads = ["transfer", "avg", "last", "forgetting"]
    elif protocol == "continual":
        heads = ["avg_accuracy", "forgetting", "bwt", "fwt"]
    present = [c for c in [*heads, "images_per_s", "wall_time_s"] if f"{c}_mean" in part]
    return [c for c in present if part[f"{c}_mean"].notna().any()]


def leaderboard_tables(table: pd.DataFrame, wide: bool = False) -> list[tuple[str, Table]]:
    """(title, table) per (stream, setting): the title says stream, setting, protocol and the
    model when there is one, so the table itself needs no such columns."""
    tables = []
    for (protocol, stream, setting), part in table.groupby(
        ["protocol", "stream", "setting"], sort=True
    ):
        metrics = metric_columns(protocol, part) if wide else compact_metrics(protocol, part)
        models = part.model.unique()
        title = f"{stream} · {setting} · {protocol}"
        if len(models) == 1:
            title += f" · {models[0]}"
        t = Table(
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        t.add_column("strategy", no_wrap=True)
        if len(models) > 1:
            t.add_column("model", no_wrap=True)
        t.add_column("seeds", justify="right", no_wrap=True)
        for m in metrics:
            t.add_column(plain(SHORT.get(m, m) if not wide else m), justify="right", no_wrap=True)
        for _, r in part.iterrows():
            name = f"{r.strategy} (oracle)" if r.get("oracle", False) else str(r.strategy)
            cells = [plain(name)] + ([plain(r.model)] if len(models) > 1 else [])
            cells.append(str(r.seeds))
            cells += [
                cell(m, float(r[f"{m}_mean"]), float(r.get(f"{m}_std", math.nan)), r.seeds)
                for m in metrics
            ]
            t.add_row(*cells)
        tables.append((title, t))
    return tables
