"""EATA, SAR and RoTTA: each method's defining behaviour (filters, Fisher penalty, SAM step and
model recovery, robust BN and the category-balanced memory)."""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from test_tta_strategies import _fake_run, _model_with_source_stats, _strategy
from torch import nn
from torch.utils.data import TensorDataset

from cladapt.batch import Batch
from cladapt.runner import RunSpec, execute


def _run_with_source(model, n=64):
    run = _fake_run(model, params=SimpleNamespace(batch_size=16), seed=0)
    g = torch.Generator().manual_seed(1)
    run.stream.source = SimpleNamespace(
        train=TensorDataset(torch.rand(n, 3, 32, 32, generator=g), torch.zeros(n).long())
    )
    return run


# --- EATA ---------------------------------------------------------------------------------


def test_eata_keeps_confident_samples_and_drops_uncertain_and_redundant_ones():
    from cladapt.plugins.eata import select_samples

    logits = torch.zeros(3, 10)
    logits[0, 0] = 20.0  # confident, class 0
    logits[2, 3] = 20.0  # confident, class 3; row 1 is uniform: entropy ln 10
    margin = 0.4 * math.log(10)
    reliable, selected, ent = select_samples(logits, margin, None, 0.4)
    assert reliable.tolist() == [True, False, True] and torch.equal(selected, reliable)
    assert ent[1] == pytest.approx(math.log(10), rel=1e-5)
    running = torch.nn.functional.one_hot(torch.tensor(0), 10).float()  # seen mostly class 0
    _, selected, _ = select_samples(logits, margin, running, 0.4)
    assert selected.tolist() == [False, False, True]  # class 0 again is redundant


def test_eata_without_reliable_samples_never_updates_and_equals_bn_adapt(tmp_path):
    out = tmp_path / "r.csv"
    none = execute(RunSpec("digits-shift", "eata", {"entropy_margin": "0"}, out=out))
    bn = execute(RunSpec("digits-shift", "bn-adapt", out=out))
    default = execute(RunSpec("digits-shift", "eata", out=out))
    assert none.result.tables["errors"] == bn.result.tables["errors"]
    assert default.result.tables["errors"] != bn.result.tables["errors"]  # it does adapt


def test_eata_fisher_is_computed_on_source_and_holds_parameters_back(catalog):
    drift = {}
    for alpha in (0.0, 1e6):
        model = _model_with_source_stats()
        run = _run_with_source(model)
        eata = _strategy(catalog, "eata", fisher_alpha=alpha, entropy_margin=1.0, d_margin=2.0)
        eata.cladapt_setup(run=run)
        start = {n: p.detach().clone() for n, p in eata.params.items()}
        if alpha:
            fisher = torch.cat([f.flatten() for f in eata.fisher.values()])
            assert (fisher >= 0).all() and fisher.sum() > 0
        g = torch.Generator().manual_seed(2)
        for _ in range(10):
            eata.cladapt_adapt(run=run, batch=Batch(x=torch.rand(16, 3, 32, 32, generator=g)))
        assert eata.selected > 0
        drift[alpha] = sum(float((p.detach() - start[n]).norm()) for n, p in eata.params.items())
    assert drift[1e6] < 0.5 * drift[0.0]


def test_eata_reset_keeps_the_moving_average_of_predictions(catalog):
    """The official EATA.reset() restores model and optimizer and leaves current_model_probs:
    after an episodic reset the redundancy filter still compares with the average so far."""
    model = _model_with_source_stats()
    run = _run_with_source(model)
    eata = _strategy(catalog, "eata", entropy_margin=1.0, d_margin=2.0, fisher_alpha=0.0)
    eata.cladapt_setup(run=run)
    eata.cladapt_adapt(run=run, batch=Batch(x=torch.rand(16, 3, 32, 32)))
    before = eata.running_probs.clone()
    eata.cladapt_reset(run=run)
    assert eata.running_probs is not None and torch.equal(eata.running_probs, before)


