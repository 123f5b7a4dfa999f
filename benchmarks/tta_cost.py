"""Cost and accuracy of the test-time adaptation strategies on digits-c, on the same model.

    python benchmarks/tta_cost.py [--model small-cnn] [--batch-size 64] [--seed 0]
    python benchmarks/tta_cost.py --memory-only --model resnet50   # deep encoder, no error runs
    python benchmarks/tta_cost.py --small-batch                   # alpha-BN vs BN, batch 1-64

Per strategy: mean error over the 15 digits-C domains (continual, severity 5), images/s (CPU or
GPU, whatever runs it), trainable parameters, the peak activation bytes autograd holds for
backward during one batch's adaptation (counted through
``torch.autograd.graph.saved_tensors_hooks``, leaving out parameters and buffers, so it does not
depend on the device) and forward passes per batch (whole-model forward calls: student, teacher,
anchor and augmented views). ``--small-batch`` runs source, bn-adapt and
alpha-bn (alpha 0.1, 0.5, 0.9) at batch sizes 1, 2, 4, 8, 16, 64 (alpha-BN's claim).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import torch

from cladapt.batch import Batch
from cladapt.leaderboard.aggregate import to_markdown
from cladapt.manager import load_catalog
from cladapt.profiling import count_calls, saved_activation_bytes
from cladapt.runner import RunSpec, execute
from cladapt.stream import TTAAugmentation

STRATEGIES = [
    "source",
    "bn-adapt",
    "alpha-bn",
    "tent",
    "eata",
    "sar",
    "cotta",
    "rotta",
    "ecotta",
    "vida",
    "lame",
]
# memory table only: EcoTTA with 1x1 meta convs as well as the default 3x3
MEMORY_VARIANTS = [(s, {}) for s in STRATEGIES] + [("ecotta", {"meta_kernel": 1})]


def probe(run, strategy, x: torch.Tensor) -> tuple[int, int]:
    """(saved activation bytes, forward passes) of one adaptation step on ``x``."""
    resident = [run.model] + [
        getattr(strategy, a) for a in ("teacher", "anchor") if hasattr(strategy, a)
    ]
    with count_calls(type(run.model)) as calls:
        _, saved = saved_activation_bytes(
            lambda: run.hook.cladapt_adapt(run=run, batch=Batch(x=x)), resident
        )
    return saved, calls[0]


def full_table(args, catalog) -> pd.DataFrame:
    rows = []
    for name in STRATEGIES:
        spec = RunSpec(
            "digits-c",
            name,
            {"batch_size": str(args.batch_size)},
            seed=args.seed,
            device=args.device,
            model=args.model,
            out=args.out,
        )
        outcome = execute(spec, catalog)
        run = outcome.run
        x = run.stream.experiences[0].test.tensors[0][: args.batch_size].to(run.device)
        saved, passes = probe(run, run.strategy, x)
        s = outcome.summary
        rows.append(
            {
                "strategy": name,
                "mean_error_%": round(s["mean_error"], 2),
                "images_per_s": round(s["images_per_s"], 1),
                "trainable_params": int(s["trainable_params"]),
                "saved_MB_per_batch": round(saved / 2**20, 2),
                "forward_passes_per_batch": passes,
            }
        )
    return pd.DataFrame(rows)


def memory_table(args, catalog) -> pd.DataFrame:
    """Random-initialised model of ``--model``, one digits-sized batch: cost columns only."""
    from cladapt.models.factory import create_model

    rows = []
    x = torch.rand(args.batch_size, 3, 32, 32)
    for name, cfg in MEMORY_VARIANTS:
        torch.manual_seed(0)
        model = create_model(catalog.models, args.model, 10, (3, 32, 32)).eval()
        encoder = sum(p.numel() for p in model.parameters())
        stream = SimpleNamespace(
            input_shape=(3, 32, 32),
            num_classes=10,
            source=None,
            source_id="",
            tta_augmentation=TTAAugmentation(),
        )
        entry = catalog.strategies.get(name)
        strategy = entry.factory(entry.factory.Config(**cfg))
        hook = SimpleNamespace()
        run = SimpleNamespace(
            model=model,
            model_name=args.model,
            stream=stream,
            device=torch.device("cpu"),
            optimizer=None,
            step=0,
            seed=0,
            params=SimpleNamespace(batch_size=args.batch_size),
            untimed_s=0.0,
            state={},
            hook=hook,
            autocast=lambda: torch.autocast("cpu", enabled=False),
        )
        if hasattr(strategy, "cladapt_setup"):
            strategy.cladapt_setup(run=run)
        adapt = getattr(strategy, "cladapt_adapt", None)
        hook.cladapt_adapt = adapt or (lambda run, batch: torch.no_grad()(run.model)(batch.x))
        if adapt is None:
            run.model.eval()
        saved, passes = probe(run, strategy, x)
        trainable = sum(
            p.numel()
            for g in (run.optimizer.param_groups if run.optimizer else [])
            for p in g["params"]
        )
        rows.append(
            {
                "strategy": name + "".join(f" ({k}={v})" for k, v in cfg.items()),
                "trainable_params": trainable,
                "trainable_%_of_model": round(100 * trainable / encoder, 1),
                "saved_MB_per_batch": round(saved / 2**20, 2),
                "forward_passes_per_batch": passes,
            }
        )
    return pd.DataFrame(rows)


BATCH_SIZES = (1, 2, 4, 8, 16, 64)


def small_batch_table(args, catalog) -> pd.DataFrame:
    """Mean error % of source, bn-adapt and alpha-bn (default alpha 0.1, and 0.5, 0.9) at batch
    sizes 1-64: alpha-BN's claim is about small batches."""
    rows = []
    runs = [("source", {}), ("bn-adapt", {})] + [
        ("alpha-bn", {"alpha": a}) for a in ("0.1", "0.5", "0.9")
    ]
    for name, extra in runs:
        label = name + (f" (alpha={extra['alpha']})" if extra else "")
        row = {"strategy": label}
        for bs in BATCH_SIZES:
            spec = RunSpec(
                "digits-c",
                name,
                {"batch_size": str(bs), **extra},
                seed=args.seed,
                device=args.device,
                model=args.model,
                out=args.out,
            )
            row[f"batch {bs}"] = round(execute(spec, catalog).summary["mean_error"], 2)
            print(label, bs, row[f"batch {bs}"], flush=True)
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="small-cnn")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--small-batch", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/tta_cost.csv"))
    args = ap.parse_args()
    catalog = load_catalog()
    if args.memory_only:
        table = memory_table(args, catalog)
    elif args.small_batch:
        table = small_batch_table(args, catalog)
    else:
        table = full_table(args, catalog)
    print(to_markdown(table))


if __name__ == "__main__":
    main()
