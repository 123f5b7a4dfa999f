"""Tables laid out like the field's papers, built from a stream's eval rows.

- MTIL: ZSCL's Table 1 (Zheng et al. 2023): per dataset, Transfer / Avg / Last blocks with one row
  per strategy, plus the mean.
- Test-time: the CoTTA / RobustBench layout: rows = strategies, columns = the 15 corruptions in
  the standard order and their mean, one table per setting (gradual: the severity-5 visits).
- NEVIS: the per-task error after learning each task (NEVIS'22, Bornschein et al. 2023).
- UDA: rows = strategies, columns = source -> target pairs (target accuracy), then the mean
  source accuracy; oracle references marked and listed last.

Published reference numbers (``published.toml``) become separate tables with their citation.
Every value is a mean over seeds of finished runs only.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd

from cladapt.data.corruptions import CORRUPTIONS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# the short column heads of the CoTTA / RobustBench tables (the full name is the cell's title)
SHORT_CORRUPTION = {
    "gaussian_noise": "gauss",
    "shot_noise": "shot",
    "impulse_noise": "impul",
    "defocus_blur": "defoc",
    "glass_blur": "glass",
    "motion_blur": "motn",
    "zoom_blur": "zoom",
    "snow": "snow",
    "frost": "frost",
    "fog": "fog",
    "brightness": "brit",
    "contrast": "contr",
    "elastic_transform": "elast",
    "pixelate": "pixel",
    "jpeg_compression": "jpeg",
}


@dataclass
class PaperRow:
    label: str
    cells: list[float]
    section: str = ""  # a block of rows (MTIL: Transfer, Avg, Last)
    oracle: bool = False


@dataclass
class PaperTable:
    key: str  # the HTML id
    title: str
    columns: list[str]
    rows: list[PaperRow] = field(default_factory=list)
    note: str = ""
    published: bool = False  # numbers from a paper, not from our runs
    heads: list[str] = field(default_factory=list)  # short column heads (default: columns)
    lower_is_better: bool | None = None  # colour the cells as a heat map (None: plain)

    @property
    def column_heads(self) -> list[tuple[str, str]]:
        """(shown head, full name) per column."""
        return list(zip(self.heads or self.columns, self.columns, strict=True))

    def colour(self, value: float) -> str:
        """Green (best) to red (worst) over the table's non-mean cells; '' when plain."""
        if self.lower_is_better is None or not math.isfinite(value):
            return ""
        values = [v for r in self.rows for v in r.cells[:-1] if math.isfinite(v)]
        lo, hi = min(values), max(values)
        if hi <= lo:
            return ""
        t = (value - lo) / (hi - lo)
        t = 1 - t if self.lower_is_better else t
        return f"background:hsl({int(120 * t)},65%,82%)"

    @property
    def sections(self) -> list[tuple[str, list[PaperRow]]]:
        out: dict[str, list[PaperRow]] = {}
        for row in self.rows:
            out.setdefault(row.section, []).append(row)
        return list(out.items())


def _ordered(values: pd.Series) -> list[str]:
    return list(dict.fromkeys(values))


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _oracles(summary: pd.DataFrame) -> set[str]:
    if "oracle" not in summary.columns:
        return set()
    return set(summary.loc[summary.oracle.astype(bool), "strategy"])


def mtil_table(evals: pd.DataFrame) -> PaperTable | None:
    """ZSCL Table 1: Transfer, Avg and Last per dataset and their mean, per strategy."""
    e = evals[evals.metric.isin(["transfer", "avg", "last"]) & (evals.trained_upto == "final")]
    if e.empty:
        return None
    tasks = _ordered(e[e.metric == "avg"].eval_experience)
    means = e.groupby(["metric", "strategy", "eval_experience"]).value.mean()
    table = PaperTable(
        "mtil-table",
        "Transfer / Avg / Last per dataset (ZSCL Table 1 layout), accuracy %",
        [*tasks, "mean"],
        note="Transfer: accuracy on a task before it is learned (mean over earlier rows of the "
        "accuracy matrix); Avg: mean over all rows; Last: after the final task. "
        "Mean over seeds.",
    )
    for metric, section in (("transfer", "Transfer"), ("avg", "Avg"), ("last", "Last")):
        if metric not in means.index.get_level_values(0):
            continue
        by_strategy = means.loc[metric]
        rows = []
        for strategy in _ordered(by_strategy.index.get_level_values(0)):
            vals = [float(by_strategy.get((strategy, t), float("nan"))) for t in tasks]
            rows.append(PaperRow(strategy, [*vals, _mean(vals)], section))
        rows.sort(key=lambda r: -r.cells[-1] if math.isfinite(r.cells[-1]) else math.inf)
        table.rows += rows
    return table