# --- SAR ----------------------------------------------------------------------------------


def test_sar_names_the_top_of_the_network_as_the_official_code():
    from cladapt.plugins.sar import _is_top

    assert _is_top("model.layer4.0.bn1") and _is_top("blocks.10.norm1") and _is_top("norm")
    assert _is_top("model.norm")
    assert not _is_top("model.layer3.5.bn2") and not _is_top("blocks.1.norm1")
    assert not _is_top("blocks.0.norm")


def test_sar_adapts_norms_below_the_last_stage_with_a_sharpness_aware_step(catalog):
    x = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    updates = {}
    for rho in (0.0, 0.05):
        model = _model_with_source_stats()
        run = _fake_run(model)
        sar = _strategy(catalog, "sar", rho=rho, entropy_margin=1.0)
        sar.cladapt_setup(run=run)
        names = {id(p): n for n, p in model.named_parameters()}
        adapted = sorted(names[id(p)] for p in sar.params)
        assert adapted and not any(n.startswith("features.6.") for n in adapted)
        before = [p.detach().clone() for p in sar.params]
        if rho == 0.0:  # SAM with rho 0 is one SGD step on the reliable entropy at theta
            probe = copy.deepcopy(model)
            ent = -(probe(x).softmax(1) * probe(x).log_softmax(1)).sum(1)
            loss = ent[ent < math.log(10)].mean()
            probe_params = [dict(probe.named_parameters())[names[id(p)]] for p in sar.params]
            grads = torch.autograd.grad(loss, probe_params)
        sar.cladapt_adapt(run=run, batch=Batch(x=x))
        updates[rho] = [p.detach() - b for p, b in zip(sar.params, before, strict=True)]
        if rho == 0.0:
            for u, g in zip(updates[rho], grads, strict=True):
                assert torch.allclose(u, -1e-3 * g, atol=1e-7)
    assert any(
        not torch.allclose(a, b, atol=1e-8)
        for a, b in zip(updates[0.0], updates[0.05], strict=True)
    )


def test_sar_resets_a_collapsed_model_and_keeps_the_base_momentum(catalog):
    model = _model_with_source_stats()
    with torch.no_grad():
        model.head.weight.mul_(1000)  # trivially confident on everything: a collapse
    run = _fake_run(model)
    sar = _strategy(catalog, "sar")
    sar.cladapt_setup(run=run)
    initial = copy.deepcopy(model.state_dict())
    sar.cladapt_adapt(run=run, batch=Batch(x=torch.rand(16, 3, 32, 32)))
    # the official SAR.forward writes the low loss average back after reset(): it is kept
    assert sar.recoveries == 1 and sar.loss_ema is not None and sar.loss_ema < 0.2
    assert all(torch.equal(v, initial[k]) for k, v in model.state_dict().items())
    # the official recovery reloads SAM's state; the base SGD's momentum buffers live in the
    # base optimizer and survive it (mr-eggplant/SAR)
    assert run.optimizer.state_dict()["state"] != {}
    # still collapsed and the average still low: it recovers again, and each recovery restores
    # the very initial weights (loading them must not let later steps write into them)
    sar.cladapt_adapt(run=run, batch=Batch(x=torch.rand(16, 3, 32, 32)))
    assert sar.recoveries == 2
    assert all(torch.equal(v, initial[k]) for k, v in model.state_dict().items())
    assert sar.initial[1]["state"] == {}
    cleared = _strategy(catalog, "sar", recovery_ema="cleared")
    model2 = _model_with_source_stats()
    with torch.no_grad():
        model2.head.weight.mul_(1000)
    run2 = _fake_run(model2)
    cleared.cladapt_setup(run=run2)
    cleared.cladapt_adapt(run=run2, batch=Batch(x=torch.rand(16, 3, 32, 32)))
    assert cleared.recoveries == 1 and cleared.loss_ema is None


# --- RoTTA --------------------------------------------------------------------------------


