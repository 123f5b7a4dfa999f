"""Which part of ZSCL stops mtil-mini's tasks from being learned? ZSCL with its parts switched off.

    python benchmarks/mtil_mini_zscl_parts.py [--seed 0] [--out PATH]

Runs finetune and zscl on ``mtil-mini`` (its defaults) with, in turn: everything on (the paper's
ZSCL), the weight ensemble off, the L2 anchor off, the distillation off (image and text losses),
and only the distillation on. Prints Transfer / Avg / Last and the mean over tasks of the gain
right after learning a task, R[t, t] - zero-shot (see docs/mtil.md). About 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd
from mtil_mini import learned_after

from cladapt.manager import load_catalog
from cladapt.results import read_results
from cladapt.runner import RunSpec, execute

VARIANTS: dict[str, tuple[str, dict]] = {
    "finetune": ("finetune", {}),
    "zscl (all parts)": ("zscl", {}),
    "zscl, no weight ensemble": ("zscl", {"we": False}),
    "zscl, no L2 anchor": ("zscl", {"l2": 0}),
    "zscl, no distillation": ("zscl", {"image_loss": 0, "text_loss": 0}),
    "zscl, distillation only": ("zscl", {"we": False, "l2": 0}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/mtil_mini_zscl_parts.txt"))
    args = ap.parse_args()
    catalog = load_catalog()
    table = []
    for label, (strategy, sets) in VARIANTS.items():
        out = Path(tempfile.mkdtemp()) / "r.csv"
        execute(RunSpec("mtil-mini", strategy, sets=sets, seed=args.seed, out=out), catalog)
        rows = read_results(out)
        summary = rows[rows.row_type == "summary"].set_index("metric").value
        zero, after = learned_after(rows)
        gain = (after[strategy] - zero).mean()
        table.append((label, *(summary[m] for m in ("transfer", "avg", "last")), gain))
        print(label, f"{gain:+.1f}", flush=True)
    df = pd.DataFrame(table, columns=["variant", "transfer", "avg", "last", "mean_gain"])
    text = (
        f"python benchmarks/mtil_mini_zscl_parts.py --seed {args.seed}\n\n"
        + df.set_index("variant").round(1).to_string()
    )
    print(text)
    args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
