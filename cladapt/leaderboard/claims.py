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
  indicative** — except on a metric that no seed changes (the activation bytes saved for
  backward, parameter counts), where one run decides;
- a side with no finished run: **not run**, with the runs it needs.

A claim reads the runs of one model: the stream's default model, or the one it names (``model
= "tiny-vit"``: ViDA's claim on a ViT, as every ViDA result is; the full bench makes those runs
from the stream's ``model_variants``), so runs of other models never mix into its means.

A stream with several targets (a UDA stream's ``claim_targets``) has each of its claims judged
once per target, on that target's rows, as the papers report each source -> target pair (a mean
over targets could let an easy target hide a failure on a hard one).

A side is matched by the strategy its runs were made with: a claim with ``sets`` reads the runs
whose configuration has those values (the leaderboard lists them as ``alpha-bn
[batch_size=4]``), a claim without reads default runs only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from cladapt.leaderboard.aggregate import configurations, finished_runs, params_of, run_strategies

RELATIONS = {"<": (-1, True), ">": (1, True), "<=": (-1, False), ">=": (1, False)}
# metrics that do not depend on the seed (docs/metrics.md): one run of each side decides
SEED_FREE = frozenset({"saved_activation_mb", "trainable_params", "peak_trainable_params"})
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
    target: str | None = None  # one target of a UDA stream: read from its per-target rows
    model: str | None = None  # the model whose runs it reads (None: any)
    # other streams whose pages show it (a cost probe's claim beside the miniature's rows)
    shown_with: tuple[str, ...] = ()
    default_model: bool = True  # ``model`` is the stream's default (not said in the statement)

    @classmethod
    def from_data(
        cls,
        stream: str,
        d: dict[str, Any],
        setting: str | None,
        target: str | None = None,
        default_model: str | None = None,
    ) -> Claim:
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
            target=target,
            model=d.get("model", default_model),
            default_model="model" not in d,
            shown_with=tuple(d.get("shown_with", ())),
        )

    @property
    def statement(self) -> str:
        where = f" on target {self.target}" if self.target else ""
        model = "" if self.default_model or not self.model else f" with {self.model}"
        return f"{self.a} {self.relation} {self.b} on {self.metric}{where}{model}"


@dataclass
class Verdict:
    claim: Claim
    status: str  # held | not held | undecided | 1 seed, indicative: ... | not run
    numbers: str  # the means, spreads and seeds behind it
    missing: list[str] = field(default_factory=list)  # not run: the sides without a run

    def command(self) -> str:
        """The command that makes the runs a claim that was not run needs (its stream's seeds,
        with the claim's ``--set`` values: ``bench --full`` makes a claim's configured runs)."""
        names = sorted({m.partition("+")[0] for m in self.missing})
        return f"cladapt bench --full --stream {self.claim.stream} --strategy {','.join(names)}"


def claims_of(catalog) -> list[Claim]:
    """Every claim the registered streams declare (built-in and plugin streams alike). A stream
    with several targets (``claim_targets``: a UDA stream's) has each claim once per target, as
    the papers' tables are per source -> target pair."""
    out = []
    for entry in catalog.streams:
        targets = tuple(entry.extra.get("claim_targets", ())) or (None,)
        model = (entry.extra.get("defaults") or {}).get("model")
        for d in entry.extra.get("claims", ()):
            setting = entry.extra.get("claims_setting")
            out += [Claim.from_data(entry.name, d, setting, t, model) for t in targets]
    return out


def _side(runs: pd.DataFrame, name: str) -> pd.DataFrame:
    strategy, _, suffix = name.partition("+")
    rows = runs[runs.run_strategy == strategy]
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
    if claim.metric in SEED_FREE:  # the same on every seed: the sign of d decides
        holds = d > 0 if strict else d >= 0
        return ("held" if holds else "not held"), numbers
    if min(na, nb) < 2:
        holds = d > 0 if strict else d >= 0
        return f"1 seed, indicative: {'holds' if holds else 'does not hold'}", numbers
    se = math.sqrt(sa**2 / na + sb**2 / nb)
    if d < -Z * se or (se == 0 and (d < 0 or (strict and d == 0))):
        return "not held", numbers
    if not strict or d > Z * se:
        return "held", numbers
    return "undecided", numbers


def _target_rows(df: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The per-target rows (``eval`` rows) of the finished runs, with their runs' columns."""
    evals = df[(df.row_type == "eval") & df.run_id.isin(set(runs.run_id))]
    per_run = runs.drop_duplicates("run_id").set_index("run_id")[["run_strategy", "configured"]]
    return evals.join(per_run, on="run_id")


def evaluate(claims: list[Claim], df: pd.DataFrame) -> list[Verdict]:
    """Each claim's verdict on the results ``df`` (see the module docstring for the rule)."""
    runs = finished_runs(df) if len(df) else df
    runs = runs.assign(run_strategy=run_strategies(runs), configured=configurations(runs) != "")
    targets = _target_rows(df, runs) if any(c.target for c in claims) else runs.iloc[:0]
    verdicts = []
    for claim in claims:
        pool = runs if claim.target is None else targets[targets.eval_experience == claim.target]
        rows = pool[(pool.stream == claim.stream) & (pool.metric == claim.metric)]
        if claim.setting is not None:
            rows = rows[rows.setting == claim.setting]
        if claim.model:  # the claim's model (the stream's default unless it names one)
            # split, not partition: on no rows partition gives a frame without column 0
            rows = rows[rows.model.str.split("+", n=1).str[0] == claim.model]
        if claim.sets:  # runs made with these values (a boolean mask: also on no rows)
            keep = pd.Series([_matches(p, claim.sets) for p in rows.params_json], index=rows.index)
            rows = rows[keep.astype(bool)]
        else:  # the default configuration only
            rows = rows[~rows.configured]
        a = _side(rows, claim.a)
        if claim.b == "*":  # every other learner on the same model and weights as ``a``
            same = rows[rows.model.isin(set(a.model))]
            others = list(dict.fromkeys(same.run_strategy))
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
                    missing=missing,
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
