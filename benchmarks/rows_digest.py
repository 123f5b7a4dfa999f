"""A digest of the rows a fixed set of quick runs writes: the same digest at two commits shows that
a change between them left every result (and every recorded parameter) as it was.

    python benchmarks/rows_digest.py [--out rows.json]          # ~1 min on 2 cores

Runs, on the CPU with 2 torch threads and seed 0, short versions of one run per protocol path:
continual fine-tuning (alone, with ``--with lwf``, EWC), nevis-mini with dm_nevis' model selection,
mtil-mini ZSCL, Tent / CoTTA / ViDA on digits-shift and DANN on digits-uda. Every row except the
per-run columns (run id, start time, notes) and the timing and memory metrics is kept; prints
the SHA-256 of the rows as sorted JSON (written to ``--out`` when given, to diff two commits).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch

from cladapt.runner import RunSpec, execute

RUNS = [
    ("digits", "finetune", {"epochs": "1"}, ()),
    ("digits", "finetune", {"epochs": "1"}, ("lwf",)),
    ("digits", "ewc", {"epochs": "1"}, ()),
    ("digits-shift", "tent", {}, ()),
    ("digits-shift", "cotta", {}, ()),
    ("digits-shift", "vida", {}, ()),
    ("digits-uda", "dann", {"iterations": "60"}, ()),
    ("nevis-mini", "finetune", {"iterations": "20"}, ()),
    ("mtil-mini", "zscl", {"iterations": "10"}, ()),
]
VOLATILE_COLUMNS = {"run_id", "started_at", "note"}
VOLATILE_METRICS = {"wall_time_s", "images_per_s", "peak_memory_mb"}


def rows_of(stream: str, strategy: str, sets: dict, regularizers: tuple) -> list[dict]:
    rows: list[dict] = []
    spec = RunSpec(stream, strategy, dict(sets), out=None, device="cpu", regularizers=regularizers)
    try:
        execute(spec, sink=rows.extend)
    except Exception as exc:  # noqa: BLE001 - a failure is part of what is compared
        rows.append({"error": f"{type(exc).__name__}: {exc}"})
    return [
        {k: v for k, v in r.items() if k not in VOLATILE_COLUMNS}
        for r in rows
        if r.get("metric") not in VOLATILE_METRICS
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    for stream, strategy, sets, regularizers in RUNS:
        rows += rows_of(stream, strategy, sets, regularizers)
        print(f"{strategy} on {stream} {'+'.join(regularizers)}: {len(rows)} rows so far")
    text = json.dumps(rows, indent=0, sort_keys=True, default=str)
    if args.out is not None:
        args.out.write_text(text)
    print(f"{len(rows)} rows, sha256 {hashlib.sha256(text.encode()).hexdigest()}")


if __name__ == "__main__":
    main()
