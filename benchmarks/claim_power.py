"""How many seeds each embedded stream's claims need to be decided.

    python benchmarks/claim_power.py [--results leaderboard/results.csv] [--stream digits-uda]

The claims rule (``cladapt.leaderboard.claims``) calls a strict claim held when the difference of
the two sides' means over seeds exceeds 2 standard errors. With per-seed standard deviations
s_a, s_b and a true difference d, n seeds per side decide it with probability ~95 % when
d > (2 + 1.645) * sqrt((s_a^2 + s_b^2) / n), i.e. n >= 13.3 (s_a^2 + s_b^2) / d^2. This script
reads the rows at hand, estimates d and the standard deviations from them, and prints per claim
the n that rule asks for, and per stream the largest (at least 3) next to the ``bench_seeds`` its
definition sets. Estimates from 3 seeds are rough; ``benchmarks/uda_seed_noise.py`` measures the
spread of one strategy on a grid of seeds.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from cladapt.leaderboard.aggregate import finished_runs
from cladapt.leaderboard.claims import RELATIONS, Z, _side, claims_of
from cladapt.manager import load_catalog

POWER_Z = 1.645  # one-sided 95 %


def seeds_needed(d: float, sd_a: float, sd_b: float) -> float:
    if d <= 0:
        return math.inf  # the measured difference is the other way: no n decides it as held
    return (Z + POWER_Z) ** 2 * (sd_a**2 + sd_b**2) / d**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, action="append")
    parser.add_argument("--stream", action="append", help="only these streams")
    args = parser.parse_args()
    frames = [pd.read_csv(p) for p in (args.results or [Path("leaderboard/results.csv")])]
    runs = finished_runs(pd.concat(frames, ignore_index=True))
    catalog = load_catalog()
    per_stream: dict[str, int] = {}
    print("stream | claim | d | sd a | sd b | seeds now | seeds for 95 % power")
    for claim in claims_of(catalog):
        if args.stream and claim.stream not in args.stream:
            continue
        rows = runs[(runs.stream == claim.stream) & (runs.metric == claim.metric)]
        if claim.setting is not None:
            rows = rows[rows.setting == claim.setting]
        a = _side(rows, claim.a).value
        b = _side(rows, claim.b).value if claim.b != "*" else None
        if b is None or len(a) < 2 or len(b) < 2:
            continue  # "every other" claims and unrun sides: not sized here
        sign, strict = RELATIONS[claim.relation]
        if not strict:
            continue
        d = sign * (a.mean() - b.mean())
        n = seeds_needed(d, a.std(ddof=1), b.std(ddof=1))
        need = max(3, math.ceil(n)) if math.isfinite(n) else None
        if need is not None:
            per_stream[claim.stream] = max(per_stream.get(claim.stream, 3), need)
        print(
            f"{claim.stream} | {claim.statement} | {d:.2f} | {a.std(ddof=1):.2f} | "
            f"{b.std(ddof=1):.2f} | {min(len(a), len(b))} | {need if need else 'not held'}"
        )
    print()
    for stream, need in per_stream.items():
        entry = catalog.streams.get(stream)
        print(
            f"{stream}: {need} seeds needed; definition's bench_seeds = "
            f"{entry.extra.get('bench_seeds', 3)}"
        )


if __name__ == "__main__":
    main()
