"""Cost and accuracy of the test-time adaptation strategies on digits-c, on the same model.

    python benchmarks/tta_cost.py [--model small-cnn] [--batch-size 64] [--seed 0]
    python benchmarks/tta_cost.py --memory-only --model resnet50   # deep encoder, no error runs
    python benchmarks/tta_cost.py --small-batch                   # alpha-BN vs BN, batch 1-64
    python benchmarks/tta_cost.py --speed [--image-size 224 --model resnet50]  # batched TTA

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


# ------------------------------------------------------------------------ batched augmentation


def per_view_teacher(teacher, x, augment, views, memory_mb):
    """The reference's structure: per view, torchvision's functions on the padded image, then
    one teacher forward (what the peer implementation and the official code do)."""
    params = augment.draw(views)
    with torch.no_grad():
        return torch.stack(
            [teacher(augment.reference_view(x, params, v)).float() for v in range(views)]
        )


def _adapter(catalog, strategy: str, args):
    """A ready run of ``strategy`` on digits-c (or a random ``--model`` at ``--image-size``):
    the strategy after its setup, the run context, and test batches."""
    from cladapt.planning import plan
    from cladapt.runner import build

    sets = {"batch_size": str(args.batch_size)}
    spec = RunSpec("digits-c", strategy, sets, seed=args.seed, device=args.device, out=None)
    spec = spec if args.image_size == 32 else spec.__class__(**{**vars(spec), "model": args.model})
    built = build(plan(spec, catalog), catalog)
    run = built.context
    if args.image_size == 32:
        run.model = run.source_model()
        x = run.stream.experiences[0].test.tensors[0].float()
        batches = [x[i : i + args.batch_size] for i in range(0, len(x), args.batch_size)]
        batches = [b for b in batches if len(b) == args.batch_size]
    else:  # a randomly initialised model of that size; images are noise of the right shape
        from cladapt.models.factory import create_model

        run.model = create_model(
            catalog.models, args.model, 10, (3, args.image_size, args.image_size)
        )
        run.stream.input_shape = (3, args.image_size, args.image_size)
        g = torch.Generator().manual_seed(0)
        batches = [
            torch.rand(args.batch_size, 3, args.image_size, args.image_size, generator=g)
            for _ in range(4)
        ]
    run.model = run.model.to(run.device)
    run.hook.cladapt_setup(run=run)
    batches = [b.to(run.device) for b in batches]
    return built.pm, run, batches


def speed_table(args, catalog) -> pd.DataFrame:
    """Per batch, median over ``--batches`` interleaved batches: the strategy's step with the
    batched augmentation (ours) and with the per-view loop of the reference's structure, on
    the same inputs in the same process; their ratio."""
    import statistics
    import time

    from cladapt.plugins import rotta, tta, vida

    from cladapt import plugins  # noqa: F401  (the strategies' modules)

    modules = {"cotta": tta, "vida": vida, "rotta": rotta}
    rows = []
    for name in args.strategies.split(","):
        _, run, batches = _adapter(catalog, name, args)
        module = modules[name]
        ours_fn = getattr(module, "teacher_views", None)
        times = {"batched": [], "per view": []}
        for i in range(args.batches):
            x = batches[i % len(batches)]
            for label in ("batched", "per view") if i % 2 == 0 else ("per view", "batched"):
                if ours_fn is not None:
                    module.teacher_views = ours_fn if label == "batched" else per_view_teacher
                _sync(run.device)
                tic = time.perf_counter()
                run.hook.cladapt_adapt(run=run, batch=Batch(x=x))
                _sync(run.device)
                times[label].append(time.perf_counter() - tic)
        if ours_fn is not None:
            module.teacher_views = ours_fn
        # the augmentation alone, the same views both ways
        aug, views = run.strategy.augment, getattr(run.strategy.cfg, "augmentations", 1)
        for i in range(args.batches):
            x, p = batches[i % len(batches)], aug.draw(views)
            for label in ("aug batched", "aug per view"):
                _sync(run.device)
                tic = time.perf_counter()
                if label == "aug batched":
                    _as_the_step_makes_them(aug, x, p, run.device)
                else:
                    [aug.reference_view(x, p, v) for v in range(views)]
                _sync(run.device)
                times.setdefault(label, []).append(time.perf_counter() - tic)
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        rows.append(
            {
                "strategy": name,
                "views": views,
                "augmentation ms, per view (reference)": round(med["aug per view"], 1),
                "augmentation ms, batched (cladapt)": round(med["aug batched"], 1),
                "augmentation speed-up": round(med["aug per view"] / med["aug batched"], 2),
                "step ms, per-view loop (reference structure)": round(med["per view"], 1),
                "step ms, batched (cladapt)": round(med["batched"], 1),
                "step speed-up": round(med["per view"] / med["batched"], 2),
            }
        )
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


EVERYTHING = "augment: all views, as the step makes them (CPU: one view at a time)"


def _as_the_step_makes_them(aug, x, p, device) -> list[torch.Tensor]:
    """The views as ``teacher_views`` makes them: on a CPU one at a time, else all at once."""
    if device.type != "cpu":
        return [aug.views(x, p)]
    return [aug.views(x, p.select(slice(i, i + 1))) for i in range(len(p))]


def _noise(images: torch.Tensor) -> torch.Tensor:
    return torch.randn(images.shape, device=images.device) * 0.005


def _teacher_forwards(run, teacher, images, batch, views):
    from cladapt.augment import per_view_statistics

    with torch.no_grad():
        if run.device.type == "cpu":
            return [teacher(part) for part in images.split(batch)]
        with per_view_statistics(teacher, views):
            return teacher(images)


def profile_table(args, catalog) -> pd.DataFrame:
    """Where one CoTTA batch's time goes (median of ``--batches``): each augmentation step of
    the batched path, the augmented teacher forwards, and the rest of the step (the anchor's and
    the teacher's clean forwards, the student's forward, backward and update, the EMA and the
    stochastic restore). The floor is the teacher forwards' own cost."""
    import statistics
    import time
    from functools import partial

    from cladapt.augment import OPS, _jitter

    _, run, batches = _adapter(catalog, "cotta", args)
    cotta = run.strategy
    aug, teacher, views = cotta.augment, cotta.teacher, cotta.cfg.augmentations
    parts: dict[str, list[float]] = {}

    def timed(label, fn):
        _sync(run.device)
        tic = time.perf_counter()
        out = fn()
        _sync(run.device)
        parts.setdefault(label, []).append((time.perf_counter() - tic) * 1000)
        return out

    for i in range(args.batches):
        x = batches[i % len(batches)]
        p = aug.draw(views)
        xx = x.float().unsqueeze(0).expand(views, *x.shape).clone()
        for op in OPS:
            f = getattr(p, op).to(x.device).view(-1, 1, 1, 1, 1)
            timed(f"augment: {op} (all views)", partial(_jitter, op, xx, f))
        coloured = aug._colour(xx, p)
        timed("augment: colour, the five in each view's order", partial(aug._colour, xx, p))
        timed("augment: affine + blur + crop", partial(aug._geometry, coloured, p))
        images = aug.views(x, p)
        timed(EVERYTHING, partial(_as_the_step_makes_them, aug, x, p, run.device))
        timed("augment: noise", partial(_noise, images))
        timed(
            f"teacher forwards of the {views} views",
            partial(_teacher_forwards, run, teacher, images, len(x), views),
        )
        timed("whole CoTTA step", partial(run.hook.cladapt_adapt, run=run, batch=Batch(x=x)))
    med = {k: statistics.median(v) for k, v in parts.items()}
    whole = med["whole CoTTA step"]
    aug_total = med[EVERYTHING]
    teach = med[f"teacher forwards of the {views} views"]
    med["rest of the step (student, anchor, clean teacher, EMA, restore)"] = (
        whole - aug_total - teach
    )
    return pd.DataFrame(
        [
            {"part": k, "ms": round(v, 1), "% of the step": round(100 * v / whole, 1)}
            for k, v in med.items()
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="small-cnn")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--small-batch", action="store_true")
    ap.add_argument("--speed", action="store_true", help="batched vs per-view augmentation")
    ap.add_argument("--profile", action="store_true", help="where one CoTTA batch's time goes")
    ap.add_argument("--strategies", default="cotta,vida,rotta")
    ap.add_argument("--batches", type=int, default=9)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/tta_cost.csv"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    catalog = load_catalog()
    if args.memory_only:
        table = memory_table(args, catalog)
    elif args.small_batch:
        table = small_batch_table(args, catalog)
    elif args.speed:
        table = speed_table(args, catalog)
    elif args.profile:
        table = profile_table(args, catalog)
    else:
        table = full_table(args, catalog)
    print(to_markdown(table))


if __name__ == "__main__":
    main()