def corruption_tables(evals: pd.DataFrame) -> list[PaperTable]:
    """Per setting: error % per corruption in the standard order, and the mean."""
    e = evals[evals.metric == "error"]
    tables = []
    for setting in _ordered(e.setting):
        g = e[e.setting == setting]
        if setting == "gradual":  # CoTTA's gradual table scores the severity-5 visits
            g = g[g.eval_experience.str.endswith("@5")]
            g = g.assign(eval_experience=g.eval_experience.str.removesuffix("@5"))
        if g.empty:
            continue
        present = _ordered(g.eval_experience)
        columns = [c for c in CORRUPTIONS if c in present] + [
            c for c in present if c not in CORRUPTIONS
        ]
        means = g.groupby(["strategy", "eval_experience"]).value.mean()
        table = PaperTable(
            f"corruptions-{setting}",
            f"error % per corruption, {setting} (CoTTA / RobustBench layout)",
            [*columns, "mean"],
            note="Columns in the standard corruption order; mean over seeds.",
            heads=[SHORT_CORRUPTION.get(c, c) for c in columns] + ["mean"],
            lower_is_better=True,
        )
        for strategy in _ordered(means.index.get_level_values(0)):
            vals = [float(means.get((strategy, c), float("nan"))) for c in columns]
            table.rows.append(PaperRow(strategy, [*vals, _mean(vals)]))
        table.rows.sort(key=lambda r: r.cells[-1] if math.isfinite(r.cells[-1]) else math.inf)
        tables.append(table)
    return tables


def nevis_task_table(evals: pd.DataFrame) -> PaperTable | None:
    """NEVIS'22: error % on each task right after learning it, and the mean."""
    e = evals[evals.metric == "error_after_learning"]
    e = e[e.trained_upto == e.eval_experience]
    if e.empty:
        return None
    tasks = _ordered(e.eval_experience)
    means = e.groupby(["strategy", "eval_experience"]).value.mean()
    table = PaperTable(
        "nevis-table",
        "error % on each task after learning it (NEVIS'22)",
        [*tasks, "mean"],
        note="Tasks in the stream's chronological order; mean over seeds.",
    )
    for strategy in _ordered(means.index.get_level_values(0)):
        vals = [float(means.get((strategy, t), float("nan"))) for t in tasks]
        table.rows.append(PaperRow(strategy, [*vals, _mean(vals)]))
    table.rows.sort(key=lambda r: r.cells[-1] if math.isfinite(r.cells[-1]) else math.inf)
    return table


def uda_table(evals: pd.DataFrame, summary: pd.DataFrame) -> PaperTable | None:
    """Target accuracy per source -> target pair (columns), mean source accuracy; oracle last."""
    final = evals[evals.trained_upto == evals.eval_experience]
    target = final[final.metric == "target_error"]
    if target.empty:
        return None
    pairs = list(dict.fromkeys(zip(target.stream, target.eval_experience, strict=True)))
    labels = [f"{s} → {t}" if s != t else s for s, t in pairs]
    acc = target.groupby(["strategy", "stream", "eval_experience"]).value.mean().rsub(100.0)
    # the final source accuracy is filed under (trained up to the target, evaluated on the
    # source); learning-curve rows are "epochN"
    source_rows = evals[
        (evals.metric == "source_accuracy") & ~evals.trained_upto.astype(str).str.match(r"epoch\d")
    ]
    src = source_rows.groupby("strategy").value.mean()
    oracles = _oracles(summary)
    table = PaperTable(
        "uda-table",
        "target accuracy % per pair (UDA layout)",
        [*labels, "mean target", "mean source"],
        note="Source accuracy: the same model on the source test split (an adaptation that "
        "forgets the source shows here). Oracle rows are trained with target labels: an upper "
        "reference, not a UDA method. Mean over seeds.",
        lower_is_better=False,
    )
    for strategy in _ordered(acc.index.get_level_values(0)):
        vals = [float(acc.get((strategy, s, t), float("nan"))) for s, t in pairs]
        table.rows.append(
            PaperRow(
                strategy,
                [*vals, _mean(vals), float(src.get(strategy, float("nan")))],
                oracle=strategy in oracles,
            )
        )
    table.rows.sort(key=lambda r: (r.oracle, -r.cells[-2] if math.isfinite(r.cells[-2]) else 0))
    return table


