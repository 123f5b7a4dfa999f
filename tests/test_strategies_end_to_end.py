"""End-to-end runs of the three protocols on the embedded digits streams."""

import pandas as pd
import pytest

from cladapt.results import read_results
from cladapt.runner import RunSpec, execute


def test_finetune_continual_writes_full_matrix_and_summary(catalog, out):
    outcome = execute(
        RunSpec("digits", "finetune", {"epochs": "3"}, out=out, device="cpu"), catalog
    )
    df = read_results(out)
    ev = df[df.row_type == "eval"]
    assert len(ev[ev.metric == "accuracy"]) == 6 * 5  # initial row + 5 tasks, each on 5 tasks
    assert set(ev.metric) == {"accuracy", "error_after_learning", "train_flops", "inference_flops"}
    assert len(ev[ev.metric == "error_after_learning"]) == 5
    summary = dict(
        zip(df[df.row_type == "summary"].metric, df[df.row_type == "summary"].value, strict=True)
    )
    for key in (
        "avg_accuracy",
        "forgetting",
        "bwt",
        "fwt",
        "wall_time_s",
        "images_per_s",
        "trainable_params",
        "peak_memory_mb",
    ):
        assert key in summary
    assert summary["trainable_params"] == sum(p.numel() for p in outcome.run.model.parameters())
    # class-incremental fine-tuning forgets: the last task is learned, the first is lost
    R = outcome.result.tables["accuracy_matrix"]
    assert R[-1, -1] > R[-1, :-1].max() + 40 and R[-1, :-1].max() < 20
    assert summary["forgetting"] > 40 and summary["bwt"] < -40
    assert df.run_id.nunique() == 1 and (df.strategy == "finetune").all()


def test_task_incremental_masks_logits_and_forgets_less(catalog, out):
    ci = execute(RunSpec("digits", "finetune", {"epochs": "2"}, out=out, device="cpu"), catalog)
    ti = execute(
        RunSpec(
            "digits", "finetune", {"epochs": "2"}, out=out, device="cpu", setting="task-incremental"
        ),
        catalog,
    )
    assert ti.summary["avg_accuracy"] > ci.summary["avg_accuracy"] + 20
    assert set(read_results(out).setting) == {"class-incremental", "task-incremental"}


@pytest.fixture(scope="module")
def tta_runs(catalog, tmp_path_factory):
    out = tmp_path_factory.mktemp("tta") / "results.csv"
    runs = {
        s: execute(RunSpec("digits-shift", s, out=out, device="cpu"), catalog)
        for s in ("source", "bn-adapt")
    }
    return runs, read_results(out)


def test_test_time_rows_per_domain(tta_runs):
    runs, df = tta_runs
    ev = df[(df.row_type == "eval")]
    assert len(ev) == 2 * 5 and set(ev.metric) == {"error"}
    assert set(ev.eval_experience) == {
        "gaussian_noise",
        "salt_pepper",
        "blur",
        "contrast",
        "brightness",
    }
    assert runs["source"].summary["trainable_params"] == 0


def test_bn_adapt_beats_source_on_noise(tta_runs):
    runs, _ = tta_runs
    src, bn = runs["source"].result.tables["errors"], runs["bn-adapt"].result.tables["errors"]
    assert bn["gaussian_noise"] < src["gaussian_noise"] - 10
    assert runs["bn-adapt"].summary["mean_error"] < runs["source"].summary["mean_error"]


def test_source_model_is_cached_and_reused(catalog, out, monkeypatch):
    from cladapt.models import source

    execute(RunSpec("digits-shift", "source", out=out, device="cpu"), catalog)  # cache exists now

    def boom(*a, **k):
        raise AssertionError("source model was retrained instead of loaded from the cache")

    monkeypatch.setattr(source, "train_source_model", boom)
    a = execute(RunSpec("digits-shift", "source", out=out, device="cpu"), catalog)
    b = execute(RunSpec("digits-shift", "source", out=out, device="cpu", seed=1), catalog)
    # `source` does not adapt: the error depends only on the (shared) source model, not the seed
    assert a.result.tables["errors"] == b.result.tables["errors"]


def test_uda_protocol_runs_and_records_curves(catalog, out):
    sets = {"iterations": "80", "iters_per_epoch": "40", "lr": "0.1"}
    outcome = execute(RunSpec("digits-uda", "finetune", sets, out=out, device="cpu"), catalog)
    df = read_results(out)
    curve = df[(df.metric == "target_accuracy") & (df.row_type == "eval")]
    for target in ("digits-m", "gaussian_noise"):
        assert list(curve[curve.eval_experience == target].trained_upto) == ["epoch1", "epoch2"]
    assert {"target_error", "source_accuracy"} <= set(df.metric)
    assert outcome.summary["source_accuracy"] > 50  # chance is 10


def test_seed_is_recorded_and_changes_data_order(catalog, out):
    a = execute(
        RunSpec("digits", "finetune", {"epochs": "1"}, out=out, device="cpu", seed=0), catalog
    )
    b = execute(
        RunSpec("digits", "finetune", {"epochs": "1"}, out=out, device="cpu", seed=0), catalog
    )
    c = execute(
        RunSpec("digits", "finetune", {"epochs": "1"}, out=out, device="cpu", seed=3), catalog
    )
    ra, rb, rc = (o.result.tables["accuracy_matrix"] for o in (a, b, c))
    assert (ra == rb).all() and not (ra == rc).all()
    assert set(pd.unique(read_results(out).seed)) == {0, 3}
