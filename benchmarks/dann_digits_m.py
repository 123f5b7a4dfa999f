"""Why DANN does not gain on digits -> digits-m: the two measured differences from the paper's
MNIST -> MNIST-M, varied one at a time.

    python benchmarks/dann_digits_m.py [--seeds 0,1,2] [--workers 2] [--out PATH]

The paper (Ganin et al., JMLR 2016, Table 2; Ganin & Lempitsky 2015, Table 1): MNIST -> MNIST-M
target accuracy 52.25 (source only) -> 76.66 (DANN), +24.4, with its MNIST network (two conv
layers of 32 and 48 maps with max-pooling, a 100-100 label predictor, a 100-unit domain
classifier, no BatchNorm: ``--model dann-lenet --set domain_head=small``) trained on MNIST's
60 000 digits. digits-uda's defaults differ in both: a small BatchNorm CNN from scratch
(``small-cnn``) and scikit-learn's 1 257 training digits. This script runs source-only and DANN
on digits-uda for each combination of

- network: ``small-cnn`` (the stream's default) or ``dann-lenet`` (the paper's);
- training set: the 1 257 digits, or ``--set train_copies=20`` (25 140: the digits and 19
  deformed copies, random affine + elastic as Simard et al. 2003 generate MNIST-like digits; the
  unlabelled target is made from its own copies), MNIST's order of size;

at the stream's budget (1 500 iterations, batch 32 per domain), and prints per combination the
digits-m target accuracy of both (mean ± std over seeds) and DANN's gain, beside the paper's.
Rows go to ``--out`` (default ``benchmarks/results/dann_digits_m.csv``; finished runs are
skipped on a rerun).
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

NETWORKS = {"small-cnn": {}, "dann-lenet": {"dann": {"domain_head": "small"}}}
COPIES = (1, 20)
STRATEGIES = ("source-only", "dann")
PAPER = {"source-only": 52.25, "dann": 76.66}


def _sets(network: str, copies: int, strategy: str) -> dict[str, str]:
    sets = {k: str(v) for k, v in NETWORKS[network].get(strategy, {}).items()}
    if copies > 1:
        sets["train_copies"] = str(copies)
    return sets


def run_one(job: tuple[str, int, str, int, str]) -> str:
    import torch

    torch.set_num_threads(1)  # one core per worker, as the bench
    from cladapt.manager import load_catalog
    from cladapt.runner import RunSpec, execute

    network, copies, strategy, seed, out = job
    spec = RunSpec(
        "digits-uda",
        strategy,
        _sets(network, copies, strategy),
        seed=seed,
        model=network,
        device="cpu",
        out=Path(out),
    )
    execute(spec, load_catalog())
    return f"{network} x{copies} {strategy} seed {seed}"


def _done(out: Path) -> set[tuple[str, int, str, int]]:
    if not out.exists():
        return set()
    from cladapt.leaderboard.aggregate import finished_runs, load, params_of, run_strategies

    runs = finished_runs(load([out]))  # load: runs with --set values are their own entries
    done = set()
    for (_, row), strategy in zip(runs.iterrows(), run_strategies(runs), strict=True):
        copies = int(params_of(row.params_json).get("stream", {}).get("train_copies", 1))
        done.add((row.model, copies, strategy, int(row.seed)))
    return done


def table(out: Path) -> pd.DataFrame:
    from cladapt.leaderboard.aggregate import finished_runs, load, params_of, run_strategies

    df = load([out])
    df = df[df.run_id.isin(set(finished_runs(df).run_id))]
    df = df.assign(run_strategy=run_strategies(df))
    evals = df[(df.row_type == "eval") & (df.metric == "target_error")]
    evals = evals.assign(
        accuracy=100 - evals.value.astype(float),
        copies=[
            int(params_of(p).get("stream", {}).get("train_copies", 1)) for p in evals.params_json
        ],
    )
    rows = []
    for (model, copies, target), g in evals.groupby(["model", "copies", "eval_experience"]):
        stats = {s: g[g.run_strategy == s].accuracy for s in STRATEGIES}
        if any(v.empty for v in stats.values()):
            continue
        rows.append(
            {
                "network": model,
                "training digits": 1257 * copies,
                "target": target,
                **{f"{s} acc": f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" for s, v in stats.items()},
                "DANN gain": round(stats["dann"].mean() - stats["source-only"].mean(), 1),
                "seeds": len(stats["dann"]),
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dann_digits_m.csv"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    done = _done(args.out)
    jobs = [
        (net, copies, strategy, seed, str(args.out))
        for net in NETWORKS
        for copies in COPIES
        for strategy in STRATEGIES
        for seed in seeds
        if (net, copies, strategy, seed) not in done
    ]
    with ProcessPoolExecutor(args.workers) as pool:
        for line in pool.map(run_one, jobs):
            print("done:", line, flush=True)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table(args.out).to_string(index=False))
    so, dann = PAPER["source-only"], PAPER["dann"]
    print(
        "paper (MNIST -> MNIST-M, its MNIST network, 60 000 digits): "
        f"source-only {so}, DANN {dann}, gain +{dann - so:.1f}"
    )


if __name__ == "__main__":
    main()
