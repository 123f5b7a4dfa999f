"""Published claims judged on the rows at hand (cladapt/leaderboard/claims.py): the 2-standard-
error rule, and UDA claims judged per target, so that an easy target cannot hide a hard one."""

from __future__ import annotations

import pandas as pd

from cladapt.leaderboard.claims import Claim, claims_of, evaluate


def _rows(
    strategy: str,
    per_seed: dict[str, list[float]],
    stream="s",
    metric="target_error",
    model="small-cnn",
):
    """A finished UDA run per seed: a summary row (the mean over targets) and one eval row per
    target, in the columns a results file has."""
    rows = []
    targets = list(per_seed)
    for seed in range(len(per_seed[targets[0]])):
        run_id = f"{strategy}-{model}-{seed}"
        values = [per_seed[t][seed] for t in targets]
        common = dict(
            run_id=run_id,
            stream=stream,
            protocol="uda",
            setting="",
            strategy=strategy,
            model=model,
            seed=seed,
            started_at="2026-01-01T00:00:00",
            params_json="{}",
            metric=metric,
        )
        rows.append(common | dict(row_type="summary", eval_experience="", value=sum(values) / 2))
        for t, v in zip(targets, values, strict=True):
            rows.append(common | dict(row_type="eval", eval_experience=t, value=v))
    return rows


def _claim(target=None) -> Claim:
    d = dict(paper="p", claim="c", metric="target_error", a="dann", relation="<", b="source-only")
    return Claim.from_data("s", d, None, target)


def test_a_claim_is_judged_per_target_where_the_mean_hides_a_failure():
    """DANN far better on an easy target and worse on a hard one: the mean over targets says
    held, the hard target's own claim says not held."""
    df = pd.DataFrame(
        _rows("dann", {"hard": [63, 62, 64, 63], "easy": [2, 3, 2, 3]})
        + _rows("source-only", {"hard": [59, 60, 58, 59], "easy": [50, 52, 49, 51]})
    )
    mean, hard, easy = evaluate([_claim(), _claim("hard"), _claim("easy")], df)
    assert mean.status == "held"
    assert hard.status == "not held" and easy.status == "held"
    assert "on target hard" in hard.claim.statement
    assert "63.00" in hard.numbers and "59.00" in hard.numbers


def test_a_target_no_run_reached_is_not_run():
    df = pd.DataFrame(_rows("dann", {"hard": [1, 2]}) + _rows("source-only", {"hard": [3, 4]}))
    (verdict,) = evaluate([_claim("other")], df)
    assert verdict.status == "not run"


def test_undecided_and_one_seed_rules():
    close = pd.DataFrame(
        _rows("dann", {"t": [50, 52, 48]}) + _rows("source-only", {"t": [51, 49, 53]})
    )
    assert evaluate([_claim("t")], close)[0].status == "undecided"
    single = pd.DataFrame(_rows("dann", {"t": [40]}) + _rows("source-only", {"t": [50]}))
    assert evaluate([_claim("t")], single)[0].status == "1 seed, indicative: holds"


def test_digits_uda_claims_are_declared_per_target(catalog):
    """digits-uda has two targets (digits-m and gaussian_noise): each claim is judged on each,
    never on their mean."""
    claims = [c for c in claims_of(catalog) if c.stream == "digits-uda"]
    assert {c.target for c in claims} == {"digits-m", "gaussian_noise"}
    assert len(claims) == 2 * len({c.statement.split(" on target")[0] for c in claims})
    single = [c for c in claims_of(catalog) if c.stream == "digits"]
    assert single and all(c.target is None for c in single)


def test_a_claim_reads_one_model_and_says_which_when_it_is_not_the_default(catalog):
    """ViDA's claim is judged on the ViT runs only (every published ViDA number is on a ViT);
    the stream's other claims on its default model only, so a second model's runs never mix
    into their means."""
    vit = _rows("dann", {"t": [10, 11, 12]}, model="tiny-vit") + _rows(
        "source-only", {"t": [30, 31, 29]}, model="tiny-vit"
    )
    cnn = _rows("dann", {"t": [60, 61, 62]}) + _rows("source-only", {"t": [30, 31, 29]})
    df = pd.DataFrame(vit + cnn)
    d = dict(paper="p", claim="c", metric="target_error", a="dann", relation="<", b="source-only")
    on_vit = Claim.from_data("s", d | {"model": "tiny-vit"}, None, "t", "small-cnn")
    on_default = Claim.from_data("s", d, None, "t", "small-cnn")
    held, not_held = evaluate([on_vit, on_default], df)
    assert held.status == "held" and not_held.status == "not held"
    assert on_vit.statement.endswith("with tiny-vit") and "with" not in on_default.statement
    (vida,) = [c for c in claims_of(catalog) if c.stream == "digits-c" and c.a == "vida"]
    assert vida.model == "tiny-vit"
    assert all(
        c.model == "small-cnn"
        for c in claims_of(catalog)
        if c.stream == "digits-c" and c.a != "vida"
    )
