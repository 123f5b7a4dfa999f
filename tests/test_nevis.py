"""NEVIS-style streams: the embedded nevis-mini, the NEVIS'22 task list read from disk, and
model selection on the dev split."""

import numpy as np
import pytest
import torch
from cladapt.streams.builtin import definitions
from PIL import Image

from cladapt.errors import DataError, DivergenceError
from cladapt.results import read_results
from cladapt.runner import RunSpec, execute


def test_nevis_mini_is_heterogeneous_and_spans_two_orders_of_magnitude(catalog):
    stream = catalog.streams.get("nevis-mini").factory()
    assert 8 <= len(stream.experiences) <= 15
    years = [e.metadata["year"] for e in stream.experiences]
    assert years == sorted(years)
    sizes = [len(e.train) for e in stream.experiences]
    assert max(sizes) >= 100 * min(sizes)
    for e, t in zip(stream.experiences, definitions()["nevis-mini"]["tasks"], strict=True):
        n = t["train"]  # dm_nevis' 70 / 15 / 15 of the training data ...
        assert len(e.train) == int(0.7 * n)
        # ... with dev and dev_test never under NEVIS'22's smallest dev split (Olivetti: 48)
        assert len(e.dev) == max(int(0.15 * n), 48)
        assert len(e.dev_test) == max(n - int(0.7 * n) - int(0.15 * n), 48)
    seen: set[int] = set()
    for e in stream.experiences:
        classes = set(e.classes)
        assert not classes & seen  # every task has its own label space
        seen |= classes
        for split in (e.train, e.dev, e.dev_test, e.test):
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


def write_folder_task(root, key, classes=("a", "b", "c"), per_class=4, splits=("train", "test")):
    rng = np.random.default_rng(0)
    for split in splits:
        for c in classes:
            folder = root / "nevis" / key / split / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(
                    folder / f"{i}.png"
                )


def test_nevis_reads_what_is_on_disk_and_reports_the_rest(catalog, tmp_path, out):
    from test_uda_readers import write_mnist_and_mnistm

    write_folder_task(tmp_path, "coil20", per_class=20)
    # dm_nevis' prepared splits, when a task has them, are used as they are
    write_folder_task(
        tmp_path, "brodatz", classes=("x", "y"), splits=("train", "dev", "dev-test", "test")
    )
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
    by_task = {e.name: e for e in stream.experiences}
    coil = by_task["2000-coil20"]  # 60 training images split 70 / 15 / 15 (dm_nevis' fractions)
    assert (len(coil.train), len(coil.dev), len(coil.dev_test)) == (42, 9, 9)
    brodatz = by_task["1998-brodatz"]  # 8 images in each of its prepared folders
    assert (len(brodatz.train), len(brodatz.dev), len(brodatz.dev_test)) == (8, 8, 8)
    x, y = stream.experiences[1].test[0]
    assert tuple(x.shape) == (3, 64, 64) and y in stream.experiences[1].classes  # dm_nevis' 64
    # a dataset that recurs keeps its task key, so its classes (the head) are the same ones
    # (dm_nevis: tasks are keyed by dataset); three datasets: 2 + 3 + 10 classes
    assert len(stream.class_names) == 2 + 3 + 10
    by_name = {e.name: e.classes for e in stream.experiences}
    assert by_name["1998-brodatz"] == by_name["2011-brodatz"]
    assert by_name["2000-coil20"] == by_name["2019-coil20"]
    assert by_name["2004-mnist"] == by_name["2015-mnist"]
    assert not set(by_name["1998-brodatz"]) & set(by_name["2000-coil20"])

    sets = {"iterations": "3", "lr_grid": "0.1,0.001"}  # dm_nevis' recipe, 3 steps a trial
    spec = RunSpec(
        "nevis",
        "finetune",
        sets,
        out=out,
        device="cpu",
        data_root=str(tmp_path),
        setting="task-incremental",
        model="small-cnn",
    )
    outcome = execute(spec, catalog)
    df = read_results(out)
    assert len(df[df.metric == "selected_lr"]) == 6 and set(
        df[df.metric == "selected_lr"].value
    ) <= {0.1, 0.001}
    assert len(df[df.metric == "trial_dev_error"]) == 12  # 6 tasks x 2 rates of the grid
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


