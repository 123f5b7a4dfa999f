"""Every test-time strategy's error per domain on the embedded streams digits-c and digits-shift.

    python benchmarks/tta_errors.py            # tables from the committed result CSVs
    python benchmarks/tta_errors.py --run      # rerun digits-shift first (~20 min on 2 cores)

digits-c is in ``cladapt bench --full``, so its rows are the committed leaderboard's
(``leaderboard/results.csv``; rerun with ``cladapt bench --full --out leaderboard/results.csv
--site leaderboard/site``). digits-shift is not (its rows are in
``benchmarks/results/tta_digits_shift.csv``; ``--run`` rewrites them with ``cladapt bench --full
--suite embedded-all --stream digits-shift``). Prints, per stream, a markdown table: error % per
domain (mean over seeds) and the mean over domains (mean ± std over seeds), best first.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from cladapt.leaderboard.aggregate import load, to_markdown

SOURCES = {
    "digits-c": Path("leaderboard/results.csv"),
    "digits-shift": Path("benchmarks/results/tta_digits_shift.csv"),
}


def error_table(rows: pd.DataFrame) -> pd.DataFrame:
    domains = list(dict.fromkeys(rows.loc[rows.metric == "error", "eval_experience"]))
    per_domain = (
        rows[rows.metric == "error"]
        .groupby(["strategy", "eval_experience"])["value"]
        .mean()
        .unstack()[domains]
        .round(1)
    )
    mean = rows[rows.metric == "mean_error"].groupby("strategy")["value"].agg(["mean", "std"])
    table = per_domain.join(mean).sort_values("mean")
    table["mean"] = [f"{m:.1f} ± {s:.1f}" for m, s in zip(table["mean"], table["std"], strict=True)]
    seeds = rows.groupby("strategy")["seed"].nunique()
    return table.drop(columns="std").assign(seeds=seeds).reset_index()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="store_true", help="rerun digits-shift first")
    args = ap.parse_args()
    if args.run:
        with tempfile.TemporaryDirectory() as site:
            cmd = ["cladapt", "bench", "--full", "--suite", "embedded-all"]
            cmd += ["--stream", "digits-shift"]
            cmd += ["--out", str(SOURCES["digits-shift"]), "--site", site]
            subprocess.run(cmd, check=True)
    for stream, path in SOURCES.items():
        rows = load([path])  # runs with --set values are labelled "strategy [k=v]"
        # the default configurations on the stream's default model (the small CNN: digits-c's
        # ViT variant and the configured runs are other tables)
        rows = rows[
            (rows.stream == stream)
            & (rows.setting == "continual")
            & (rows.model == "small-cnn")
            & ~rows.strategy.str.contains("[", regex=False)
        ]
        if rows.empty:
            sys.exit(f"no {stream} rows in {path}")
        print(f"\n### {stream} (continual, error %)\n")
        print(to_markdown(error_table(rows)))


if __name__ == "__main__":
    main()
