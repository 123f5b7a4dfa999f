"""Strategies and streams used by the robustness tests (loaded with --plugin / load_catalog)."""

from __future__ import annotations

import torch
from cladapt.plugins.baselines import Finetune
from torch.utils.data import Dataset, TensorDataset

from cladapt.batch import StepOutput
from cladapt.hookspecs import hookimpl
from cladapt.strategy import Strategy
from cladapt.stream import Experience, Stream


class NaNLoss(Finetune):
    """Fine-tuning whose loss turns NaN after a few steps."""

    name = "test-nan"

    @hookimpl
    def cladapt_train_step(self, run, batch):
        logits = run.model(batch.x)
        loss = torch.nn.functional.cross_entropy(logits, batch.y)
        return StepOutput(loss=loss * float("nan") if run.step >= 3 else loss, logits=logits)


class InterruptAfterFirst(Finetune):
    """Simulates Ctrl-C right after the first experience has been evaluated."""

    name = "test-interrupt"

    @hookimpl
    def cladapt_before_experience(self, run, experience):
        if run.experience_index == 1:
            raise KeyboardInterrupt


class Drift(Strategy):
    """Shifts every BN bias by +0.5 per batch: state that only a reset can undo."""

    name = "test-drift"
    protocols = ("test_time",)

    @hookimpl
    def cladapt_before_experience(self, run, experience):
        bias = next(m.bias for m in run.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        run.state.setdefault("bias_at_start", []).append(float(bias.detach().sum()))

    @hookimpl
    def cladapt_adapt(self, run, batch):
        with torch.no_grad():
            for m in run.model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.bias += 0.5
        return run.hook.cladapt_predict(run=run, batch=batch)


SENTINEL = 99  # not a valid class: it must never reach a training batch


class SentinelTarget(Dataset):
    """A target dataset that, like most real datasets, returns labels (here: a sentinel)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], SENTINEL


def _digits():
    from cladapt.data.digits import digits_split

    return digits_split()


def uda_leak_stream(data_root=None, seed=0) -> Stream:
    train, test = _digits()
    x = train.tensors[0][:128]
    targets = [
        Experience(
            "tensor-target",
            "domain",
            unlabelled=TensorDataset(x, torch.full((128,), SENTINEL)),
            test=test,
        ),
        Experience("dataset-target", "domain", unlabelled=SentinelTarget(x), test=test),
    ]
    return Stream(
        "test-uda-leak",
        "uda",
        targets,
        [str(i) for i in range(10)],
        (3, 32, 32),
        source=Experience(
            "clean", "domain", train=TensorDataset(*[t[:128] for t in train.tensors]), test=test
        ),
        defaults={"epochs": 1},
    )


def empty_target_stream(data_root=None, seed=0) -> Stream:
    """The leak stream with a target whose unlabelled training set is empty."""
    stream = uda_leak_stream(data_root, seed)
    stream.name = "test-uda-empty-target"
    stream.experiences = [
        Experience(
            "empty-target",
            "domain",
            unlabelled=TensorDataset(torch.zeros(0, 3, 32, 32)),
            test=stream.experiences[0].test,
        )
    ]
    return stream


def wrong_shape_stream(data_root=None, seed=0) -> Stream:
    x = torch.rand(20, 1, 28, 28)
    exp = Experience(
        "t0",
        "task",
        train=TensorDataset(x, torch.zeros(20, dtype=torch.long)),
        test=TensorDataset(x, torch.zeros(20, dtype=torch.long)),
    )
    return Stream("test-wrong-shape", "continual", [exp], ["a", "b"], (3, 32, 32))


@hookimpl
def cladapt_register_strategies(registry):
    for cls in (NaNLoss, InterruptAfterFirst, Drift):
        registry.add(cls)


@hookimpl
def cladapt_register_streams(registry):
    registry.add("test-uda-leak", uda_leak_stream, protocol="uda")
    registry.add("test-wrong-shape", wrong_shape_stream, protocol="continual")
    registry.add("test-uda-empty-target", empty_target_stream, protocol="uda")
    registry.add("test-digits-uda-noise", noise_only_uda_stream, protocol="uda")
    registry.add("test-digits-c3", digits_c3_stream, protocol="test_time")


def digits_c3_stream(data_root=None, seed=0) -> Stream:
    """digits-c restricted to three corruptions (fast tests of the test-time settings)."""
    from cladapt.streams.builtin import definitions
    from cladapt.streams.corruptions import build_digits_corruptions

    d = dict(definitions()["digits-c"])
    d["corruptions"] = ["gaussian_noise", "shot_noise", "fog"]
    return build_digits_corruptions("test-digits-c3", d)


class BatchSpy:
    """Run-event observer: records the labels of every training batch (via extra_losses)."""

    def __init__(self) -> None:
        self.labels: list[torch.Tensor] = []
        self.target_sizes: list[int | None] = []
        self.target_labels: list[torch.Tensor | None] = []

    @hookimpl
    def cladapt_extra_losses(self, run, batch, outputs):
        self.labels.append(batch.y.clone())
        self.target_sizes.append(None if batch.x_target is None else batch.x_target.shape[0])
        self.target_labels.append(None if batch.y_target is None else batch.y_target.clone())
        return None


def noise_only_uda_stream(data_root=None, seed=0) -> Stream:
    """digits-uda restricted to its noise target (fast tests of DANN vs source-only)."""
    from cladapt.streams.builtin import definitions
    from cladapt.streams.digits import build_digits_uda

    d = dict(definitions()["digits-uda"])
    d["targets"] = [t for t in d["targets"] if t["name"] == "gaussian_noise"]
    return build_digits_uda("test-digits-uda-noise", d)
