"""Zero-shot, fine-tune, LwF, WiSE-FT and ZSCL on the embedded mtil-mini stream, over seeds.

    python benchmarks/mtil_mini.py [--seeds 0,1,2] [--device auto] [--out PATH]

Prints MTIL's Transfer / Avg / Last (ZSCL's definitions, docs/metrics.md) as mean +- std over the
seeds, with the wall time of a run, as a markdown table (the README's mtil-mini table), then each
task's zero-shot accuracy and its accuracy right after learning it (R[t, t]) per strategy, and the
gain over zero-shot. ``--report-only`` re-prints the tables from an existing ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from cladapt.manager import load_catalog
from cladapt.results import read_results
from cladapt.runner import RunSpec, execute

STRATEGIES = ("zero-shot", "finetune", "lwf", "lwf-clip", "wise-ft", "zscl")
METRICS = ("transfer", "avg", "last", "wall_time_s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/mtil_mini.csv"))
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if not args.report_only:
        catalog = load_catalog()
        if args.out.exists():
            args.out.unlink()
        for seed in (int(s) for s in args.seeds.split(",")):
            for strategy in STRATEGIES:
                spec = RunSpec("mtil-mini", strategy, seed=seed, device=args.device, out=args.out)
                execute(spec, catalog)
    rows = read_results(args.out)
    summary = rows[(rows.row_type == "summary") & rows.metric.isin(METRICS)]
    table = summary.pivot_table(
        index="strategy", columns="metric", values="value", aggfunc=["mean", "std"]
    )
    lines = ["| strategy | Transfer | Avg | Last | wall time (s) |", "|---|---|---|---|---|"]
    for s in STRATEGIES:
        cells = [
            f"{table.loc[s, ('mean', m)]:.1f} ± {table.loc[s, ('std', m)]:.1f}"
            if m != "wall_time_s"
            else f"{table.loc[s, ('mean', m)]:.0f}"
            for m in METRICS
        ]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    print(f"mtil-mini, seeds {args.seeds} (mean ± std), device {rows.device.iloc[0]}")
    print("\n".join(lines))
    print()
    print(gain_table(rows))


def learned_after(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Zero-shot accuracy per task and the accuracy right after learning it (R[t, t]) per
    (strategy, task), means over seeds."""
    acc = rows[(rows.row_type == "eval") & (rows.metric == "accuracy")]
    zero = acc[acc.trained_upto == "initial"].groupby("eval_experience", sort=False).value.mean()
    learned = acc[acc.trained_upto == acc.eval_experience]
    return zero, learned.groupby(["strategy", "eval_experience"], sort=False).value.mean()


def gain_table(rows: pd.DataFrame) -> str:
    """Per task: zero-shot accuracy, accuracy right after learning the task (mean over seeds)
    for each training strategy, and the mean gain over zero-shot across tasks."""
    zero, after = learned_after(rows)
    tasks = list(zero.index)
    trained = [s for s in STRATEGIES if s != "zero-shot"]
    lines = [
        "| task | zero-shot | " + " | ".join(f"{s} after learning" for s in trained) + " |",
        "|---" * (2 + len(trained)) + "|",
    ]
    for t in tasks:
        cells = [f"{after[s, t]:.1f}" for s in trained]
        lines.append(f"| {t} | {zero[t]:.1f} | " + " | ".join(cells) + " |")
    gains = [f"{sum(after[s, t] - zero[t] for t in tasks) / len(tasks):+.1f}" for s in trained]
    lines.append("| mean gain over zero-shot | | " + " | ".join(gains) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
