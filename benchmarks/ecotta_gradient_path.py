"""EcoTTA with the paper's gradient path and with the community code's per-group cut.

    python benchmarks/ecotta_gradient_path.py [--stream digits-c] [--seeds 0,1,2]

``gradient_path=full`` (the default): the entropy loss's gradient reaches every meta block
through the frozen network. ``gradient_path=per-group``: each group's input is detached, as
Lily-Le/EcoTTA's ``one_part_of_networks`` does, so only the last meta block learns from the
entropy (each meta block still gets its own regulariser's gradient); its warm-up on the source
data is made with the same cut. Prints the mean error over the stream's domains per seed and
the mean over seeds.
"""

from __future__ import annotations

import argparse
import statistics

from cladapt.manager import load_catalog
from cladapt.runner import RunSpec, execute


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="digits-c")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    catalog = load_catalog()
    print(f"{args.stream}: ecotta mean error % over the domains, seeds {seeds}")
    for path in ("full", "per-group"):
        errors = []
        for seed in seeds:
            spec = RunSpec(args.stream, "ecotta", sets={"gradient_path": path}, seed=seed, out=None)
            errors.append(execute(spec, catalog).summary["mean_error"])
        spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
        cells = " ".join(f"{e:.2f}" for e in errors)
        mean = statistics.mean(errors)
        print(f"gradient_path={path:9s}  {cells}  mean {mean:.2f} ± {spread:.2f}")


if __name__ == "__main__":
    main()
