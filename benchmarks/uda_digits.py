"""DANN vs source-only on the embedded digits-uda stream, over several seeds.

    python benchmarks/uda_digits.py [--seeds 0,1,2] [--epochs 10] [--out PATH]

Prints target accuracy per target and the mean over targets, mean +- std over seeds, and the
source accuracy (which the mixed source/target BatchNorm statistics of DANN lower).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from cladapt.manager import load_catalog
from cladapt.results import read_results
from cladapt.runner import RunSpec, execute


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/uda_digits.csv"))
    args = ap.parse_args()
    catalog = load_catalog()
    if args.out.exists():
        args.out.unlink()
    for seed in (int(s) for s in args.seeds.split(",")):
        for strategy in ("source-only", "dann"):
            spec = RunSpec(
                "digits-uda",
                strategy,
                {"epochs": str(args.epochs)},
                seed=seed,
                device=args.device,
                out=args.out,
            )
            execute(spec, catalog)
    df = read_results(args.out)
    final = df[(df.row_type == "eval") & df.metric.isin(["target_error", "source_accuracy"])].copy()
    final["value"] = final.apply(
        lambda r: 100 - r.value if r.metric == "target_error" else r.value, axis=1
    )
    final["metric"] = final.metric.replace({"target_error": "target_accuracy"})
    final["column"] = final.apply(lambda r: f"{r.metric}:{r.eval_experience}", axis=1)
    per_seed = final.pivot_table(index=["strategy", "seed"], columns="column", values="value")
    targets = [c for c in per_seed.columns if c.startswith("target_accuracy:")]
    per_seed["target_accuracy:mean"] = per_seed[targets].mean(axis=1)
    table = per_seed.groupby("strategy").agg(["mean", "std"]).round(1)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(per_seed.round(1))
        print()
        print(table)


if __name__ == "__main__":
    main()
