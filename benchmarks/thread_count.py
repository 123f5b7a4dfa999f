"""How much a run's numbers move with its torch thread count on a CPU.

    python benchmarks/thread_count.py [--threads 1,2] [--out PATH]

Runs each (stream, strategy) below once per thread count with ``cladapt run --threads N`` (seed
0, its own process) and prints its headline metric per thread count. A CPU kernel that sums over
more threads splits the sum differently; forward passes of these models are unchanged, weight
gradients differ in the last bits, and a training that is sensitive to its start carries the
difference on. This is why ``cladapt bench`` runs every CPU worker at one thread (the committed
rows) and every row records ``torch_threads``. A few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from cladapt.results import read_results

PAIRS = [  # (stream, strategy, headline metric)
    ("digits-c", "source", "mean_error"),  # no gradient: expected equal
    ("digits-c", "tent", "mean_error"),
    ("digits-c", "cotta", "mean_error"),
    ("digits-uda", "source-only", "target_error"),
]


def headline(stream: str, strategy: str, metric: str, threads: int) -> float:
    out = Path(tempfile.mkdtemp()) / "r.csv"
    cmd = ["cladapt", "run", "--stream", stream, "--strategy", strategy, "--seed", "0"]
    cmd += ["--threads", str(threads), "--out", str(out), "-q"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    rows = read_results(out)
    return float(rows[(rows.row_type == "summary") & (rows.metric == metric)].value.iloc[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/thread_count.txt"))
    args = ap.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    table = []
    for stream, strategy, metric in PAIRS:
        values = {f"{t} thread(s)": headline(stream, strategy, metric, t) for t in counts}
        table.append({"stream": stream, "strategy": strategy, "metric": metric, **values})
        print(table[-1], file=sys.stderr, flush=True)
    df = pd.DataFrame(table).set_index(["stream", "strategy", "metric"])
    text = f"python benchmarks/thread_count.py --threads {args.threads}\n\n"
    text += df.round(3).to_string()
    print(text)
    args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
