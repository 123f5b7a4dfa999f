"""Continual baselines (independent, joint, nmc), regulariser plugins (LwF, EWC), FLOP counts."""

import json
import types

import pytest
import torch
import torch.nn.functional as F
from cladapt.plugins.regularizers import LwF, diagonal_fisher
from torch.utils.data import TensorDataset

from cladapt.hookspecs import hookimpl
from cladapt.models.features import features
from cladapt.results import read_results
from cladapt.runner import RunSpec, execute
from cladapt.stream import Experience

# SmallCNN (width 16, 4 stages) on 3x32x32, counted by hand (2 FLOPs per multiply-add; BN,
# ReLU, pooling not counted):
CONV1 = 2 * 32 * 32 * 16 * 3 * 9  # 884,736
CONV2 = 2 * 16 * 16 * 32 * 16 * 9  # 2,359,296
CONV3 = 2 * 8 * 8 * 64 * 32 * 9  # 2,359,296
CONV4 = 2 * 4 * 4 * 64 * 64 * 9  # 1,179,648
FC = 2 * 64 * 10
FORWARD = CONV1 + CONV2 + CONV3 + CONV4 + FC
# backward: weight gradients for every layer, input gradients for all but the first conv
TRAIN = FORWARD + (CONV1 + CONV2 + CONV3 + CONV4 + FC) + (CONV2 + CONV3 + CONV4 + FC)
N_TRAIN, N_TEST, T = 1257, 540, 5


def run(catalog, strategy, out, **kw):
    sets = kw.pop("sets", {"epochs": "1"})
    return execute(RunSpec("digits", strategy, sets, out=out, device="cpu", **kw), catalog)


def test_flops_match_a_hand_count(catalog, out):
    outcome = run(catalog, "finetune", out)
    assert outcome.summary["inference_flops"] == FORWARD * N_TEST * (T + 1)  # initial row + T rows
    assert outcome.summary["train_flops"] == TRAIN * N_TRAIN
    per_task = read_results(out).query("metric == 'train_flops' and row_type == 'eval'")
    assert len(per_task) == T and per_task.value.sum() == TRAIN * N_TRAIN


def test_nmc_is_the_nearest_class_mean_of_frozen_features(catalog, out):
    outcome = run(catalog, "nmc", out, sets={"epochs": "3"})
    model = outcome.run.model
    train_x = torch.cat([e.train.tensors[0] for e in outcome.run.stream.experiences])
    train_y = torch.cat([e.train.tensors[1] for e in outcome.run.stream.experiences])
    with torch.no_grad():
        model.eval()
        unit = F.normalize(features(model, train_x), dim=1)  # the paper's default
        means = torch.stack([unit[train_y == c].mean(0) for c in range(10)])
        for j, e in enumerate(outcome.run.stream.experiences):
            x, y = e.test.tensors
            pred = torch.cdist(F.normalize(features(model, x), dim=1), means).argmin(1)
            assert outcome.result.tables["accuracy_matrix"][-1, j] == pytest.approx(
                100 * (pred == y).float().mean().item(), abs=1e-4
            )
    assert outcome.summary["trainable_params"] == 0
    # features only (no classifier layer), one pass even with epochs=3
    assert outcome.summary["train_flops"] == (CONV1 + CONV2 + CONV3 + CONV4) * N_TRAIN
    assert outcome.summary["forgetting"] < 20  # means never move: little forgetting


class WeightSpy:
    def __init__(self):
        self.first_conv = []

    @hookimpl
    def cladapt_before_experience(self, run, experience):
        self.first_conv.append(next(run.model.parameters()).detach().clone())


def test_independent_restarts_from_the_initial_weights(catalog, out):
    spy = WeightSpy()
    run(catalog, "independent", out, run_plugins=(spy,))
    assert len(spy.first_conv) == T
    assert all(torch.equal(w, spy.first_conv[0]) for w in spy.first_conv)


def test_joint_trains_on_everything_seen_and_is_the_upper_bound(catalog, out):
    sets = {"epochs": "3"}
    joint = run(catalog, "joint", out, sets=sets)
    finetune = run(catalog, "finetune", out, sets=sets)
    assert joint.summary["avg_accuracy"] > finetune.summary["avg_accuracy"] + 30
    # task t trains on t+1 tasks' data: the compute grows with the stream
    assert joint.summary["train_flops"] > 2.5 * finetune.summary["train_flops"]


