"""The digits test-time streams' source model: clean error and error per shift level.

    python benchmarks/source_models.py [--recipes augmented plain]

Trains (or loads from the cache) the SmallCNN source model of ``digits-c`` / ``digits-shift``
with the harness's recipe (``augmented``: random crops of the 4-pixel zero-padded image, no
flips for digits) and, for comparison, the old recipe without augmentation (``plain``), then
reports for each: the clean test error, the error under each ``digits-shift`` shift over a grid
of levels (to choose the stream's levels), and under each ``digits-c`` corruption at severity 5.
Writes ``benchmarks/results/source_models.csv`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from cladapt.data.shifts import SHIFTS
from cladapt.leaderboard.aggregate import to_markdown
from cladapt.manager import load_catalog
from cladapt.models.small_cnn import SmallCNN
from cladapt.models.source import SourceRecipe, get_source_model

GRID = {  # mild to severe; the stream's levels (streams/digits.toml) are chosen from these
    "gaussian_noise": [0.05, 0.08, 0.1, 0.12, 0.15, 0.2],
    "salt_pepper": [0.005, 0.01, 0.02, 0.03, 0.05, 0.1],
    "blur": [1.5, 2.0, 2.5, 3.0, 3.5, 4.0],
    "contrast": [0.8, 0.7, 0.6, 0.5, 0.4, 0.3],
    "brightness": [0.1, 0.15, 0.2, 0.25, 0.3, 0.4],
}
RECIPES = {"augmented": SourceRecipe(), "plain": SourceRecipe(translate=0)}


@torch.no_grad()
def error(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * float((model(x).argmax(1) != y).float().mean())


def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(xs), torch.as_tensor(ys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/source_models.csv"))
    args = ap.parse_args()
    catalog = load_catalog(entry_points=False)
    shift_stream = catalog.streams.get("digits-shift").factory()
    c_stream = catalog.streams.get("digits-c").factory()
    clean_x, clean_y = tensors(shift_stream.source.test)
    rows = []
    for name in args.recipes:
        model = get_source_model(
            shift_stream, "small-cnn", SmallCNN, torch.device("cpu"), RECIPES[name]
        ).eval()
        rows.append(
            dict(
                recipe=name,
                stream="clean",
                domain="clean",
                level=0.0,
                error=error(model, clean_x, clean_y),
            )
        )
        g = torch.Generator()
        for shift, levels in GRID.items():
            for level in levels:
                g.manual_seed(0)
                x = SHIFTS[shift](clean_x, g, level)
                rows.append(
                    dict(
                        recipe=name,
                        stream="digits-shift",
                        domain=shift,
                        level=level,
                        error=error(model, x, clean_y),
                    )
                )
        for exp in c_stream.experiences:
            x, y = tensors(exp.test)
            rows.append(
                dict(
                    recipe=name,
                    stream="digits-c",
                    domain=exp.name,
                    level=5.0,
                    error=error(model, x, y),
                )
            )
        clean = next(r for r in rows if r["recipe"] == name and r["stream"] == "clean")
        print(f"{name}: clean error {clean['error']:.1f} %", flush=True)
    df = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    clean = df[df.stream == "clean"].set_index("recipe").error.round(1)
    print("\nclean test error %:", clean.to_dict())
    shift = df[df.stream == "digits-shift"]
    for recipe in args.recipes:  # one row per shift: "level: error %" from mild to severe
        part = shift[shift.recipe == recipe]
        cells = part.groupby("domain", sort=False).apply(
            lambda g: [f"{lv:g}: {e:.1f}" for lv, e in zip(g.level, g.error, strict=True)],
            include_groups=False,
        )
        table = pd.DataFrame(cells.tolist(), index=cells.index).reset_index()
        table.columns = ["shift"] + [f"level {i + 1}" for i in range(table.shape[1] - 1)]
        print(f"\n### digits-shift source error % ({recipe} recipe)\n")
        print(to_markdown(table))
    corr = df[df.stream == "digits-c"].pivot(index="domain", columns="recipe", values="error")
    corr = corr.reindex([e.name for e in c_stream.experiences])[args.recipes].round(1)
    print("\n### digits-c (severity 5) source error %\n")
    print(to_markdown(corr.reset_index()))
    c = df[df.stream == "digits-c"].groupby("recipe").error.mean().round(1)
    print("\ndigits-c mean source error:", c.to_dict())


if __name__ == "__main__":
    main()
