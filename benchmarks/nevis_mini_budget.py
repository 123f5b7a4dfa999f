"""nevis-mini's step budget: a fixed number of steps per task (dm_nevis) against the former budget
of 2 epochs per task, on the same tasks.

    python benchmarks/nevis_mini_budget.py [--seeds 0 1 2]        # ~6 min on 2 cores

Runs finetune on nevis-mini (task-incremental, 4-trial model selection) with the stream's recipe
(400 steps per task at dm_nevis' adaptive batch size, Nesterov SGD, warm-up + cosine) and with the
former one (2 epochs at batch 32, constant rate, plain SGD), and prints the error after learning
per task, mean over seeds, next to chance. Writes ``benchmarks/results/nevis_mini_budget.csv``
(summary table) and ``.txt`` (what it printed).
"""

from __future__ import annotations

import argparse
import io
from contextlib import redirect_stdout
from pathlib import Path

import pandas as pd
import torch

from cladapt.manager import load_catalog
from cladapt.results import read_results
from cladapt.runner import RunSpec, execute

FORMER = {
    "iterations": "0",
    "epochs": "2",
    "batch_rule": "fixed",
    "batch_size": "32",
    "schedule": "constant",
    "warmup_steps": "0",
    "nesterov": "false",
    "weight_decay": "0",
    "validate_every": "0",
}
OUT = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    torch.set_num_threads(1)
    catalog = load_catalog()
    stream = catalog.streams.get("nevis-mini").factory()
    chance = {e.name: 100.0 * (1 - 1 / len(e.classes)) for e in stream.experiences}
    rows = []
    for budget, sets in (("400 steps (dm_nevis-style)", {}), ("2 epochs (former)", FORMER)):
        for seed in args.seeds:
            out = OUT / f"_nevis_budget_{seed}.csv"
            out.unlink(missing_ok=True)
            spec = RunSpec("nevis-mini", "finetune", dict(sets), seed=seed, out=out, device="cpu")
            execute(spec, catalog)
            df = read_results(out)
            err = df[df.metric == "error_after_learning"]
            rows += [
                {"budget": budget, "seed": seed, "task": t, "error": float(v)}
                for t, v in zip(err.eval_experience, err.value, strict=True)
            ]
            out.unlink()
    table = pd.DataFrame(rows).groupby(["task", "budget"]).error.mean().unstack().round(1)
    table["chance"] = [round(chance[t], 1) for t in table.index]
    text = io.StringIO()
    with redirect_stdout(text):
        print(f"finetune on nevis-mini, error after learning %, mean over seeds {args.seeds}")
        print(table.to_string())
        for budget in table.columns[:-1]:
            near = table[budget] >= table["chance"] - 2
            at_chance = list(table.index[near])
            print(f"{budget}: {len(at_chance)} tasks within 2 points of chance {at_chance}")
    print(text.getvalue(), end="")
    OUT.mkdir(exist_ok=True)
    table.to_csv(OUT / "nevis_mini_budget.csv")
    (OUT / "nevis_mini_budget.txt").write_text(text.getvalue())


if __name__ == "__main__":
    main()