def test_joint_task_incremental_trains_on_mixed_tasks(catalog, out):
    # the union of tasks carries labels outside the current task's mask: they must stay allowed
    outcome = run(catalog, "joint", out, sets={"epochs": "2"}, setting="task-incremental")
    assert outcome.summary["avg_accuracy"] > 90


def test_joint_task_incremental_trains_each_sample_on_its_own_tasks_head():
    """The multi-head joint bound: a sample of task k competes only with task k's classes (as it
    is evaluated), with or without label smoothing, never with the other tasks' classes."""
    from cladapt.plugins.continual import Joint

    from cladapt.batch import Batch

    exps = [types.SimpleNamespace(classes=[0, 1]), types.SimpleNamespace(classes=[2, 3, 4])]
    run_ = types.SimpleNamespace(
        stream=types.SimpleNamespace(experiences=exps),
        experience_index=1,
        params=types.SimpleNamespace(label_smoothing=0.0),
        model=torch.nn.Identity(),
    )
    joint = Joint.__new__(Joint)
    current = torch.tensor([False, False, True, True, True])  # the protocol's mask: task 1
    table = joint.task_masks(run_, current)
    assert table[0].tolist() == [True, True, False, False, False]
    assert table[3].tolist() == [False, False, True, True, True]
    logits = torch.tensor([[2.0, 0.0, 9.0, 9.0, 9.0], [0.0, 0.0, 1.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    for smoothing in (0.0, 0.1):
        run_.params.label_smoothing = smoothing
        got = joint.cladapt_train_step(run=run_, batch=Batch(x=logits, y=y, class_mask=current))
        # each row's loss over its own task's logits only: task 0's row ignores the 9s
        rows = [logits[0, :2], logits[1, 2:]]
        targets = [0, 0]
        expected = torch.stack(
            [
                torch.nn.functional.cross_entropy(
                    r[None], torch.tensor([t]), label_smoothing=smoothing
                )
                for r, t in zip(rows, targets, strict=True)
            ]
        ).mean()
        assert torch.allclose(got.loss, expected, atol=1e-6)


def test_lwf_loss_is_soft_cross_entropy_on_old_classes():
    reg = LwF()
    teacher = torch.nn.Linear(4, 6)
    reg.teacher, reg.old = teacher, torch.tensor([0, 2])
    x = torch.randn(8, 4)
    student = teacher(x).detach() * 0.5
    loss = reg.cladapt_extra_losses(
        run=None, batch=types.SimpleNamespace(x=x), outputs=types.SimpleNamespace(logits=student)
    )
    with torch.no_grad():
        p = F.softmax(teacher(x)[:, [0, 2]] / 2.0, dim=1)
        expected = -(p * F.log_softmax(student[:, [0, 2]] / 2.0, dim=1)).sum(1).mean()
    assert loss.item() == pytest.approx(expected.item())
    reg.teacher = None
    assert reg.cladapt_extra_losses(run=None, batch=None, outputs=None) is None


def test_with_lwf_composes_with_any_trainer_and_is_recorded(catalog, out):
    plain = run(catalog, "finetune", out, sets={"epochs": "2"})
    composed = run(
        catalog, "finetune", out, sets={"epochs": "2", "lwf_alpha": "5"}, regularizers=("lwf",)
    )
    assert not (
        plain.result.tables["accuracy_matrix"] == composed.result.tables["accuracy_matrix"]
    ).all()
    rows = read_results(out)
    params = json.loads(rows.params_json.iloc[-1])
    assert params["with_lwf"] == {"lwf_alpha": 5.0, "lwf_temperature": 2.0}
    # the leaderboard entry names the parts: never mistaken for plain finetune
    assert list(rows.drop_duplicates("run_id").strategy) == ["finetune", "finetune+lwf"]
    # the lwf strategy is finetune with LwF always on
    named = run(catalog, "lwf", out, sets={"epochs": "2", "lwf_alpha": "5"})
    assert (
        named.result.tables["accuracy_matrix"] == composed.result.tables["accuracy_matrix"]
    ).all()


def test_unknown_regularizer_suggests(catalog, out):
    from cladapt.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="did you mean 'ewc'"):
        run(catalog, "finetune", out, regularizers=("ewk",))


def test_fisher_matches_softmax_regression_closed_form():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x = torch.randn(4000, 4)
    fake_run = types.SimpleNamespace(
        model=model, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0)
    )
    exp = Experience("t", train=TensorDataset(x, torch.zeros(len(x), dtype=torch.long)))
    fisher = diagonal_fisher(fake_run, exp, None, samples=len(x))
    with torch.no_grad():
        p = F.softmax(
            model(x), dim=1
        )  # d log p(y)/d W_k = (1[y=k] - p_k) x  ->  E_y[.^2] = p_k (1 - p_k) x^2
        v = p * (1 - p)
        expected_w = (v.unsqueeze(2) * x.pow(2).unsqueeze(1)).mean(0)
        expected_b = v.mean(0)
    assert torch.allclose(fisher["weight"], expected_w, rtol=0.1, atol=1e-3)
    assert torch.allclose(fisher["bias"], expected_b, rtol=0.1, atol=1e-3)


def test_ewc_penalty_formula():
    from cladapt.plugins.regularizers import EWC, EWCConfig

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    reg = EWC(EWCConfig(ewc_lambda=4.0))
    fisher = {k: torch.rand_like(p) for k, p in model.named_parameters()}
    reg.anchors.append((fisher, {k: p.detach().clone() for k, p in model.named_parameters()}))
    fake_run = types.SimpleNamespace(model=model)
    assert reg.cladapt_extra_losses(run=fake_run, batch=None, outputs=None).item() == 0.0
    with torch.no_grad():
        model.weight += 0.5
    expected = 0.5 * 4.0 * (fisher["weight"] * 0.25).sum()
    assert reg.cladapt_extra_losses(run=fake_run, batch=None, outputs=None).item() == pytest.approx(
        expected.item()
    )


def test_ewc_strategy_anchors_every_task(catalog, out):
    outcome = run(catalog, "ewc", out, sets={"epochs": "1", "ewc_samples": "64"})
    assert json.loads(read_results(out).params_json.iloc[-1])["with_ewc"]["ewc_samples"] == 64
    assert outcome.summary["avg_accuracy"] >= 0  # ran to the end with the penalty on


def test_nmc_distances_by_hand():
    """The paper's NMC: L2-normalised features, class means of those (not renormalised),
    Euclidean distance; raw Euclidean and cosine as options."""
    from types import SimpleNamespace

    from cladapt.plugins.continual import NMC, NMCConfig

    feats = torch.tensor([[3.0, 0.0], [0.0, 1.0], [4.0, 3.0], [0.0, 10.0]])
    labels = torch.tensor([0, 0, 1, 1])
    query = torch.tensor([[6.0, 8.0]])
    expected = {}
    unit = feats / feats.norm(dim=1, keepdim=True)
    q = query / query.norm()
    means_n = torch.stack([unit[labels == c].mean(0) for c in (0, 1)])
    expected["normalized"] = -(q - means_n).norm(dim=1)
    means_raw = torch.stack([feats[labels == c].mean(0) for c in (0, 1)])
    expected["euclidean"] = -(query - means_raw).norm(dim=1)
    means_c = means_n / means_n.norm(dim=1, keepdim=True)
    expected["cosine"] = -(q - means_c).norm(dim=1)
    assert NMCConfig().distance == "normalized"
    import contextlib

    import cladapt.plugins.continual as continual

    run = SimpleNamespace(model=torch.nn.Identity(), autocast=contextlib.nullcontext, state={})
    original = continual.features
    continual.features = lambda model, x: x  # the "backbone" returns the hand-made features
    try:
        for distance, want in expected.items():
            nmc = NMC(NMCConfig(distance=distance))
            nmc.sums, nmc.counts = torch.zeros(2, 2), torch.zeros(2)
            nmc.cladapt_train_step(run, SimpleNamespace(x=feats, y=labels))
            got = nmc.cladapt_predict(run, SimpleNamespace(x=query, class_mask=None))
            torch.testing.assert_close(got[0], want, msg=distance)
    finally:
        continual.features = original
    # the means of normalised features are not unit vectors: normalized != cosine here
    assert not torch.allclose(expected["normalized"], expected["cosine"])
