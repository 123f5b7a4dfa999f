"""Why mtil-mini's tasks gained little from training (its first design: caption world v2, the
ViT ``clip-tiny``; committed output from commit 591332f): the pre-trained tiny CLIP's image tower
against a randomly initialised one, each trained with a fresh linear head on each task.

    python benchmarks/studies/mtil_mini_probe.py [--steps 300] [--seeds 0,1,2]

For every mtil-mini task (its own generated train/test sets, as the stream builds them): the
image tower of ``clip-tiny`` (the harness's cached pre-trained weights, or the same architecture
freshly initialised) plus a linear layer on its 64-d features, all trained with AdamW 1e-3 for
``--steps`` batches of 32 (cross-entropy, features scaled by 10 as CLIP's logit scale would); test
accuracy, mean ± std over seeds (the seed sets the head, the initialisation of the random tower
and the batch order). Also prints the pre-trained model's zero-shot accuracy with the task's
prompts and the effective rank (exp of the entropy of the normalised
squared singular values) of the pre-trained model's image features on each task's test images.

Decided: mtil-mini's first design could not show learning (six of seven tasks at their ceiling
after pre-training; the ViT learned digits worse from its pre-trained features than from random
ones), which led to ``studies/mtil_mini_design.py`` and the current stream (docs/mtil.md).
"""

from __future__ import annotations

import argparse
import statistics
import zlib

import torch
import torch.nn.functional as F

from cladapt.data.mtil_mini import TASKS, task_split
from cladapt.models.clip_pretrain import tiny_clip_model as tiny_clip

TRAIN, TEST, SHAPE = 400, 300, (3, 32, 32)  # mtil-mini's first design


def effective_rank(features: torch.Tensor) -> float:
    s = torch.linalg.svdvals(features - features.mean(0))
    p = s**2 / (s**2).sum()
    return float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))


def zero_shot_model(task: str) -> torch.nn.Module:
    t = TASKS[task]
    prompts = [[template.format(c) for template in t.templates] for c in t.classes]
    return tiny_clip(len(t.classes), SHAPE, pretrained=True, prompts=prompts).eval()


def probe(task: str, pretrained: bool, steps: int, seed: int) -> float:
    train, test = task_split(TASKS[task], TRAIN, TEST, seed=zlib.crc32(task.encode()))
    torch.manual_seed(seed)
    model = tiny_clip(1, SHAPE, pretrained=pretrained)
    head = torch.nn.Linear(64, len(TASKS[task].classes))
    opt = torch.optim.AdamW([*model.clip.visual.parameters(), *head.parameters()], lr=1e-3)
    x, y = train.tensors
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        i = torch.randint(0, len(y), (32,), generator=g)
        loss = F.cross_entropy(head(10 * model.encode_image(x[i])), y[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = head(10 * model.encode_image(test.tensors[0])).argmax(1)
    return 100.0 * float((pred == test.tensors[1]).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    pre = tiny_clip(1, SHAPE, pretrained=True).eval()
    print(f"image tower + linear head, {args.steps} steps, seeds {args.seeds}; test accuracy (%)")
    print("| task | zero-shot | effective rank (pre-trained) | pre-trained tower | random tower |")
    print("|---|---|---|---|---|")
    for task in TASKS:
        _, test = task_split(TASKS[task], TRAIN, TEST, seed=zlib.crc32(task.encode()))
        x, y = test.tensors
        with torch.no_grad():
            rank = effective_rank(pre.encode_image(x))
            zero_shot = 100.0 * float((zero_shot_model(task)(x).argmax(1) == y).float().mean())
        cells = []
        for pretrained in (True, False):
            accs = [probe(task, pretrained, args.steps, s) for s in seeds]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            cells.append(f"{statistics.mean(accs):.1f} ± {sd:.1f}")
        row = f"| {task} | {zero_shot:.1f} | {rank:.1f} | " + " | ".join(cells) + " |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
