"""cladapt's torch corruptions against the numpy references: speed and fidelity.

    # the references' pins conflict with today's opencv: install them beside, without deps
    pip install --target refs --no-deps imagecorruptions==1.1.2 imagenet-c==0.0.3 wand \
        scikit-image "opencv-python-headless>=4.8" imageio lazy-loader tifffile "setuptools<81"
    apt-get install libmagickwand-dev          # ImageMagick, for imagenet_c's motion blur
    PYTHONPATH=refs python benchmarks/corruptions.py [--reps 5] [--device auto]
        [--write-reference] [--corruptions motion_blur,...] [--severity 5] [--threads N]

References (both are run unmodified, with two shims for today's libraries: skimage's
``multichannel=`` argument becomes ``channel_axis=-1`` and ``np.float_`` is ``np.float64``):

- ``imagecorruptions`` 1.1.2 (bethgelab; numpy, any image size, ImageNet-C parameters);
- ``imagenet_c`` 0.0.3 (Hendrycks' own package: the code that made the released ImageNet-C;
  224 x 224 only; ImageMagick motion blur; its frost photographs are read from
  imagecorruptions, which ships the same files).

Inputs: 32 px, the first ``--n32`` digits test images (3 x 32 x 32); 224 px, ``--n224`` fixed
224 x 224 crops of scikit-learn's two sample photographs. cladapt runs with the references'
parameters (``parameters="imagenet"``) so that like is compared with like.

Speed: per corruption, severity 5 (``--severity``), ``--reps`` interleaved repetitions (ours,
then each reference, in turn) on one batch; the median time per batch and the speed-up (reference /
ours). Fidelity: for every corruption and severity, the perturbation d = corrupted - clean (in
grey levels) of ours and of the reference on the same inputs: mean, std, and the two-sample
Kolmogorov-Smirnov distance of the pooled d; beside it the KS distance between two reference
runs with different seeds (the reference's own sampling noise). ``--write-reference`` stores
the references' histograms of d (and the noise floor) in ``tests/data/corruption_reference.npz``
for the fidelity tests.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from cladapt.data.corruption_sets import reference_inputs
from cladapt.data.corruptions import CORRUPTIONS, STOCHASTIC_CORRUPTIONS, corrupt
from cladapt.device import resolve_device
from cladapt.leaderboard.aggregate import to_markdown

REFERENCE_FILE = (
    Path(__file__).resolve().parent.parent / "tests" / "data" / "corruption_reference.npz"
)
SLOW_REFERENCE_N = 8
STOCHASTIC = STOCHASTIC_CORRUPTIONS


def load_references(size: int) -> dict[str, object]:
    """name -> callable(uint8 HWC array, corruption, severity) -> array, for what is installed."""
    warnings.filterwarnings("ignore")
    refs: dict[str, object] = {}
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # removed in numpy 2; the references' plasma_fractal uses it
    # numpy 2 removed fromstring's binary mode; imagenet_c decodes ImageMagick's blob with it
    np.fromstring = lambda data, dtype=float, **kw: np.frombuffer(data, dtype=dtype)
    try:
        import imagecorruptions
        import imagecorruptions.corruptions as ic

        _shim_gaussian(ic)
        refs["imagecorruptions"] = lambda a, name, s: imagecorruptions.corrupt(
            a, corruption_name=name, severity=s
        )
    except Exception as exc:  # noqa: BLE001 - reported, the benchmark goes on
        print(f"imagecorruptions unavailable: {type(exc).__name__}: {exc}")
    if size == 224:
        try:
            from importlib import resources

            import imagenet_c.corruptions as inc

            _shim_gaussian(inc)
            frost_dir = resources.files("imagecorruptions").joinpath("frost")
            inc.resource_filename = lambda pkg, rel: str(frost_dir.joinpath(Path(rel).name))
            refs["imagenet_c"] = lambda a, name, s: np.asarray(
                getattr(inc, name)(Image.fromarray(a), s)
            )
        except Exception as exc:  # noqa: BLE001
            print(f"imagenet_c unavailable: {type(exc).__name__}: {exc}")
    return refs


def _shim_gaussian(module) -> None:
    original = module.gaussian

    def gaussian(image, sigma=1, multichannel=None, **kwargs):
        if multichannel:
            kwargs["channel_axis"] = -1
        return original(image, sigma=sigma, **kwargs)

    module.gaussian = gaussian


def run_reference(fn, arrays: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    np.random.seed(seed)
    return np.stack([np.uint8(np.asarray(fn(a, name, severity))) for a in arrays])


def run_ours(x: torch.Tensor, name: str, severity: int, seed: int) -> np.ndarray:
    y = corrupt(x, name, severity, seed, parameters="imagenet")
    return (y * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def speed(
    size: int,
    n: int,
    reps: int,
    device: torch.device,
    refs: dict,
    names: list[str],
    severity: int = 5,
) -> pd.DataFrame:
    arrays = reference_inputs(size, n)
    x = torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div(255).to(device)
    rows = []
    for name in names:
        times: dict[str, list[float]] = {"cladapt": []}
        failed: dict[str, str] = {}
        run_ours(x, name, severity, 0)  # warm-up (kernels, caches, libjpeg)
        for rep in range(reps):
            _sync(device)
            tic = time.perf_counter()
            corrupt(x, name, severity, rep, parameters="imagenet")
            _sync(device)
            times["cladapt"].append(time.perf_counter() - tic)
            for ref, fn in refs.items():
                if ref in failed:
                    continue
                tic = time.perf_counter()
                try:
                    run_reference(fn, arrays, name, severity, rep)
                except Exception as exc:  # noqa: BLE001
                    failed[ref] = f"fails: {type(exc).__name__}"
                    continue
                times.setdefault(ref, []).append(time.perf_counter() - tic)
        ours = statistics.median(times["cladapt"])
        row = {"size": size, "images": n, "corruption": name, "cladapt_ms": 1000 * ours}
        row["cladapt_images_per_s"] = n / ours
        for ref in refs:
            if ref in failed:
                row[f"{ref}_ms"], row[f"{ref}_speedup"] = failed[ref], float("nan")
            else:
                t = statistics.median(times[ref])
                row[f"{ref}_ms"], row[f"{ref}_speedup"] = 1000 * t, t / ours
        rows.append(row)
        cells = [
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in row.items()
            if k.endswith(("ms", "speedup"))
        ]
        print(f"  {size}px {name}: " + ", ".join(cells))
    return pd.DataFrame(rows)


def _hist(d: np.ndarray) -> np.ndarray:
    return np.bincount((d.astype(np.int64) + 255).ravel(), minlength=511)


def ks_from_hist(a: np.ndarray, b: np.ndarray) -> float:
    ca, cb = np.cumsum(a) / a.sum(), np.cumsum(b) / b.sum()
    return float(np.abs(ca - cb).max())


def hist_stats(h: np.ndarray) -> tuple[float, float]:
    v = np.arange(-255, 256)
    p = h / h.sum()
    mean = float((p * v).sum())
    return mean, float(np.sqrt((p * (v - mean) ** 2).sum()))


def fidelity(size: int, n: int, refs: dict, store: dict) -> pd.DataFrame:
    rows = []
    ref_name = "imagenet_c" if "imagenet_c" in refs else "imagecorruptions"
    for ref in refs:
        for name in CORRUPTIONS:
            # the references' glass blur takes ~2 s per 224 px image: fewer images there
            m = min(n, SLOW_REFERENCE_N) if name == "glass_blur" and size > 64 else n
            arrays = reference_inputs(size, m)
            x = torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div(255)
            clean = arrays.astype(np.int64)
            store[f"{size}/{name}/n"] = np.array([m])
            for severity in range(1, 6):
                try:
                    r1 = run_reference(refs[ref], arrays, name, severity, 1)
                    r2 = run_reference(refs[ref], arrays, name, severity, 2)
                except Exception as exc:  # noqa: BLE001
                    rows.append(
                        {
                            "size": size,
                            "reference": ref,
                            "corruption": name,
                            "severity": severity,
                            "note": f"fails: {type(exc).__name__}",
                        }
                    )
                    continue
                ours = run_ours(x, name, severity, 1).astype(np.int64)
                h_ref, h_ref2, h_ours = _hist(r1 - clean), _hist(r2 - clean), _hist(ours - clean)
                (m_ref, s_ref), (m_ours, s_ours) = hist_stats(h_ref), hist_stats(h_ours)
                row = {
                    "size": size,
                    "images": m,
                    "reference": ref,
                    "corruption": name,
                    "severity": severity,
                    "ref_mean": m_ref,
                    "ours_mean": m_ours,
                    "ref_std": s_ref,
                    "ours_std": s_ours,
                    "ks": ks_from_hist(h_ours, h_ref),
                    "ks_ref_vs_ref": ks_from_hist(h_ref2, h_ref),
                }
                if name not in STOCHASTIC:  # same input, deterministic: compare pixel by pixel
                    diff = np.abs(ours - r1.astype(np.int64))
                    row["max_abs_diff"] = int(diff.max())
                    row["within_1_level"] = float((diff <= 1).mean())
                rows.append(row)
                if ref == ref_name:
                    store[f"{size}/{name}/{severity}"] = h_ref
                    store[f"{size}/{name}/{severity}/floor"] = np.array([row["ks_ref_vs_ref"]])
            print(f"  {size}px {ref} {name} done")
    return pd.DataFrame(rows)


def geomean(values) -> float:
    v = [float(x) for x in values if isinstance(x, float) and np.isfinite(x) and x > 0]
    return float(np.exp(np.mean(np.log(v)))) if v else float("nan")


def summary_lines(table: pd.DataFrame) -> list[str]:
    lines = []
    for size, part in table.groupby("size"):
        for col in [c for c in part.columns if c.endswith("_speedup")]:
            values = pd.to_numeric(part[col], errors="coerce")
            if values.isna().all():
                continue
            slowest = part.loc[values.idxmin(), "corruption"]
            lines.append(
                f"{size}px: geometric-mean speed-up over {col[:-8]} {geomean(values):.2f}x over "
                f"{int(values.notna().sum())} corruptions (slowest: {values.min():.2f}x, {slowest})"
            )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n32", type=int, default=256)
    ap.add_argument("--n224", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-fidelity", action="store_true")
    ap.add_argument("--write-reference", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/corruptions")
    ap.add_argument("--corruptions", default="all", help="comma-separated names (speed only)")
    ap.add_argument("--severity", type=int, default=5, help="the severity timed")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's)")
    args = ap.parse_args()
    names = list(CORRUPTIONS) if args.corruptions == "all" else args.corruptions.split(",")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.set_grad_enabled(False)
    store: dict[str, np.ndarray] = {}
    speed_tables, fidelity_tables = [], []
    for size, n in ((32, args.n32), (224, args.n224)):
        refs = load_references(size)
        if not args.skip_speed:
            speed_tables.append(speed(size, n, args.reps, device, refs, names, args.severity))
        if not args.skip_fidelity and refs:
            fidelity_tables.append(fidelity(size, n, refs, store))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if speed_tables:
        table = pd.concat(speed_tables, ignore_index=True)
        table.to_csv(f"{args.out}_speed.csv", index=False)
        print(
            f"\nspeed, severity {args.severity}, torch on {device} ({torch.get_num_threads()} "
            "threads), "
            "median of interleaved repetitions"
        )
        print(to_markdown(table.round(2)))
        for line in summary_lines(table):
            print(line)
    if fidelity_tables:
        table = pd.concat(fidelity_tables, ignore_index=True)
        table.to_csv(f"{args.out}_fidelity.csv", index=False)
        print("\nfidelity (perturbation in grey levels)")
        print(to_markdown(table.round(3)))
    if args.write_reference and store:
        REFERENCE_FILE.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(REFERENCE_FILE, **store)
        print(f"wrote {REFERENCE_FILE}")


if __name__ == "__main__":
    main()
