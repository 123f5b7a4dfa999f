"""EcoTTA's test-time procedure: the paper's gradient path and the two public codes'.

    python benchmarks/ecotta_gradient_path.py [--stream digits-c] [--seeds 0,1,2]

``procedure=paper`` (the default): one step on entropy + lambda R, the entropy's gradient
reaching every meta block through the frozen network (our reading of the paper's Fig. 3
caption). ``procedure=authors-sample``: the same step with every group's input detached, as the
authors' ``ecotta_sample_code.py`` does at test time, so only the last meta block learns from
the entropy. ``procedure=community-two-step``: Lily-Le/EcoTTA ``main.py``, a step on lambda R
with the inputs detached, then a step on the entropy of a second, uncut forward (scored). The
source warm-up is the same uncut one for all three (both public codes warm up without the cut),
so the three share the shipped meta networks. Prints the mean error over the stream's domains
per seed and the mean over seeds.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from cladapt.manager import load_catalog
from cladapt.runner import RunSpec, execute

PROCEDURES = ("paper", "authors-sample", "community-two-step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="digits-c")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the leaderboard's rows
    seeds = [int(s) for s in args.seeds.split(",")]
    catalog = load_catalog()
    print(f"{args.stream}: ecotta mean error % over the domains, seeds {seeds}")
    for procedure in PROCEDURES:
        errors = []
        for seed in seeds:
            sets = {"procedure": procedure}
            spec = RunSpec(args.stream, "ecotta", sets=sets, seed=seed, out=None)
            errors.append(execute(spec, catalog).summary["mean_error"])
        spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
        cells = " ".join(f"{e:.2f}" for e in errors)
        mean = statistics.mean(errors)
        print(f"procedure={procedure:19s}  {cells}  mean {mean:.2f} ± {spread:.2f}")


if __name__ == "__main__":
    main()