def test_robust_bn_mixes_and_remembers_statistics():
    from cladapt.plugins.rotta import RobustBatchNorm

    bn = nn.BatchNorm2d(2).eval()
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(4.0)
    x = torch.randn(16, 2, 4, 4) * 3 + 5
    layer = RobustBatchNorm(bn, 0.25).eval()
    assert torch.allclose(layer(x), bn(x), atol=1e-5)  # eval: the global (source) statistics
    layer.train()
    mean = 0.75 * 1.0 + 0.25 * x.mean((0, 2, 3))
    var = 0.75 * 4.0 + 0.25 * x.var((0, 2, 3), unbiased=False)
    expected = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + bn.eps)
    assert torch.allclose(layer(x), expected, atol=1e-4)
    assert torch.allclose(layer.mean, mean) and torch.allclose(layer.var, var)  # remembered


def test_rotta_memory_is_balanced_over_classes_and_prefers_fresh_certain_images():
    from cladapt.plugins.rotta import CategoryBalancedMemory, timeliness

    mem = CategoryBalancedMemory(capacity=10, num_classes=5)
    for i in range(20):
        mem.add(torch.full((1,), float(i)), 0, 0.1)
    assert mem.occupancy()[0] == 2  # capacity / classes, however many class-0 images come
    assert sorted(float(item.x) for item in mem.slots[0]) == [18.0, 19.0]  # the oldest left
    for c in range(1, 5):
        for _ in range(2):
            mem.add(torch.zeros(1), c, 0.1)
    assert len(mem) == 10
    mem.add(torch.ones(1), 1, math.log(5))  # maximally uncertain: scores above every item
    assert all(float(item.x) == 0.0 for item in mem.slots[1])  # so it is not admitted
    mem.add(torch.ones(1), 1, 0.0)  # certain and new: replaces the highest-scoring class-1 item
    assert sorted(float(item.x) for item in mem.slots[1]) == [0.0, 1.0]
    assert mem.occupancy() == [2, 2, 2, 2, 2]
    w = timeliness(torch.tensor([0.0, 0.5, 2.0]))
    assert w[0] == pytest.approx(0.5) and (w.diff() < 0).all()  # older items weigh less


def test_rotta_scores_the_teacher_and_updates_every_64_images(catalog):
    model = _model_with_source_stats()
    source = copy.deepcopy(model).eval()
    run = _fake_run(model)
    rotta = _strategy(catalog, "rotta")
    rotta.cladapt_setup(run=run)
    g = torch.Generator().manual_seed(4)
    batches = [torch.rand(48, 3, 32, 32, generator=g) for _ in range(3)]
    first = rotta.cladapt_adapt(run=run, batch=Batch(x=batches[0]))
    with torch.no_grad():
        assert torch.allclose(first, source(batches[0]), atol=1e-4)  # teacher = source at first
    assert rotta.updates == 0 and 0 < max(rotta.memory.occupancy()) <= 7  # 64 / 10
    teacher_before = copy.deepcopy(rotta.teacher.state_dict())
    for x in batches[1:]:
        rotta.cladapt_adapt(run=run, batch=Batch(x=x))
    assert rotta.updates == 2 and run.step == 2  # after images 64 and 128
    changed = [
        k for k, v in rotta.teacher.state_dict().items() if not torch.equal(v, teacher_before[k])
    ]
    assert changed  # the EMA teacher and its robust-BN statistics moved
    assert len(rotta.memory) <= 64


def test_rotta_dirichlet_beats_bn_adapt_where_bn_adapt_fails(tmp_path):
    """RoTTA's claim, on its own setting: under temporally correlated labels (Dirichlet),
    batch-statistics methods fail and RoTTA's robust BN does not."""
    spec = RunSpec("digits-shift", "bn-adapt", out=tmp_path / "r.csv", setting="dirichlet")
    bn = execute(spec).result.headline["mean_error"]
    rotta = execute(replace(spec, strategy="rotta")).result.headline["mean_error"]
    assert rotta < bn - 5
