"""Is it the learning rate or the tower that keeps ZSCL from learning mtil-mini's tasks?

    python benchmarks/zscl_recipe_sweep.py [--seed 0] [--workers 2] [--out PATH]

On mtil-mini ZSCL gains little over zero-shot on the task it has just learned while fine-tuning
gains a lot (docs/mtil.md); in the paper (Zheng et al., ICCV 2023, ViT-B/16, AdamW 1e-5) ZSCL
learns each task. mtil-mini trains a tiny ResNet CLIP (BatchNorm frozen) at AdamW 3e-4 — 30 times
the paper's rate. This script runs fine-tuning and ZSCL (mtil-mini's recipe otherwise unchanged:
300 steps a task, batch 32, cosine schedule) at lower rates down to the paper's, with the ResNet
tower at 4 times its width (``clip-tiny-rn-w32``: 16 times the image tower's parameters,
pre-trained by the same recipe on first use), and with the tiny ViT tower (``clip-tiny``:
LayerNorm, as ViT-B/16), and prints per recipe: Transfer and Last,
the mean gain over zero-shot right after learning a task (R[t, t] - zero-shot) for each method,
ZSCL's gain as a share of fine-tuning's, and fine-tuning's relative weight drift
||theta - theta_task_start|| / ||theta_task_start|| after 10 steps and at a task's end (medians
over tasks) — the quantity ``benchmarks/zscl_regime.py`` reads for ViT-B/16 at the paper's
recipe (0.078 % after 10 steps, random weights). If the rate were why, ZSCL's share would rise as
the rate falls; if capacity were, it would rise with the width. About 20 minutes on 2 cores (the
wider and the ViT towers pre-trained on first use included).
"""

from __future__ import annotations

import argparse
import tempfile
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
import torch
from mtil_mini import learned_after
from zscl_regime import Probe

from cladapt.manager import load_catalog
from cladapt.results import read_results
from cladapt.runner import RunSpec, execute

# recipe label -> (model, --set values); None: the stream's default model
RECIPES: dict[str, tuple[str | None, dict]] = {
    "clip-tiny-rn, AdamW 3e-4 (mtil-mini)": (None, {}),
    "clip-tiny-rn, AdamW 1e-4": (None, {"lr": 1e-4}),
    "clip-tiny-rn, AdamW 3e-5": (None, {"lr": 3e-5}),
    "clip-tiny-rn, AdamW 1e-5 (the paper's rate)": (None, {"lr": 1e-5}),
    "clip-tiny-rn-w32 (16x the image tower), AdamW 3e-4": ("clip-tiny-rn-w32", {}),
    "clip-tiny-rn-w32 (16x the image tower), AdamW 1e-4": ("clip-tiny-rn-w32", {"lr": 1e-4}),
    "clip-tiny (ViT, LayerNorm), AdamW 3e-4": ("clip-tiny", {}),
    "clip-tiny (ViT, LayerNorm), AdamW 1e-5": ("clip-tiny", {"lr": 1e-5}),
}
STRATEGIES = ("finetune", "zscl")


def one(job: tuple[str, str, int]) -> dict:
    """One run, one thread (the bench's rule, so that the numbers repeat)."""
    label, strategy, seed = job
    torch.set_num_threads(1)
    model, sets = RECIPES[label]
    out = Path(tempfile.mkdtemp()) / "r.csv"
    probe = Probe({10})
    spec = RunSpec("mtil-mini", strategy, sets=sets, seed=seed, out=out, run_plugins=(probe,))
    if model:  # another model than the stream's takes its pre-trained weights only if asked
        spec = RunSpec(**{**spec.__dict__, "model": model, "pretrained": True})
    execute(spec, load_catalog())
    rows = read_results(out)
    summary = rows[rows.row_type == "summary"].set_index("metric").value
    zero, after = learned_after(rows)
    drift = pd.DataFrame(probe.rows)
    at10 = drift[drift.step == 10].drift.median()
    end = drift.groupby("task").drift.last().median()
    return {
        "recipe": label,
        "strategy": strategy,
        "zero_shot": zero.mean(),
        "transfer": summary["transfer"],
        "last": summary["last"],
        "gain": (after[strategy] - zero).mean(),
        "drift_10": at10,
        "drift_end": end,
    }


def table(results: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(results).set_index(["recipe", "strategy"])
    rows = []
    for label in RECIPES:
        ft, zs = df.loc[(label, "finetune")], df.loc[(label, "zscl")]
        rows.append(
            {
                "recipe": label,
                "zero-shot": ft.zero_shot,
                "ft transfer": ft.transfer,
                "zscl transfer": zs.transfer,
                "ft last": ft["last"],
                "zscl last": zs["last"],
                "ft gain": ft.gain,
                "zscl gain": zs.gain,
                "zscl / ft gain": zs.gain / ft.gain,
                "ft drift 10 steps %": 100 * ft.drift_10,
                "ft drift task %": 100 * ft.drift_end,
            }
        )
    return pd.DataFrame(rows).set_index("recipe")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/zscl_recipe_sweep.txt"))
    args = ap.parse_args()
    jobs = [(label, s, args.seed) for label in RECIPES for s in STRATEGIES]
    # the pre-trained towers are made (or read) once, before the workers share the cache
    load_catalog()
    with get_context("spawn").Pool(args.workers) as pool:
        results = []
        for r in pool.imap_unordered(one, jobs):
            print(f"{r['recipe']} / {r['strategy']}: gain {r['gain']:+.1f}", flush=True)
            results.append(r)
    text = (
        f"python benchmarks/zscl_recipe_sweep.py --seed {args.seed}\n\n"
        + table(results).round(3).to_string()
    )
    print(text)
    args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
