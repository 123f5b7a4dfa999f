"""Where the time of `cladapt bench` goes, and what the speed-ups buy.

    python benchmarks/bench_time.py --micro        # the per-batch costs behind the choices
    python benchmarks/bench_time.py                # `cladapt bench --profile`, empty cache, timed
    python benchmarks/bench_time.py --full         # the same for `cladapt bench --full`

``--micro`` measures, on one CPU thread: the small CNN's forward and forward+backward on a batch
of 64 images at 32 px in NCHW and channels-last memory formats, and CoTTA's augmentation with
the blur over the whole padded image (the reference's order) and over the kept centre only.

The default runs the quick suite exactly as the README's first command does (all cores, one
seed; ``--full``: every strategy, seeds 0-2), with an empty ``CLADAPT_CACHE`` so that the one-off
preparation (generated streams; the embedded models ship) is included, and writes its profile
table and the elapsed wall time to ``benchmarks/results/bench_quick.txt`` (``bench_full.txt``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _time(fn, repeat: int = 20) -> float:
    fn()
    tic = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - tic) / repeat * 1000


def micro() -> None:
    import torch

    from cladapt.augment import Augment
    from cladapt.models.small_cnn import SmallCNN

    torch.set_num_threads(1)
    x = torch.rand(64, 3, 32, 32)
    print("one CPU thread, batch 64 at 32 px, ms per batch")
    for fmt in (torch.contiguous_format, torch.channels_last):
        net = SmallCNN(10).train().to(memory_format=fmt)

        def fwd(net=net):
            with torch.no_grad():
                net(x)

        def fwd_bwd(net=net):
            net.zero_grad(set_to_none=True)
            net(x).logsumexp(1).mean().backward()

        name = "channels_last" if fmt == torch.channels_last else "NCHW"
        print(
            f"  small-cnn {name:13s} forward {_time(fwd):6.1f}   forward+backward "
            f"{_time(fwd_bwd):6.1f}"
        )
    aug = Augment(32)
    params = aug.draw(32)
    per_view = _time(lambda: [aug.reference_view(x, params, v) for v in range(32)])
    batched = _time(lambda: aug.views(x, params))
    print(f"  CoTTA augmentation, 32 views one by one (the reference's way) {per_view:6.1f}")
    print(f"  CoTTA augmentation, 32 views at once (cladapt.augment)        {batched:6.1f}")


def full(workers: int | None, suite_full: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, CLADAPT_CACHE=str(Path(tmp) / "cache"))
        cmd = ["cladapt", "bench", "--profile", "--out", f"{tmp}/r.csv", "--site", f"{tmp}/site"]
        cmd += ["--full"] if suite_full else []
        if workers:
            cmd += ["--workers", str(workers)]
        tic = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - tic
    out = proc.stdout[proc.stdout.find("bench profile") :] if "bench profile" in proc.stdout else ""
    report = f"{out}\n`cladapt bench` elapsed: {elapsed / 60:.1f} min (exit {proc.returncode})\n"
    print(report)
    if proc.returncode:
        print(proc.stderr[-3000:], file=sys.stderr)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"bench_{'full' if suite_full else 'quick'}.txt").write_text(report)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micro", action="store_true", help="per-batch costs only")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--full", action="store_true", help="cladapt bench --full")
    args = parser.parse_args()
    micro() if args.micro else full(args.workers, args.full)
