"""Non-i.i.d. test orders (settings ``correlated`` and ``dirichlet``)."""

from __future__ import annotations

import pytest
import torch

from cladapt.data.label_order import dirichlet_order, sorted_order
from cladapt.results import read_results
from cladapt.runner import RunSpec, execute


def _same_label_neighbours(labels: torch.Tensor) -> float:
    return float((labels[1:] == labels[:-1]).float().mean())


def test_sorted_order_visits_classes_in_turn_each_in_a_seeded_random_order():
    labels = torch.arange(10).repeat(30)  # 0..9, 0..9, ...: i.i.d.-like interleaving
    a = sorted_order(labels, torch.Generator().manual_seed(0))
    b = sorted_order(labels, torch.Generator().manual_seed(1))
    assert sorted(a.tolist()) == list(range(300))  # a permutation: every image once
    assert labels[a].tolist() == sorted(labels.tolist())
    assert not torch.equal(a, b)  # within a class the order is random
    assert torch.equal(a, sorted_order(labels, torch.Generator().manual_seed(0)))


def test_dirichlet_order_is_a_permutation_whose_correlation_follows_gamma():
    labels = torch.arange(10).repeat(60)
    g = torch.Generator().manual_seed(0)
    iid = _same_label_neighbours(labels[torch.randperm(600, generator=g)])
    strong = dirichlet_order(labels, 0.01, g)
    weak = dirichlet_order(labels, 100.0, g)
    for order in (strong, weak):
        assert sorted(order.tolist()) == list(range(600))
    # RoTTA's gamma 0.1 regime: most of a class falls in one time slot -> long single-class runs
    assert _same_label_neighbours(labels[strong]) > 0.9
    # large gamma: every class split evenly over the 10 slots, chunks of ~6 -> short runs
    assert iid < 0.2 < _same_label_neighbours(labels[weak]) < 0.9


@pytest.mark.parametrize("setting", ["correlated", "dirichlet"])
def test_correlated_test_orders_break_batch_statistics_but_not_the_source_model(setting, tmp_path):
    """The known result these settings exist for (RoTTA, NOTE): normalising with the statistics
    of a batch of one or two classes hurts. The source model scores the same images either way."""
    errors = {}
    for strategy in ("source", "bn-adapt"):
        for s in ("continual", setting):
            spec = RunSpec("digits-shift", strategy, setting=s, out=tmp_path / "r.csv")
            errors[strategy, s] = execute(spec).result.headline["mean_error"]
    assert errors["source", setting] == pytest.approx(errors["source", "continual"], abs=1e-9)
    assert errors["bn-adapt", setting] > errors["bn-adapt", "continual"] + 10
    df = read_results(tmp_path / "r.csv")
    assert set(df.setting) == {"continual", setting}
