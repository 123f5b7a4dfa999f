"""DANN: gradient reversal, schedules, heads, no target-label leak, and the adaptation effect."""

import math

import pytest
import torch
from cladapt.plugins.dann import (
    DANN,
    adaptation_factor,
    annealed_lr,
    domain_classifier,
    grad_reverse,
)

from cladapt.manager import load_catalog
from cladapt.runner import RunSpec, execute


@pytest.fixture(scope="module")
def extra_catalog():
    return load_catalog(["plugins_for_tests"])


@pytest.mark.parametrize("coeff", [0.0, 0.3, 1.0, 2.5])
def test_grl_is_identity_forward_and_scaled_negation_backward(coeff):
    torch.manual_seed(0)
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    y = grad_reverse(x, coeff)
    assert torch.equal(y, x)
    upstream = torch.randn(7, 5, dtype=torch.float64)
    (g,) = torch.autograd.grad(y, x, upstream)
    assert torch.equal(g, -coeff * upstream)


def test_grl_reverses_only_below_itself():
    torch.manual_seed(0)
    feat = torch.nn.Linear(4, 3).double()
    head = torch.nn.Linear(3, 1).double()
    x = torch.randn(6, 4, dtype=torch.float64)

    def grads(coeff):
        feat.zero_grad(), head.zero_grad()
        f = feat(x)
        out = head(grad_reverse(f, coeff) if coeff is not None else f)
        out.sum().backward()
        return feat.weight.grad.clone(), head.weight.grad.clone()

    gf_plain, gh_plain = grads(None)
    gf_rev, gh_rev = grads(0.7)
    assert torch.allclose(gh_rev, gh_plain)  # the domain head learns to discriminate as usual
    assert torch.allclose(gf_rev, -0.7 * gf_plain)  # the features learn to confuse it


def test_adaptation_factor_schedule():
    assert adaptation_factor(0.0) == 0.0
    assert adaptation_factor(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)  # 0.98661
    assert adaptation_factor(1.0) == pytest.approx(0.9999092, abs=1e-7)
    values = [adaptation_factor(p / 10) for p in range(11)]
    assert values == sorted(values)


def test_learning_rate_annealing():
    assert annealed_lr(0.01, 0.0) == 0.01
    assert annealed_lr(0.01, 1.0) == pytest.approx(0.01 / 11**0.75)
    assert annealed_lr(0.01, 0.5) == pytest.approx(0.01 / 6**0.75)


def test_domain_heads():
    small, large = domain_classifier(128, "small"), domain_classifier(2048, "large")
    assert [m.out_features for m in small if isinstance(m, torch.nn.Linear)] == [100, 2]
    assert [m.out_features for m in large if isinstance(m, torch.nn.Linear)] == [1024, 1024, 1]
    assert sum(isinstance(m, torch.nn.Dropout) for m in large) == 2


def test_dann_run_never_sees_target_labels_and_anneals(extra_catalog, out):
    from plugins_for_tests import SENTINEL, BatchSpy

    spy = BatchSpy()
    outcome = execute(
        RunSpec(
            "test-uda-leak", "dann", {"epochs": "2"}, out=out, device="cpu", run_plugins=(spy,)
        ),
        extra_catalog,
    )
    labels = torch.cat(spy.labels)
    assert len(labels) > 0 and not (labels == SENTINEL).any() and int(labels.max()) < 10
    assert set(spy.target_sizes) == {32}
    strategy = outcome.run.strategy
    assert isinstance(strategy, DANN) and strategy.kind == "small"
    # the last step ran at p = (total-1)/total; the lr is the annealed one
    total = outcome.run.state["total_steps"]
    p_last = (total - 1) / total
    assert outcome.run.optimizer.param_groups[0]["lr"] == pytest.approx(annealed_lr(0.01, p_last))
    # the official codes' warm start over iterations (tllib, thuml/CDAN): 2/(1+exp(-i/1000))-1
    assert outcome.run.state["dann_lambda"] == pytest.approx(
        2 / (1 + math.exp(-(total - 1) / 1000)) - 1
    )
    assert adaptation_factor((total - 1) / 1000, 1.0) == outcome.run.state["dann_lambda"]
    assert outcome.summary["domain_head_params"] == sum(
        p.numel() for p in strategy.head.parameters()
    )
