"""Does a GPU give the committed CPU leaderboard's answers? One command, under 8 minutes on one GPU.

    python benchmarks/gpu_check.py [--quick] [--seeds 3] [--out gpu-check] [--skip-bench]

1. ``cladapt bench --full --device cuda --seeds N`` (every strategy on every embedded stream, the
   committed leaderboard's suite; ``--quick``: the quick suite), workers filling the GPU, into
   ``OUT/results.csv`` and its own site ``OUT/site`` (one H200 ran 123 such runs in under 5
   minutes).
2. Per (stream, setting, strategy, model) and headline metric, the GPU mean against the committed
   CPU leaderboard (``leaderboard/results.csv``) in units of their seed spread: ``z = (gpu - cpu)
   / sqrt(sd_gpu^2 / n_gpu + sd_cpu^2 / n_cpu)``, the spread floored at 0.1 points (runs without
   any seed noise, e.g. zero-shot). A pair with |z| > 3 is outside seed noise and flagged.
3. Corruption throughput (the 15 ops at 224 px, batch 64) and the TTA step of each strategy on a
   ResNet-50 at 224 px (random weights: time and memory do not depend on them): seconds per
   batch of 64 and the CUDA peak.

The last lines are the verdict. Writes ``OUT/comparison.csv`` and ``OUT/resnet50.csv``.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "leaderboard" / "results.csv"
Z_LIMIT = 3.0
SPREAD_FLOOR = 0.1
TTA = ["source", "bn-adapt", "tent", "eata", "sar", "cotta", "rotta", "ecotta", "vida"]


def run_bench(out: Path, seeds: int, quick: bool) -> float:
    tic = time.perf_counter()
    cmd = [sys.executable, "-m", "cladapt.cli", "bench", *([] if quick else ["--full"])]
    cmd += ["--device", "cuda", "--seeds", str(seeds)]
    cmd += ["--out", str(out / "results.csv"), "--site", str(out / "site")]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - tic


def headline_table(path: Path) -> pd.DataFrame:
    """Mean, std and seed count per configuration and headline metric."""
    from cladapt.leaderboard.aggregate import HEADLINES, KEYS, finished_runs, load

    runs = finished_runs(load([path]))
    wanted = {(p, m) for p, metrics in HEADLINES.items() for m, _ in metrics}
    runs = runs[[(p, m) in wanted for p, m in zip(runs.protocol, runs.metric, strict=True)]]
    g = runs.groupby([*KEYS, "metric"]).value
    return pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1).fillna(0.0), "n": g.count()})


def compare(gpu: pd.DataFrame, cpu: pd.DataFrame) -> pd.DataFrame:
    both = gpu.join(cpu, lsuffix="_gpu", rsuffix="_cpu", how="inner")
    se = (
        both.sd_gpu.clip(lower=SPREAD_FLOOR) ** 2 / both.n_gpu
        + both.sd_cpu.clip(lower=SPREAD_FLOOR) ** 2 / both.n_cpu
    ) ** 0.5
    both["diff"] = both.mean_gpu - both.mean_cpu
    both["z"] = both["diff"] / se
    both["outside_noise"] = both.z.abs() > Z_LIMIT
    return both.reset_index()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_mb(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else math.nan


def corruption_throughput(device: str = "cuda", size: int = 224, n: int = 64) -> pd.DataFrame:
    from cladapt.data.corruptions import CORRUPTIONS, corrupt

    x = torch.rand(n, 3, size, size, device=device)
    rows = []
    for name in CORRUPTIONS:
        corrupt(x, name, 5, 0)  # warm-up (kernels, caches)
        sync(device)
        tic = time.perf_counter()
        for rep in range(3):
            corrupt(x, name, 5, rep)
        sync(device)
        rows.append({"corruption": name, "images_per_s": 3 * n / (time.perf_counter() - tic)})
    return pd.DataFrame(rows)


def tta_steps(device: str = "cuda", size: int = 224, batch: int = 64) -> pd.DataFrame:
    """Seconds per adapted batch and the CUDA peak, each strategy on a fresh ResNet-50."""
    from types import SimpleNamespace

    from cladapt.batch import Batch
    from cladapt.config import build_config
    from cladapt.context import Run
    from cladapt.defaults import DefaultBehaviour
    from cladapt.manager import load_catalog, run_manager
    from cladapt.models.factory import create_model

    catalog = load_catalog()
    x = torch.rand(batch, 3, size, size, device=device)
    stream = SimpleNamespace(
        name="gpu-check",
        input_shape=(3, size, size),
        num_classes=1000,
        source=None,
        tta_augmentation=catalog.streams.get("digits-c").factory().tta_augmentation,
        source_id="gpu-check",
    )
    rows = []
    for name in TTA:
        entry = catalog.strategies.get(name)
        strategy = entry.factory(build_config(entry.factory.Config, {}))
        model = create_model(catalog.models, "resnet50", 1000, (3, size, size), False).to(device)
        model = model.to(memory_format=torch.channels_last)
        run = Run(
            run_id="gpu-check",
            stream=stream,
            protocol="test_time",
            setting="continual",
            strategy=strategy,
            model_name="resnet50",
            seed=0,
            device=torch.device(device),
            params=None,
            hook=None,
            create_model=lambda m=model: m,
            model=model,
        )
        run.hook = run_manager(DefaultBehaviour(), strategy).hook
        try:
            run.hook.cladapt_setup(run=run)
        except Exception as exc:  # e.g. a warm-up that needs source data this check has not
            rows.append(
                {
                    "strategy": name,
                    "s_per_batch": math.nan,
                    "peak_mb": math.nan,
                    "note": f"{type(exc).__name__}: {exc}"[:120],
                }
            )
            continue
        b = Batch(x=x, y=None)
        run.hook.cladapt_adapt(run=run, batch=b)  # warm-up step
        sync(device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        tic = time.perf_counter()
        for _ in range(3):
            run.hook.cladapt_adapt(run=run, batch=b)
        sync(device)
        rows.append(
            {
                "strategy": name,
                "s_per_batch": (time.perf_counter() - tic) / 3,
                "peak_mb": peak_mb(device),
                "note": "",
            }
        )
        del run, model, strategy
        if device == "cuda":
            torch.cuda.empty_cache()
    return pd.DataFrame(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the quick suite, not --full")
    parser.add_argument("--out", type=Path, default=Path("gpu-check"))
    parser.add_argument("--skip-bench", action="store_true", help="compare OUT/results.csv as is")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible; nothing to check")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    bench_s = math.nan if args.skip_bench else run_bench(args.out, args.seeds, args.quick)

    table = compare(headline_table(args.out / "results.csv"), headline_table(COMMITTED))
    table.to_csv(args.out / "comparison.csv", index=False)
    throughput = corruption_throughput()
    steps = tta_steps()
    steps.to_csv(args.out / "resnet50.csv", index=False)
    throughput.to_csv(args.out / "corruptions.csv", index=False)

    pd.set_option("display.width", 200)
    print(
        table[["stream", "strategy", "metric", "mean_gpu", "mean_cpu", "diff", "z"]]
        .round(2)
        .to_string(index=False)
    )
    print(throughput.round(0).to_string(index=False))
    print(steps.round(4).to_string(index=False))
    flagged = table[table.outside_noise]
    print(f"\ndevice: {torch.cuda.get_device_name()}; bench {bench_s:.0f} s")
    print(
        f"corruptions at 224 px: {throughput.images_per_s.min():.0f}..."
        f"{throughput.images_per_s.max():.0f} images/s; ResNet-50 TTA step "
        f"{steps.s_per_batch.min():.3f}..{steps.s_per_batch.max():.3f} s per 64 images, peak "
        f"{steps.peak_mb.max():.0f} MB"
    )
    for row in flagged.itertuples():
        print(
            f"OUTSIDE SEED NOISE: {row.stream} {row.strategy} {row.metric}: "
            f"GPU {row.mean_gpu:.2f} vs CPU {row.mean_cpu:.2f} (z = {row.z:+.1f})"
        )
    verdict = "PASS" if flagged.empty else "FAIL"
    print(
        f"VERDICT {verdict}: {len(table) - len(flagged)} of {len(table)} headline metrics within "
        f"seed noise (|z| <= {Z_LIMIT:g}) of the committed CPU leaderboard"
    )
    return 0 if flagged.empty else 1


if __name__ == "__main__":
    sys.exit(main())