@cache
def published_references() -> list[dict]:
    text = resources.files("cladapt.leaderboard").joinpath("published.toml").read_text("utf-8")
    return tomllib.loads(text)["published"]


def published_tables(stream: str) -> list[PaperTable]:
    """The papers' numbers for a real stream, each with its citation."""
    tables = []
    for ref in published_references():
        if stream not in ref["streams"]:
            continue
        key = f"published-{len(tables) + 1}"
        note = f"{ref['citation']}. Model: {ref['model']}."
        if "comparable" in ref:
            note += f" Comparable only with {ref['comparable']}."
        title = f"published: {ref['metric']}" + (f", {ref['setting']}" if "setting" in ref else "")
        if ref["view"] == "mean":
            t = PaperTable(key, title, ["published"], note=note, published=True)
            t.rows = [PaperRow(k, [float(v)]) for k, v in ref["values"].items()]
        elif ref["view"] == "mtil":
            cols = list(ref["columns"])
            t = PaperTable(key, title, [*cols, "mean"], note=note, published=True)
            for section in ("Transfer", "Avg", "Last"):
                for strategy, blocks in ref["values"].items():
                    vals = [float(v) for v in blocks[section]]
                    t.rows.append(PaperRow(strategy, [*vals, _mean(vals)], section))
        elif ref["view"] == "corruptions":
            t = _published_corruptions(ref, key, title, note)
        else:  # pairs: every pair of the paper's table, the paper's own average last
            t = _published_pairs(ref, key, title, note)
        tables.append(t)
    return tables


def _published_corruptions(ref: dict, key: str, title: str, note: str) -> PaperTable:
    """A CoTTA-style row per method: error per corruption in the standard order (nan: the
    paper's value not checked here, shown as "–") and the paper's printed mean."""
    columns = list(CORRUPTIONS)
    t = PaperTable(
        key,
        title,
        [*columns, "mean"],
        note=note,
        published=True,
        heads=[SHORT_CORRUPTION[c] for c in columns] + ["mean"],
    )
    for strategy, row in ref["values"].items():
        cells = [float(v) for v in row["corruptions"]]
        if len(cells) != len(columns):
            raise ValueError(f"published {strategy}: {len(cells)} corruptions, not {len(columns)}")
        t.rows.append(PaperRow(strategy, [*cells, float(row["mean"])]))
    return t


def _published_pairs(ref: dict, key: str, title: str, note: str) -> PaperTable:
    """The paper's UDA table as its readers know it: one column per source -> target pair (the
    streams, in the paper's order, headed by ``pair_heads``) and the paper's average."""
    pairs = list(ref["streams"])
    heads = list(ref.get("pair_heads", pairs))
    averaged = "average" in ref
    t = PaperTable(
        key,
        title,
        [*pairs, "avg"] if averaged else pairs,
        note=note,
        published=True,
        heads=[*heads, "avg"] if averaged else heads,
    )
    strategies = list(dict.fromkeys(k for pair in pairs for k in ref["pairs"][pair]))
    for strategy in strategies:
        cells = [float(ref["pairs"][pair].get(strategy, "nan")) for pair in pairs]
        if averaged:
            cells.append(float(ref["average"].get(strategy, "nan")))
        t.rows.append(PaperRow(strategy, cells))
    return t


def paper_tables(stream: str, protocol: str, evals: pd.DataFrame, summary: pd.DataFrame):
    """Our paper-style tables for one stream's page, then the published ones."""
    tables: list[PaperTable] = []
    if protocol == "continual":
        tables += [t for t in (mtil_table(evals),) if t]
        if stream.startswith("nevis"):
            tables += [t for t in (nevis_task_table(evals),) if t]
    elif protocol == "test_time":
        tables += corruption_tables(evals)
    elif protocol == "uda":
        tables += [t for t in (uda_table(evals, summary),) if t]
    return tables + published_tables(stream)