def test_search_space_is_dm_nevis_hype():
    """The values of the official code's doctests (experiments_jax/training/hype.py) and its
    per-task space: lr from Random(k + 1), label smoothing from Random(k + 2)."""
    from cladapt.protocols.selection import (
        log_uniform_values,
        random_search_space,
        uniform_values,
    )

    assert log_uniform_values(1e-1, 1e-3, n=3, seed=0) == pytest.approx(
        [0.0020471812581430546, 0.003048535060583298, 0.014416400482129478]
    )
    assert uniform_values(0, 1, n=3, seed=0) == pytest.approx(
        [0.8444218515250481, 0.7579544029403025, 0.420571580830845]
    )
    space = random_search_space(task_index=4, trials=16)
    assert len(space) == 16 and len({t.lr for t in space}) == 16
    assert all(1e-4 <= t.lr <= 1e-1 and 0 <= t.label_smoothing <= 0.3 for t in space)
    assert space[0].lr == pytest.approx(log_uniform_values(1e-4, 1e-1, n=1, seed=5)[0])
    assert space != random_search_space(task_index=5, trials=16)


def test_a_trial_keeps_its_lowest_dev_error_state_and_costs_its_last():
    from cladapt.protocols.selection import BestOnDev

    model = torch.nn.Linear(2, 2)
    kept = BestOnDev()
    for error, value in [(50.0, 1.0), (30.0, 2.0), (40.0, 3.0), (30.0, 4.0)]:
        torch.nn.init.constant_(model.weight, value)
        kept.offer(error, model, None)
    assert kept.best_error == 30.0 and kept.last_error == 30.0
    assert torch.all(kept.state[0]["weight"] == 2.0)  # the first of the tied best, not the last


def test_nevis_selection_picks_the_lowest_dev_error_trial_and_never_retrains(catalog, tmp_path):
    """dm_nevis: every trial from the same state, the best trial's model goes on, no retraining
    on train + dev; all trials' training counts in the FLOPs."""
    common = {"iterations": "30", "eval_split": "dev_test"}
    flops = {}
    for trials in (0, 2):
        out = tmp_path / f"t{trials}.csv"
        sets = common | {"search_trials": str(trials)}
        outcome = execute(RunSpec("nevis-mini", "finetune", sets, out=out, device="cpu"), catalog)
        flops[trials] = outcome.summary["train_flops"]
    df = read_results(out)
    trials = df[df.metric == "trial_dev_error"].copy()
    trials["task"] = trials.trained_upto.str.split("@").str[0]
    trials["index"] = trials.trained_upto.str.split("@trial").str[1].astype(int)
    selected = df[df.metric == "selected_trial"].set_index("trained_upto").value
    chosen = df[df.metric == "selected_dev_error"].set_index("trained_upto").value
    assert len(selected) == 10
    for task, rows in trials.groupby("task"):
        rows = rows.sort_values("index")
        best = rows.value.to_numpy().argmin()  # the first of ties, as dm_nevis' strict <
        assert selected[task] == best and chosen[task] == rows.value.min()
    # two trials of the same length, no retrain: exactly twice the training of no search
    assert flops[2] == pytest.approx(2 * flops[0], rel=0.02)
    # scored on dev_test: the weighted average uses the dev_test sizes
    stream = catalog.streams.get("nevis-mini").factory()
    sizes = {e.name: len(e.dev_test) for e in stream.experiences}
    err = df[df.metric == "error_after_learning"].set_index("eval_experience").value
    weighted = sum(err[k] * n for k, n in sizes.items()) / sum(sizes.values())
    assert outcome.summary["weighted_avg_error_after_learning"] == pytest.approx(weighted)


def test_eval_split_dev_test_needs_a_stream_that_holds_one_out(catalog, out):
    from cladapt.errors import ConfigError

    with pytest.raises(ConfigError, match="no dev_test split"):
        execute(RunSpec("digits", "finetune", {"eval_split": "dev_test"}, out=out), catalog)


