"""NEVIS-style streams: the embedded nevis-mini, the NEVIS'22 task list read from disk, and
model selection on the dev split."""

import numpy as np
import pytest
import torch
from cladapt.streams.builtin import definitions
from PIL import Image

from cladapt.errors import DataError
from cladapt.results import read_results
from cladapt.runner import RunSpec, execute


def test_nevis_mini_is_heterogeneous_and_spans_two_orders_of_magnitude(catalog):
    stream = catalog.streams.get("nevis-mini").factory()
    assert 8 <= len(stream.experiences) <= 15
    years = [e.metadata["year"] for e in stream.experiences]
    assert years == sorted(years)
    sizes = [len(e.train) + len(e.dev) for e in stream.experiences]
    assert max(sizes) >= 100 * min(sizes)
    seen: set[int] = set()
    for e in stream.experiences:
        classes = set(e.classes)
        assert not classes & seen  # every task has its own label space
        seen |= classes
        for split in (e.train, e.dev, e.test):
            assert set(split.tensors[1].tolist()) <= classes
        assert e.train.tensors[0].shape[1:] == (3, 32, 32)
        # dev is held out from train (sklearn's digits hold a few duplicate scans)
        tr = {tuple(v) for v in e.train.tensors[0].flatten(1).mul(1000).round().tolist()}
        dev = e.dev.tensors[0].flatten(1).mul(1000).round().tolist()
        assert sum(tuple(v) in tr for v in dev) <= 2
    assert len(stream.class_names) == len(seen)
    again = catalog.streams.get("nevis-mini").factory(seed=5)
    assert torch.equal(
        again.experiences[3].train.tensors[0], stream.experiences[3].train.tensors[0]
    )


def test_nevis_task_list_is_the_published_order():
    tasks = definitions()["nevis"]["tasks"]
    assert len(tasks) == 106
    assert [t["year"] for t in tasks] == sorted(t["year"] for t in tasks)
    assert (
        tasks[0]["name"] == "Magellan Venus Volcanoes"
        and tasks[-1]["key"] == "synthetic_covid19_xray"
    )
    assert sum(t["year"] == 2011 for t in tasks) == 10
    # repeated datasets are separate tasks in NEVIS (e.g. MNIST in 2004 and 2015)
    assert [t["year"] for t in tasks if t["key"] == "mnist"] == [2004, 2015]
    dev = [t for t in tasks if t["year"] < definitions()["nevis-dev"]["stop_year"]]
    assert len(dev) == 106 - 3 - 11


def write_folder_task(root, key, classes=("a", "b", "c"), per_class=4):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            folder = root / "nevis" / key / split / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(
                    folder / f"{i}.png"
                )


def test_nevis_reads_what_is_on_disk_and_reports_the_rest(catalog, tmp_path, out):
    from test_uda_readers import write_mnist_and_mnistm

    write_folder_task(tmp_path, "coil20")
    write_folder_task(tmp_path, "brodatz", classes=("x", "y"))
    write_mnist_and_mnistm(tmp_path, n=20)
    write_folder_task(tmp_path, "celeb_a")  # present, but multi-label in dm_nevis
    stream = catalog.streams.get("nevis").factory(data_root=str(tmp_path))
    names = [e.name for e in stream.experiences]
    assert names == [
        "1998-brodatz",
        "2000-coil20",
        "2004-mnist",
        "2011-brodatz",
        "2015-mnist",
        "2019-coil20",
    ]
    assert stream.notes[0].startswith("6 of 106 tasks found") and len(stream.notes) == 101
    x, y = stream.experiences[1].test[0]
    assert tuple(x.shape) == (3, 32, 32) and y in stream.experiences[1].classes
    # a dataset that recurs keeps its task key, so its classes (the head) are the same ones
    # (dm_nevis: tasks are keyed by dataset); three datasets: 2 + 3 + 10 classes
    assert len(stream.class_names) == 2 + 3 + 10
    by_name = {e.name: e.classes for e in stream.experiences}
    assert by_name["1998-brodatz"] == by_name["2011-brodatz"]
    assert by_name["2000-coil20"] == by_name["2019-coil20"]
    assert by_name["2004-mnist"] == by_name["2015-mnist"]
    assert not set(by_name["1998-brodatz"]) & set(by_name["2000-coil20"])

    sets = {"epochs": "1", "batch_size": "8", "lr_grid": "0.1,0.001"}
    spec = RunSpec(
        "nevis",
        "finetune",
        sets,
        out=out,
        device="cpu",
        data_root=str(tmp_path),
        setting="task-incremental",
    )
    outcome = execute(spec, catalog)
    df = read_results(out)
    assert len(df[df.metric == "selected_lr"]) == 6 and set(
        df[df.metric == "selected_lr"].value
    ) <= {0.1, 0.001}
    assert len(df[df.metric == "dev_accuracy"]) == 12
    assert outcome.summary["train_flops"] > 0
    note = df[df.metric == "experiences"].note.item()
    assert "6 of 106" in note and "Magellan" in note
    # a multi-label task is listed with its reason, not run, even when its files are there
    assert any(n.startswith("skipped 2017 CelebA: multi-label task") for n in stream.notes)
    # NEVIS metrics: top-5 only where a task has more than 5 classes (mnist's 10)
    top5 = df[df.metric == "top5_error_after_learning"].set_index("eval_experience").value
    top1 = df[df.metric == "error_after_learning"].set_index("eval_experience").value
    assert sorted(top5.index) == ["2004-mnist", "2015-mnist"]
    assert (top5 <= top1[top5.index]).all()
    assert outcome.summary["avg_top5_error_after_learning"] == pytest.approx(top5.mean())
    assert outcome.summary["avg_error_after_learning"] == pytest.approx(top1.mean())
    assert outcome.summary["peak_trainable_params"] > 0
    sizes = {e.name: len(e.test) for e in stream.experiences}
    weighted = sum(top1[k] * n for k, n in sizes.items()) / sum(sizes.values())
    assert outcome.summary["weighted_avg_error_after_learning"] == pytest.approx(weighted)


def test_nevis_without_any_task_is_one_clear_error(catalog, tmp_path):
    with pytest.raises(
        DataError, match=r"none of the 106 tasks of 'nevis'.*magellan_venus_volcanoes"
    ):
        catalog.streams.get("nevis").factory(data_root=str(tmp_path))


@pytest.mark.slow
def test_nevis_mini_runs_nmc_with_compute(catalog, out):
    outcome = execute(RunSpec("nevis-mini", "nmc", out=out, device="cpu"), catalog)
    df = read_results(out)
    assert len(df[df.metric == "error_after_learning"]) == 10
    assert outcome.summary["train_flops"] > 0 and outcome.summary["inference_flops"] > 0
    assert (
        outcome.summary["avg_accuracy"] > 30
    )  # random frozen features: well above chance per task
