"""Where the seed-to-seed spread of the embedded UDA streams comes from.

    python benchmarks/uda_seed_noise.py [--stream digits-uda] [--strategy source-only]
                                        [--seeds 5] [--out benchmarks/results/uda_seed_noise.csv]

A run's seed sets two things: the global torch generator (the network's initialisation, the
heads a strategy adds, dropout) and the CPU generator that orders the training batches. This
script varies them separately on a grid (initialisation seed i x data-order seed j, each 0..N-1),
one process per cell (the bench's one thread), and prints per target: the test set's size and the
binomial standard error of one error rate on it, the total spread over the grid, and the share of
it explained by the initialisation (variance of the row means) and by the data order (variance
of the column means). The rows are written to ``--out`` so the table can be remade without
rerunning.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from cladapt.planning import RunSpec

CELL = r"""
import json, sys, tempfile
from pathlib import Path
import torch
import cladapt.runner as runner
from cladapt.manager import load_catalog
from cladapt.planning import RunSpec
from cladapt.results import read_results

stream, strategy = sys.argv[1], sys.argv[2]
init_seed, data_seed = int(sys.argv[3]), int(sys.argv[4])
seed_all = runner.seed_everything

def seed_split(seed):
    seed_all(seed)  # global generators: initialisation and everything else random
    return torch.Generator().manual_seed(data_seed)  # the order of the training batches

runner.seed_everything = seed_split
out = Path(tempfile.mkdtemp()) / "rows.csv"
runner.execute(RunSpec(stream, strategy, seed=init_seed, out=out), load_catalog())
rows = read_results(out)
rows = rows[(rows.metric == "target_error") & (rows.row_type == "eval")]
print(json.dumps({r.eval_experience: float(r.value) for r in rows.itertuples()}))
"""


def cell(stream: str, strategy: str, init_seed: int, data_seed: int) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = [stream, strategy, str(init_seed), str(data_seed)]
    done = subprocess.run(
        [sys.executable, "-c", CELL, *args], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_sizes(stream: str) -> dict[str, int]:
    from cladapt.manager import load_catalog
    from cladapt.planning import plan

    planned = plan(RunSpec(stream, "source-only", out=None), load_catalog())
    return {e.name: len(e.test) for e in planned.stream.experiences}


def decompose(frame: pd.DataFrame, sizes: dict[str, int]) -> pd.DataFrame:
    out = []
    for target, d in frame.groupby("target"):
        grid = d.pivot(index="init_seed", columns="data_seed", values="error")
        p, n = grid.values.mean() / 100, sizes.get(target, 0)
        out.append(
            {
                "target": target,
                "test images": n,
                "binomial se": round(100 * math.sqrt(p * (1 - p) / max(n, 1)), 2),
                "mean": round(grid.values.mean(), 2),
                "sd (all cells)": round(grid.values.std(ddof=1), 2),
                "sd of init-seed means": round(grid.mean(axis=1).std(ddof=1), 2),
                "sd of data-order means": round(grid.mean(axis=0).std(ddof=1), 2),
            }
        )
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="digits-uda")
    parser.add_argument("--strategy", default="source-only")
    parser.add_argument("--seeds", type=int, default=5, help="grid side: seeds 0..N-1 each way")
    parser.add_argument("--out", type=Path, default=None, help="CSV of the grid (appended)")
    parser.add_argument("--table-only", action="store_true", help="remake the table from --out")
    args = parser.parse_args()
    if args.table_only:
        frame = pd.read_csv(args.out)
        frame = frame[(frame.stream == args.stream) & (frame.strategy == args.strategy)]
    else:
        records = []
        for i, j in itertools.product(range(args.seeds), repeat=2):
            for target, error in cell(args.stream, args.strategy, i, j).items():
                records.append(
                    {
                        "stream": args.stream,
                        "strategy": args.strategy,
                        "init_seed": i,
                        "data_seed": j,
                        "target": target,
                        "error": error,
                    }
                )
            print(f"init {i} data {j}: {records[-1]['error']:.1f}", file=sys.stderr)
        frame = pd.DataFrame(records)
        if args.out:
            header = not args.out.exists()
            frame.to_csv(args.out, mode="a", header=header, index=False)
    print(f"{args.stream}, {args.strategy}: {args.seeds}x{args.seeds} grid (init x data order)")
    print(decompose(frame, test_sizes(args.stream)).to_string(index=False))


if __name__ == "__main__":
    main()