def test_a_diverging_selection_trial_fails_alone_and_all_diverging_stops_the_run(catalog, tmp_path):
    """A search trial at a learning rate that blows up (NaN loss) is never selected and the
    search goes on; if every trial diverges the run ends with an error row, unscored."""
    out = tmp_path / "r.csv"
    sets = {"iterations": "10", "lr_grid": "0.01,1e30"}
    execute(RunSpec("nevis-mini", "finetune", sets, out=out, device="cpu"), catalog)
    df = read_results(out)
    diverged = df[df.metric == "trial_diverged"]
    assert len(diverged) >= 1 and set(diverged.trained_upto.str.split("@").str[1]) == {"trial1"}
    selected = df[df.metric == "selected_trial"].set_index("trained_upto").value
    assert len(selected) == 10
    assert all(selected[task] == 0.0 for task in diverged.trained_upto.str.split("@").str[0])
    assert len(df[df.row_type == "summary"]) > 0
    out2 = tmp_path / "all.csv"
    with pytest.raises(DivergenceError, match="every one of the 1 selection trials"):
        execute(RunSpec("nevis-mini", "finetune", sets | {"lr_grid": "1e30"}, out=out2), catalog)
    df2 = read_results(out2)
    assert set(df2.row_type) == {"eval", "error"}


def test_every_selection_trial_starts_from_the_same_optimizer_state():
    """Optimizer.load_state_dict adopts the tensors it is given: loading the captured start must
    not let a trial's steps write its momentum into the capture the next trial starts from."""
    from cladapt.protocols.selection import capture, load

    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    start = capture(model, opt)
    before = start[1]["state"][0]["momentum_buffer"].clone()
    for _trial in range(2):
        load(model, opt, start)
        opt.zero_grad()
        (100 * model(torch.ones(1, 2))).sum().backward()
        opt.step()
    assert torch.equal(start[1]["state"][0]["momentum_buffer"], before)


def test_each_selection_trial_starts_with_a_fresh_optimizer_state(catalog, tmp_path):
    """dm_nevis initialises the optimizer per trial: the first step of every trial finds no
    momentum buffer, also on tasks after the first (trials alternate lr 0.01 / 0.02 here, so a
    change of rate marks a trial's first step)."""
    from cladapt.hookspecs import hookimpl

    class Spy:
        def __init__(self) -> None:
            self.steps: list[tuple[float, int]] = []  # (lr, optimizer state entries)

        @hookimpl
        def cladapt_extra_losses(self, run, batch, outputs):
            self.steps.append((run.optimizer.param_groups[0]["lr"], len(run.optimizer.state)))

    spy = Spy()
    sets = {"iterations": "10", "schedule": "constant", "lr_grid": "0.01,0.02"}
    spec = RunSpec("nevis-mini", "finetune", sets, out=tmp_path / "r.csv", run_plugins=(spy,))
    execute(spec, catalog)
    firsts = [n for (lr, n), (prev, _) in zip(spy.steps[1:], spy.steps, strict=False) if lr != prev]
    assert len(firsts) >= 19 and set(firsts) == {0}
    assert any(n > 0 for _, n in spy.steps)  # momentum exists within a trial


def test_the_adaptive_batch_size_is_dm_nevis_rule():
    """min(512, max(16, 2^int(log2(0.0025 n)))) (finetuning_dknn_learner.py), worked by hand."""
    from cladapt.protocols.continual import ContinualConfig, training_batch_size

    cfg = ContinualConfig(batch_size=32, batch_rule="adaptive")
    # 0.0025 n = 0.035, 3.5, 16, 31.9, 32, 250, 3000 -> 2^0 .. 2^11, floored at 16, capped at 512
    cases = {14: 16, 1400: 16, 6400: 16, 12_799: 16, 12_800: 32, 100_000: 128, 1_200_000: 512}
    assert {n: training_batch_size(cfg, n) for n in cases} == cases
    assert training_batch_size(ContinualConfig(batch_size=32), 1_200_000) == 32


