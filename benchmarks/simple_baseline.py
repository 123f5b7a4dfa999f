"""The simple-baseline claim on embedded streams: a nearest-mean classifier over frozen
*pre-trained* features against fine-tuning-based continual learners.

    python benchmarks/simple_baseline.py [--streams digits nevis-mini] [--seeds 0 1 2]

Janson et al. 2022 ("A simple baseline that questions the use of pretrained-models in continual
learning"; Pauljanson002/pretrained-cl): NMC on a frozen ImageNet-pre-trained backbone is
competitive with continual fine-tuning. Miniature: the small CNN pre-trained by the harness on
52 rendered letters (``small-cnn --pretrained``, ``cladapt/models/letters_pretrain.py``; no digit,
no nevis-mini task), then nmc / finetune / lwf / ewc / joint on ``digits`` (class-incremental,
5 tasks of 2 digits, the paper's setting) and ``nevis-mini`` (its default task-incremental
setting and model selection), each from the pre-trained and from a random initialisation.
Also reports the pre-trained network's accuracy on 2 000 held-out rendered letters. Writes
``benchmarks/results/simple_baseline.csv`` (all run rows; not committed, 7 MB) and
``simple_baseline_summary.csv`` (summary rows) and prints markdown tables: final average
accuracy, average incremental accuracy and forgetting, mean ± std over seeds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from cladapt.leaderboard.aggregate import to_markdown
from cladapt.manager import load_catalog
from cladapt.results import read_results
from cladapt.runner import RunSpec, execute

STRATEGIES = ["nmc", "finetune", "lwf", "ewc", "joint"]
SETTINGS = {"digits": "class-incremental", "nevis-mini": "task-incremental"}


@torch.no_grad()
def letters_accuracy() -> float:
    from cladapt.data.uda_pairs import render_font_symbols
    from cladapt.models.checkpoints import load_cached
    from cladapt.models.letters_pretrain import LETTERS, ensure_pretrained
    from cladapt.models.small_cnn import SmallCNN

    model = SmallCNN(num_classes=len(LETTERS))
    load_cached(model, ensure_pretrained((3, 32, 32)))
    x, y = render_font_symbols(LETTERS, 2000, 32, seed=12345)  # not the pre-training draw
    return 100.0 * float((model.eval()(x).argmax(1) == y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/simple_baseline.csv"))
    ap.add_argument(
        "--report-only", action="store_true", help="only re-print the tables from an existing --out"
    )
    args = ap.parse_args()
    if not args.report_only:
        run_all(args.streams, args.seeds, args.out)
    report(args.out)


def run_all(streams: list[str], seeds: list[int], out: Path) -> None:
    catalog = load_catalog()
    acc = letters_accuracy()
    print(f"pre-trained small CNN on held-out rendered letters: {acc:.1f} % (52 classes)")
    if out.exists():
        out.unlink()
    for stream in streams:
        for pretrained in (True, False):
            for strategy in STRATEGIES:
                for seed in seeds:
                    spec = RunSpec(
                        stream,
                        strategy,
                        seed=seed,
                        setting=SETTINGS[stream],
                        pretrained=pretrained,
                        out=out,
                    )
                    summary = execute(spec, catalog).summary
                    print(stream, strategy, pretrained, seed, round(summary["avg_accuracy"], 2))


def report(out: Path) -> None:
    """Print the tables and keep the summary rows beside the full file (which is large)."""
    df = read_results(out)
    df = df[df.row_type == "summary"].copy()
    df.to_csv(out.with_name(out.stem + "_summary.csv"), index=False)
    df["init"] = df.params_json.str.contains('"pretrained": true').map(
        {True: "pre-trained (letters)", False: "random"}
    )
    rows = []
    for (stream, init, strategy), g in df.groupby(["stream", "init", "strategy"], sort=False):
        row = {"stream": stream, "init": init, "strategy": strategy}
        for metric in ("avg_accuracy", "avg_incremental_accuracy", "forgetting"):
            v = g[g.metric == metric].value
            row[metric] = f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0:.1f}"
        rows.append(row)
    print(to_markdown(pd.DataFrame(rows)))


if __name__ == "__main__":
    main()
