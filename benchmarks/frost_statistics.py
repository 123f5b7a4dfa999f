"""Measure the reference frost crops and write ``cladapt/data/frost_stats.json``.

    pip install imagecorruptions "setuptools<81" opencv-python   # the photographs and cv2
    python benchmarks/frost_statistics.py [--crops 3000]

The reference ``frost`` corruption blends a random crop of one of its frost photographs (shipped
with hendrycks/robustness and with the ``imagecorruptions`` package; ``np.random.randint(5)``
picks among the first five). cladapt cannot ship the photographs, so it renders a texture with
the same statistics (``cladapt.data.corruptions.frost_texture``). This script measures, for each
way the references crop the photographs:

- ``cifar``: make_cifar_c.py, photograph resized by 0.2 (cv2 INTER_LINEAR), 32 x 32 crops;
- ``imagenet``: make_imagenet_c.py / ``imagenet_c``, 224 x 224 crops at full resolution;
- ``imagenet@32``: ``imagecorruptions`` at 32 px, photograph resized by 1.1 (INTER_CUBIC), 32
  x 32 crops,

the pooled quantiles of each RGB channel, the share of the (normal-score) variance that lies
between crops rather than within them, and the plasma-fractal decay whose within-crop lag-1
correlation is closest to the photographs'. Only these numbers are stored, not the images.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from scipy.special import ndtri

OUT = Path(__file__).resolve().parent.parent / "cladapt" / "data" / "frost_stats.json"
FILES = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"]
REGIMES = {
    "cifar": (0.2, 32, "linear"),
    "imagenet": (1.0, 224, None),
    "imagenet@32": (1.1, 32, "cubic"),
}
QUANTILES = 257
DECAYS = [0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.4, 1.6, 2.0]


def photographs(scale: float, interpolation: str | None) -> list[np.ndarray]:
    import cv2

    folder = resources.files("imagecorruptions").joinpath("frost")
    images = []
    for name in FILES:
        bgr = cv2.imread(str(folder.joinpath(name)))
        if interpolation is not None:
            flag = cv2.INTER_LINEAR if interpolation == "linear" else cv2.INTER_CUBIC
            if interpolation == "cubic":  # imagecorruptions: ceil(shape * factor)
                size = (int(np.ceil(bgr.shape[1] * scale)), int(np.ceil(bgr.shape[0] * scale)))
                bgr = cv2.resize(bgr, dsize=size, interpolation=flag)
            else:
                bgr = cv2.resize(bgr, (0, 0), fx=scale, fy=scale, interpolation=flag)
        images.append(bgr[..., ::-1].astype(np.float64))  # RGB, as the references blend
    return images


def crops(images: list[np.ndarray], size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((n, size, size, 3))
    for k in range(n):
        img = images[rng.integers(len(images))]
        y = rng.integers(0, img.shape[0] - size)
        x = rng.integers(0, img.shape[1] - size)
        out[k] = img[y : y + size, x : x + size]
    return out


def normal_scores(values: np.ndarray) -> np.ndarray:
    ranks = values.ravel().argsort().argsort().reshape(values.shape)
    return ndtri((ranks + 0.5) / values.size)


def lag1(z: np.ndarray) -> float:
    """Mean lag-1 correlation (rows and columns) of per-crop centred scores (n, h, w)."""
    z = z - z.mean(axis=(1, 2), keepdims=True)
    var = (z**2).mean()
    return float(((z[:, 1:] * z[:, :-1]).mean() + (z[:, :, 1:] * z[:, :, :-1]).mean()) / (2 * var))


def fractal_lag1(size: int, decay: float, n: int = 64) -> float:
    from cladapt.data.corruptions import plasma_fractal

    side = 1 << (size - 1).bit_length()
    like = torch.zeros(1)
    field = plasma_fractal(n, side, decay, torch.Generator().manual_seed(0), like)[:, :size, :size]
    ranks = field.flatten(1).argsort(1).argsort(1).double()
    z = ndtri(((ranks + 0.5) / ranks.shape[1]).numpy()).reshape(n, size, size)
    return lag1(z)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crops", type=int, default=3000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    out = {}
    for regime, (scale, size, interpolation) in REGIMES.items():
        sample = crops(photographs(scale, interpolation), size, args.crops, rng)
        q = np.linspace(0, 1, QUANTILES)
        quantiles = [np.quantile(sample[..., c], q).round(3).tolist() for c in range(3)]
        z = normal_scores(sample.mean(-1))
        between = float(z.mean(axis=(1, 2)).var() / z.var())
        target = lag1(z)
        decay = min(DECAYS, key=lambda d: abs(fractal_lag1(size, d) - target))
        out[regime] = {
            "crop_size": size,
            "photograph_scale": scale,
            "crops_measured": args.crops,
            "mean_rgb": [round(float(sample[..., c].mean()), 2) for c in range(3)],
            "std_rgb": [round(float(sample[..., c].std()), 2) for c in range(3)],
            "between_crop_share": round(between, 4),
            "within_crop_lag1": round(target, 4),
            "fractal_decay": decay,
            "quantiles": quantiles,
        }
        print(
            f"{regime}: mean {out[regime]['mean_rgb']}, std {out[regime]['std_rgb']}, "
            f"between-crop share {between:.3f}, lag-1 {target:.3f} -> decay {decay}"
        )
    source = "frost1-5 of hendrycks/robustness (as shipped in imagecorruptions)"
    OUT.write_text(json.dumps({"source": source, **out}, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
