"""Speed of cladapt's torch corruptions against the numpy reference package ``imagecorruptions``.

    pip install imagecorruptions "setuptools<81"   # the reference imports pkg_resources
    python benchmarks/corruptions.py [--n 256] [--severity 5] [--device auto]

One batch of ``--n`` digits test images at 32 x 32; per corruption: the torch batch op (on the
device; CUDA timings synchronise) and ``imagecorruptions.corrupt`` image by image on uint8 HWC
arrays, one process. The reference uses ImageNet parameters at every image size and its
``glass_blur`` / ``fog`` fail with numpy 2 and current scikit-image: those cells say why. Without
the package only the torch column is printed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from cladapt.data.corruptions import CORRUPTIONS, corrupt
from cladapt.data.digits import digits_split
from cladapt.device import resolve_device
from cladapt.leaderboard.aggregate import to_markdown


def _time(fn, device: torch.device) -> float:
    fn()  # warm-up (kernels, libjpeg)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    tic = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - tic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--severity", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    x = digits_split()[1].tensors[0][: args.n].to(device)
    arrays = (x.cpu().permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    try:
        from imagecorruptions import corrupt as reference
    except Exception as exc:  # not installed, or pkg_resources missing
        reference, why = None, f"{type(exc).__name__}: {exc}"
    rows = []
    for name in CORRUPTIONS:
        t_torch = _time(lambda n=name: corrupt(x, n, args.severity, 0), device)
        row = {"corruption": name, "torch_ms_per_batch": round(1000 * t_torch, 1)}
        if reference is None:
            row["reference"] = why[:60]
        else:
            try:
                t_ref = _time(
                    lambda n=name: [
                        reference(a, corruption_name=n, severity=args.severity) for a in arrays
                    ],
                    torch.device("cpu"),
                )
                row["imagecorruptions_ms_per_batch"] = round(1000 * t_ref, 1)
                row["speed_up"] = round(t_ref / t_torch, 1)
            except Exception as exc:
                row["imagecorruptions_ms_per_batch"] = f"fails: {type(exc).__name__}"
        rows.append(row)
    table = pd.DataFrame(rows)
    print(f"{args.n} images, 32x32, severity {args.severity}, torch on {device}")
    print(to_markdown(table))


if __name__ == "__main__":
    main()
