"""ZSCL's regime: how strongly its regularisers pull against the task loss, on mtil-mini's tiny
CLIP and on an open_clip ViT-B/16 at the paper's recipe.

    python benchmarks/zscl_regime.py [--seed 0] [--vit-steps 10] [--regimes R1,R2] [--out PATH]

ZSCL (Zheng et al., ICCV 2023) trains on each task with cross-entropy (CE) plus a distillation
towards the zero-shot model on reference images and sentences, plus ``l2 * sum ||theta -
theta_task_start||^2``. On mtil-mini it does not learn the tasks (docs/mtil.md), in the paper it
does. This script reads, per task and at chosen steps, the gradient norms of the three terms
separately (the same batch, the run's own losses: CE as the protocol computes it, distillation on
a fixed reference batch of the strategy's set, the L2 term as ZSCL adds it), and for fine-tuning
the relative drift ||theta - theta_task_start|| / ||theta_task_start|| of the trainable weights.

Regimes (``--regimes``, comma-separated; each appends its table to ``--out``):
- ``mtil-mini``: its defaults (clip-tiny-rn pre-trained, AdamW 3e-4, batch 32, 300 steps a task,
  BatchNorm frozen);
- ``mtil-mini-bn-train``: the same with BatchNorm in training mode (batch statistics);
- ``mtil-mini-bn-train-1e-5``: that at the paper's learning rate;
- ``vit-b-16``: open_clip's ViT-B/16 (149.6 M parameters; random weights unless
  ``--vit-pretrained openai`` or a weights file is given, as none can be downloaded here) at the
  paper's AdamW 1e-5 and batch 64 for ``--vit-steps`` steps a task, on mtil-mini's 32 x 32
  images (2 x 2 patches: the parameter count and learning rate of the paper, not its
  activations), the first ``--vit-tasks`` tasks with 60 test images each (evaluating ViT-B/16
  after every task is what costs on a CPU).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd
import torch

from cladapt.hookspecs import hookimpl
from cladapt.manager import load_catalog
from cladapt.runner import RunSpec, execute


def _norm(grads) -> float:
    return math.sqrt(sum(float(g.float().pow(2).sum()) for g in grads if g is not None))


class Probe:
    """Run plugin: gradient norms of each term at ``steps`` of every task; weight drift."""

    def __init__(self, steps: set[int]) -> None:
        self.steps = steps
        self.rows: list[dict] = []
        self.task = -1

    @hookimpl
    def cladapt_before_experience(self, run, experience) -> None:
        self.task += 1
        self.step = 0
        self.name = experience.name
        self.start = [p.detach().clone() for p in self._params(run)]

    @staticmethod
    def _params(run):
        return [p for p in run.model.parameters() if p.requires_grad]

    def _drift(self, run) -> float:
        pairs = zip(self._params(run), self.start, strict=True)
        num = sum(float((p.detach() - s).pow(2).sum()) for p, s in pairs)
        den = sum(float(s.pow(2).sum()) for s in self.start)
        return math.sqrt(num / den)

    @hookimpl
    def cladapt_extra_losses(self, run, batch, outputs):
        self.step += 1
        if self.step not in self.steps or outputs.loss is None:
            return None
        params = self._params(run)
        row = {"task": self.name, "step": self.step, "drift": self._drift(run)}
        row["ce"] = _norm(
            torch.autograd.grad(outputs.loss, params, retain_graph=True, allow_unused=True)
        )
        zscl = run.strategy
        if hasattr(zscl, "ref_images"):  # ZSCL: its two other terms, on a fixed reference batch
            from cladapt.plugins.clip_continual import distillation

            c = zscl.cfg
            n = c.ref_batch_size or len(batch)
            x = torch.stack([_image(zscl.ref_images[i]) for i in range(n)]).to(run.device)
            x = torch.nn.functional.interpolate(x, size=run.stream.input_shape[1:])
            with torch.no_grad():
                target = zscl.teacher.logits(zscl.teacher.encode_image(x), zscl.ref_text)
            student = run.model.logits(run.model.encode_image(x), zscl.ref_text)
            T = c.zscl_temperature
            distil = c.image_loss * distillation(target, student, T) + c.text_loss * distillation(
                target.t(), student.t(), T
            )
            row["distillation"] = _norm(torch.autograd.grad(distil, params, allow_unused=True))
            anchors = zip(params, zscl.task_start, strict=True)
            l2 = c.l2 * sum(((p - p0) ** 2).sum() for p, p0 in anchors)
            row["l2"] = _norm(torch.autograd.grad(l2, params, allow_unused=True)) if c.l2 else 0.0
        self.rows.append(row)
        return None

    @hookimpl
    def cladapt_after_experience(self, run, experience) -> None:
        self.rows.append({"task": self.name, "step": self.step, "drift": self._drift(run)})


def _image(item) -> torch.Tensor:
    x = item[0] if isinstance(item, (tuple, list)) else item
    return x.float() / 255 if x.dtype == torch.uint8 else x


def probe(catalog, strategy: str, steps: set[int], seed: int, **spec) -> pd.DataFrame:
    plugin = Probe(steps)
    execute(
        RunSpec("mtil-mini", strategy, seed=seed, out=None, run_plugins=(plugin,), **spec), catalog
    )
    return pd.DataFrame(plugin.rows)


def fewer_tasks_catalog(tasks: int, test: int):
    """The catalog with mtil-mini cut to its first ``tasks`` tasks and ``test`` test images each
    (what the ViT-B/16 measurement can afford on a CPU; the training data and recipe unchanged)."""
    import cladapt.streams.builtin as builtin

    full = builtin.definitions

    def fewer():
        d = full()
        mini = d["mtil-mini"]
        d["mtil-mini"] = {**mini, "tasks": mini["tasks"][:tasks], "test": test}
        return d

    builtin.definitions = fewer
    try:
        return load_catalog()
    finally:
        builtin.definitions = full


def regimes(k: int, vit_pretrained: bool | str = False) -> dict[str, tuple[dict, set[int]]]:
    early = {1, 2, 5, k}
    return {
        "mtil-mini": ({}, early | {150, 300}),
        "mtil-mini-bn-train": ({"sets": {"batchnorm": "train"}}, early | {150, 300}),
        "mtil-mini-bn-train-1e-5": (
            {"sets": {"batchnorm": "train", "lr": 1e-5}},
            early | {150, 300},
        ),
        "vit-b-16": (
            {
                "model": "ViT-B-16",
                "pretrained": vit_pretrained,
                "sets": {"lr": 1e-5, "batch_size": 64, "iterations": k, "warmup_steps": 0},
            },
            early,
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vit-steps", type=int, default=10)
    ap.add_argument("--vit-tasks", type=int, default=3, help="mtil-mini's first N tasks for ViT")
    ap.add_argument("--regimes", default=",".join(regimes(10)), help="comma-separated")
    ap.add_argument(
        "--vit-pretrained",
        default=None,
        metavar="TAG|FILE",
        help="ViT-B/16's weights (e.g. openai, from open_clip's cache; or a file): the regime "
        "of the pre-trained model, which this machine cannot download (default: random weights)",
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/zscl_regime.txt"))
    args = ap.parse_args()
    catalog = load_catalog()
    chosen = regimes(args.vit_steps, args.vit_pretrained or False)
    command = (
        f"python benchmarks/zscl_regime.py --seed {args.seed} --vit-steps {args.vit_steps} "
        f"--vit-tasks {args.vit_tasks} --regimes {args.regimes}"
    ) + (f" --vit-pretrained {args.vit_pretrained}" if args.vit_pretrained else "")
    lines = [command, ""]
    for label in args.regimes.split(","):
        spec, steps = chosen[label]
        where = catalog if label != "vit-b-16" else fewer_tasks_catalog(args.vit_tasks, 60)
        z = probe(where, "zscl", steps, args.seed, **spec)
        f = probe(where, "finetune", steps, args.seed, **spec)
        z = z.dropna(subset=["ce"])
        z["ce / distillation"] = z.ce / z.distillation
        z["ce / l2"] = z.ce / z.l2
        ratios = z.groupby("step")[["ce", "distillation", "l2", "ce / distillation", "ce / l2"]]
        drift = f.groupby("step").drift.median().rename("finetune drift (median over tasks)")
        table = ratios.median().join(drift, how="outer")
        lines += [f"{label} (medians over tasks)", table.to_string(float_format="{:.3g}".format)]
        first = z[(z.task == z.task.iloc[0]) & (z.step == 1)]
        if len(first):  # the first task starts at the zero-shot weights: nothing has moved yet
            row = first.iloc[0]
            lines.append(
                f"first task ({row.task}), before any step: ce {row.ce:.3g}, "
                f"distillation {row.distillation:.3g}"
            )
        lines.append("")
        print("\n".join(lines[-4:]), flush=True)
    with open(args.out, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
