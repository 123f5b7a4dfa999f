"""Test-time strategies under i.i.d. and label-correlated test orders on digits-c.

    python benchmarks/tta_settings.py [--seeds 0 1 2] [--strategies source bn-adapt ...]

Mean error over the 15 corruptions (severity 5, batch 64) for each strategy in the settings
``continual`` (each domain shuffled), ``correlated`` (each domain sorted by class, the peer
benchmark's) and ``dirichlet`` (RoTTA's temporally correlated order, gamma 0.1). CoTTA and ViDA
are left out by default (minutes per run on a CPU); pass them with ``--strategies``. Writes
``benchmarks/results/tta_settings.csv`` (a rerun of some ``--strategies`` replaces only their
rows) and prints a markdown table of every strategy in it (mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from cladapt.leaderboard.aggregate import to_markdown
from cladapt.runner import RunSpec, execute

SETTINGS = ["continual", "correlated", "dirichlet"]
STRATEGIES = ["source", "bn-adapt", "alpha-bn", "tent", "eata", "sar", "ecotta", "rotta", "lame"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--strategies", nargs="+", default=STRATEGIES)
    ap.add_argument("--stream", default="digits-c")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/tta_settings.csv"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies:
            for setting in SETTINGS:
                for seed in args.seeds:
                    spec = RunSpec(
                        args.stream, strategy, setting=setting, seed=seed, out=Path(tmp) / "r.csv"
                    )
                    error = execute(spec).result.headline["mean_error"]
                    rows.append(dict(strategy=strategy, setting=setting, seed=seed, error=error))
                    print(f"{strategy:10s} {setting:10s} seed {seed}: {error:.2f}", flush=True)
    df = pd.DataFrame(rows)
    if args.out.exists():  # rerun strategies replace their rows; the others' are kept
        kept = pd.read_csv(args.out)
        df = pd.concat([kept[~kept.strategy.isin(args.strategies)], df], ignore_index=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    stats = df.groupby(["strategy", "setting"], sort=False).error.agg(["mean", "std"])
    cell = stats["mean"].map("{:.1f}".format) + " ± " + stats["std"].fillna(0).map("{:.1f}".format)
    order = [s for s in STRATEGIES if s in set(df.strategy)]
    order += [s for s in dict.fromkeys(df.strategy) if s not in order]
    table = cell.unstack("setting")[SETTINGS].reindex(order).reset_index()
    print(to_markdown(table))


if __name__ == "__main__":
    main()
