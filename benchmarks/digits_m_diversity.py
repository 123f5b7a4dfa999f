"""How diverse digits-m's backgrounds are, and whether more photographs change DANN vs source-only.

    python benchmarks/digits_m_diversity.py [--seeds 3] [--no-runs]

MNIST-M (Ganin & Lempitsky 2015) blends each MNIST digit with a random patch of one of the
BSDS500 photographs (500 varied natural scenes of 481 x 321 pixels); digits-m blends with crops of
the three photographs scikit-learn and matplotlib ship. Part 1 measures the backgrounds a photo
set gives: photographs, non-overlapping 32 x 32 patches they hold (BSDS500: 500 x 15 x 10 = 75 000),
and over 4 000 random 32 x 32 crops the spread of the crops' mean colours (total variance of the
per-crop mean RGB) and their mean contrast (per-crop standard deviation). Part 2 (unless
``--no-runs``) trains source-only and DANN on digits -> digits-m with each photo set (the
gaussian_noise target left out) and prints the target accuracy over seeds.

Photo sets: ``shipped`` (what digits-m uses), ``+skimage`` (adds the natural colour photographs
scikit-image ships: astronaut, chelsea, coffee, rocket, the left motorcycle view; needs
``pip install scikit-image``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import numpy as np
import torch

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle")


def skimage_photos() -> list[np.ndarray]:
    import skimage.data

    out = []
    for name in SKIMAGE_PHOTOS:
        img = getattr(skimage.data, name)()
        out.append(np.ascontiguousarray(img[0] if name == "stereo_motorcycle" else img))
    return out


def photo_set(name: str) -> tuple[np.ndarray, ...]:
    from cladapt.data.uda_pairs import photographs

    shipped = list(photographs())
    return tuple(shipped if name == "shipped" else shipped + skimage_photos())


def statistics_of(photos: tuple[np.ndarray, ...], n: int = 4000, size: int = 32) -> dict:
    gen = torch.Generator().manual_seed(0)
    which = torch.randint(len(photos), (n,), generator=gen).tolist()
    crops = []
    for k in which:
        p = photos[k]
        top = int(torch.randint(p.shape[0] - size + 1, (1,), generator=gen))
        left = int(torch.randint(p.shape[1] - size + 1, (1,), generator=gen))
        crops.append(p[top : top + size, left : left + size].astype(np.float32) / 255)
    c = np.stack(crops)  # n, size, size, 3
    means = c.mean(axis=(1, 2))
    return {
        "photographs": len(photos),
        "32x32 patches": sum((p.shape[0] // size) * (p.shape[1] // size) for p in photos),
        "mean-colour variance": float(np.trace(np.cov(means.T))),
        "crop contrast": float(c.std(axis=(1, 2)).mean()),
    }


CELL = r"""
import json, sys, tempfile
from pathlib import Path
sys.path.insert(0, "benchmarks")
import digits_m_diversity as bench
import cladapt.data.uda_pairs as pairs
import cladapt.streams.common as common
from cladapt.results import read_results
from cladapt.runner import RunSpec, execute

photos, strategy, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
chosen = bench.photo_set(photos)
pairs.photographs = lambda: chosen
definitions = common.definitions

def digits_m_only():
    d = definitions()
    d["digits-uda"] = {**d["digits-uda"], "targets": d["digits-uda"]["targets"][:1]}
    return d

common.definitions = digits_m_only
import cladapt.streams.builtin as builtin
builtin.definitions = digits_m_only
from cladapt.manager import load_catalog
out = Path(tempfile.mkdtemp()) / "rows.csv"
execute(RunSpec("digits-uda", strategy, seed=seed, out=out), load_catalog())
rows = read_results(out)
rows = rows[(rows.metric == "target_error") & (rows.row_type == "eval")]
print(json.dumps(100 - float(rows.value.iloc[0])))
"""


def accuracy(photos: str, strategy: str, seed: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CELL, photos, strategy, str(seed)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-runs", action="store_true")
    args = parser.parse_args()
    sets = ["shipped", "+skimage"]
    print("photo set | photographs | 32x32 patches | mean-colour variance | crop contrast")
    for name in sets:
        s = statistics_of(photo_set(name))
        print(
            f"{name} | {s['photographs']} | {s['32x32 patches']} | "
            f"{s['mean-colour variance']:.4f} | {s['crop contrast']:.3f}"
        )
    print("BSDS500 (MNIST-M) | 500 | 75000 | (not measured offline) |")
    if args.no_runs:
        return
    print()
    print("photo set | strategy | digits-m accuracy % per seed | mean ± sd")
    for name in sets:
        for strategy in ("source-only", "dann"):
            accs = [accuracy(name, strategy, seed) for seed in range(args.seeds)]
            cells = " ".join(f"{a:.1f}" for a in accs)
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            print(f"{name} | {strategy} | {cells} | {statistics.mean(accs):.1f} ± {sd:.1f}")


if __name__ == "__main__":
    main()
