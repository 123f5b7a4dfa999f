"""Cost probes: a paper's configuration (architecture, input size, batch) on one synthetic batch,
run in the test-time protocol's ``probe`` setting: one adaptation step whose cost is recorded,
no error. EcoTTA's memory claim is judged there (ResNet-50 at 224 px, batch 64), not on the
4-block CNN of digits-c; here a small CNN stands in for the ResNet so that the test is quick."""

from __future__ import annotations

import dataclasses

from cladapt.leaderboard.aggregate import aggregate, load, ranking
from cladapt.leaderboard.claims import claims_of, evaluate
from cladapt.results import read_results
from cladapt.runner import RunSpec, execute


def _probe(catalog, strategy: str, out, **sets):
    spec = RunSpec(
        "imagenet-probe",
        strategy,
        {"batch_size": "8", **sets},
        out=out,
        device="cpu",
        model="small-cnn",
    )
    return execute(spec, catalog)


def test_a_probe_records_one_steps_cost_and_no_error(catalog, out):
    outcome = _probe(catalog, "tent", out)
    assert outcome.run.setting == "probe"
    assert outcome.run.stream.input_shape == (3, 224, 224)
    assert outcome.summary["saved_activation_mb"] > 0
    assert "mean_error" not in outcome.summary
    df = read_results(out)
    assert not len(df[df.row_type == "eval"])  # no error of random images on random weights
    assert outcome.run.images_seen == 8  # one batch


def test_probe_rows_rank_by_memory_and_judge_ecottas_claim(catalog, out):
    for strategy in ("tent", "ecotta"):
        _probe(catalog, strategy, out)
    df = load([out])
    table = aggregate(df)
    assert ranking("imagenet-probe", "test_time", table) == ("saved_activation_mb", "min")
    (claim,) = [c for c in claims_of(catalog) if c.stream == "imagenet-probe"]
    assert "digits-c" in claim.shown_with  # shown beside the miniature's accuracy rows
    assert not [c for c in claims_of(catalog) if c.stream == "digits-c" and c.a == "ecotta"]
    assert claim.model == "resnet50"  # the paper's encoder, the probe's default model
    # the same claim read on this test's small stand-in runs (their model and batch size)
    stand_in = dataclasses.replace(claim, model="small-cnn", sets={"batch_size": 8})
    (verdict,) = evaluate([stand_in], df)
    # one seed decides a seed-free metric; the status follows the measured numbers
    means = table.set_index("strategy").saved_activation_mb_mean
    expected = (
        "held" if means["ecotta [batch_size=8]"] < means["tent [batch_size=8]"] else "not held"
    )
    assert verdict.status == expected
