"""Published claims, evaluated on the rows at hand.

Each embedded stream declares, beside its definition (``streams/*.toml``, ``[[<stream>.claims]]``),
the claims of the papers it is a miniature of: "on ``metric``, strategy ``a`` is ``relation``
strategy ``b``" (``b = "*"``: every other strategy run on the stream with the same model and
weights as ``a``). A side written
``nmc+pretrained`` means that strategy on pre-trained weights (a model label ending in
``+pretrained``); a claim with ``sets`` only reads runs made with those values.

The rule, per (a, b): the mean over seeds of each side (the latest finished run per seed), the
difference d = mean_a - mean_b oriented so that d > 0 is what the claim says, and its standard
error se = sqrt(sd_a^2 / n_a + sd_b^2 / n_b).
- strict claims (``<``, ``>``): **held** if d > 2 se, **not held** if d < -2 se, **undecided** in
  between (too close to call at this many seeds);
- "no worse" claims (``<=``, ``>=``): **not held** if d < -2 se, else **held**;
- fewer than 2 seeds on a side: no spread to judge by; the sign of d is reported as **1 seed,
  indicative**;
- a side with no finished run: **not run**.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from cladapt.leaderboard.aggregate import finished_runs, params_of

RELATIONS = {"<": (-1, True), ">": (1, True), "<=": (-1, False), ">=": (1, False)}
Z = 2.0
RULE = (
    "held: the difference in the claimed direction exceeds 2 standard errors over seeds "
    "(no-worse claims: unless it is over 2 standard errors the other way); undecided: within "
    "2; one seed: indicative only"
)


@dataclass(frozen=True)
class Claim:
    stream: str
    paper: str
    claim: str
    metric: str
    a: str
    relation: str
    b: str
    setting: str | None = None
    sets: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_data(cls, stream: str, d: dict[str, Any], setting: str | None) -> Claim:
        if d.get("relation") not in RELATIONS:
            raise ValueError(f"claim of {stream}: relation must be one of {sorted(RELATIONS)}")
        return cls(
            stream=stream,
            paper=str(d["paper"]),
            claim=str(d["claim"]),
            metric=str(d["metric"]),
            a=str(d["a"]),
            relation=str(d["relation"]),
            b=str(d["b"]),
            setting=d.get("setting", setting),
            sets=dict(d.get("sets", {})),
        )

    @property
    def statement(self) -> str:
        return f"{self.a} {self.relation} {self.b} on {self.metric}"


@dataclass
class Verdict:
    claim: Claim
    status: str  # held | not held | undecided | 1 seed, indicative: ... | not run
    numbers: str  # the means, spreads and seeds behind it


def claims_of(catalog) -> list[Claim]:
    """Every claim the registered streams declare (built-in and plugin streams alike)."""
    out = []
    for entry in catalog.streams:
        for d in entry.extra.get("claims", ()):
            out.append(Claim.from_data(entry.name, d, entry.extra.get("claims_setting")))
    return out


def _side(runs: pd.DataFrame, name: str) -> pd.DataFrame:
    strategy, _, suffix = name.partition("+")
    rows = runs[runs.strategy == strategy]
    if suffix:
        return rows[rows.model.str.endswith("+" + suffix)]
    plain = rows[~rows.model.str.endswith("+pretrained")]
    return plain if len(plain) else rows  # e.g. mtil-mini: every model is pre-trained


def _matches(params_json: str, sets: dict[str, Any]) -> bool:
    params = params_of(params_json)
    return all(params.get(k) == v for k, v in sets.items())


def _stats(mean: float, sd: float, n: int) -> str:
    spread = f" ± {sd:.2f}" if n > 1 else ""
    return f"{mean:.2f}{spread} ({n} seed{'s' if n > 1 else ''})"


def _compare(claim: Claim, a: pd.Series, b: pd.Series, b_name: str) -> tuple[str, str]:
    sign, strict = RELATIONS[claim.relation]
    na, nb = len(a), len(b)
    ma, mb = float(a.mean()), float(b.mean())
    sa = float(a.std(ddof=1)) if na > 1 else math.nan
    sb = float(b.std(ddof=1)) if nb > 1 else math.nan
    numbers = f"{b_name} {_stats(mb, sb, nb)}"
    d = sign * (ma - mb)
    if min(na, nb) < 2:
        holds = d > 0 if strict else d >= 0
        return f"1 seed, indicative: {'holds' if holds else 'does not hold'}", numbers
    se = math.sqrt(sa**2 / na + sb**2 / nb)
    if d < -Z * se or (se == 0 and (d < 0 or (strict and d == 0))):
        return "not held", numbers
    if not strict or d > Z * se:
        return "held", numbers
    return "undecided", numbers


def evaluate(claims: list[Claim], df: pd.DataFrame) -> list[Verdict]:
    """Each claim's verdict on the results ``df`` (see the module docstring for the rule)."""
    runs = finished_runs(df) if len(df) else df
    verdicts = []
    for claim in claims:
        rows = runs[(runs.stream == claim.stream) & (runs.metric == claim.metric)]
        if claim.setting is not None:
            rows = rows[rows.setting == claim.setting]
        if claim.sets:
            rows = rows[[_matches(p, claim.sets) for p in rows.params_json]]
        a = _side(rows, claim.a)
        if claim.b == "*":  # every other learner on the same model and weights as ``a``
            same = rows[rows.model.isin(set(a.model))]
            others = list(dict.fromkeys(same.strategy))
        else:
            others = [claim.b]
        others = [o for o in dict.fromkeys(others) if o != claim.a]
        missing = [n for n in [claim.a, *others] if not len(_side(rows, n))] or (
            [claim.b] if not others else []
        )
        if missing:
            sets = " ".join(f"--set {k}={v}" for k, v in claim.sets.items())
            verdicts.append(
                Verdict(
                    claim,
                    "not run",
                    f"no finished run of {', '.join(missing)}" + (f" with {sets}" if sets else ""),
                )
            )
            continue
        results = [_compare(claim, a.value, _side(rows, o).value, o) for o in others]
        statuses = [s for s, _ in results]
        sd_a = float(a.value.std(ddof=1)) if len(a) > 1 else math.nan
        numbers = f"{claim.a} {_stats(float(a.value.mean()), sd_a, len(a))} vs " + ", ".join(
            n for _, n in results
        )
        if "not held" in statuses:
            status = "not held"
        elif all(s == "held" for s in statuses):
            status = "held"
        elif any(s.startswith("1 seed") for s in statuses):
            fails = any(s.endswith("does not hold") for s in statuses)
            status = f"1 seed, indicative: {'does not hold' if fails else 'holds'}"
        else:
            status = "undecided"
        verdicts.append(Verdict(claim, status, numbers))
    return verdicts