def test_nevis_mini_trains_a_fixed_budget_and_learns_every_task(catalog, tmp_path):
    """dm_nevis trains every task for the same number of steps whatever its size, so a task of 14
    images is learnt as well as one of 1400; an epoch budget gave the small tasks two steps and
    left every trained learner at chance on four of them."""
    from cladapt.hookspecs import hookimpl

    class Steps:
        def __init__(self) -> None:
            self.per_task: dict[str, int] = {}

        @hookimpl
        def cladapt_after_step(self, run, outputs):
            name = run.experience.name
            self.per_task[name] = self.per_task.get(name, 0) + 1

    spy, out = Steps(), tmp_path / "r.csv"
    spec = RunSpec("nevis-mini", "finetune", out=out, device="cpu", seed=0, run_plugins=(spy,))
    execute(spec, catalog)
    assert len(set(spy.per_task.values())) == 1  # 4 trials x the same steps on every task
    stream = catalog.streams.get("nevis-mini").factory()
    chance = {e.name: 100.0 * (1 - 1 / len(e.classes)) for e in stream.experiences}
    df = read_results(out)
    err = df[df.metric == "error_after_learning"].set_index("eval_experience").value
    assert len(err) == 10
    for task, value in err.items():
        assert value < chance[task] - 15, (task, value, chance[task])


def write_dtd(root, classes=("banded", "dotted"), sizes=(("train", 5), ("val", 2), ("test", 2))):
    """torchvision's DTD layout: dtd/dtd/images/<class>/*.jpg and labels/<split>1.txt."""
    rng = np.random.default_rng(1)
    base = root / "dtd" / "dtd"
    for split, n in sizes:
        lines = []
        for c in classes:
            (base / "images" / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                name = f"{c}_{split}_{i}.jpg"
                img = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)  # not square
                Image.fromarray(img).save(base / "images" / c / name)
                lines.append(f"{c}/{name}")
        (base / "labels").mkdir(exist_ok=True)
        (base / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")


def test_nevis_splits_and_augmentation_are_dm_nevis(catalog, tmp_path):
    """nevis_stream.py: DTD's dev_test is its official validation split and its training split
    is cut 80 / 20 into train / dev; ImageNet 90 / 5 / 5; the rest 70 / 15 / 15. Training
    images get dm_nevis' random crop and flip, dev / test ones the central square at 64 px."""
    from PIL import Image as PILImage
    from torchvision.transforms import functional as TF

    write_dtd(tmp_path)
    write_folder_task(tmp_path, "imagenet2012", per_class=20)
    write_folder_task(tmp_path, "coil20", per_class=20)
    stream = catalog.streams.get("nevis").factory(data_root=str(tmp_path))
    by_task = {e.name: e for e in stream.experiences}
    dtd = by_task["2016-dtd"]
    assert (len(dtd.train), len(dtd.dev), len(dtd.dev_test), len(dtd.test)) == (8, 2, 4, 4)
    imagenet = by_task["2011-imagenet2012"]
    assert (len(imagenet.train), len(imagenet.dev), len(imagenet.dev_test)) == (54, 3, 3)
    coil = by_task["2000-coil20"]
    assert (len(coil.train), len(coil.dev), len(coil.dev_test)) == (42, 9, 9)
    # dev_test is the validation split itself, read with the evaluation transform
    val_files = sorted((tmp_path / "dtd" / "dtd" / "labels" / "val1.txt").read_text().split())
    first = val_files[0]
    expected = PILImage.open(tmp_path / "dtd" / "dtd" / "images" / first).convert("RGB")
    expected = TF.to_tensor(expected.crop((8, 0, 40, 32)).resize((64, 64), PILImage.BILINEAR))
    x, _ = dtd.dev_test[0]
    assert torch.allclose(x, expected, atol=1e-6)
    # the training view is random (crop and flip), the evaluation view is not
    torch.manual_seed(0)
    draws = [dtd.train[0][0] for _ in range(4)]
    assert all(d.shape == (3, 64, 64) for d in draws)
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    assert torch.equal(dtd.dev[0][0], dtd.dev[0][0])
