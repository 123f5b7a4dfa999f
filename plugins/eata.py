"""EATA: efficient anti-forgetting test-time adaptation (``eata``).

Niu, Wu, Zhang, Chen, Zheng, Zhao, Tan, "Efficient Test-Time Model Adaptation without
Forgetting", ICML 2022; official code mr-eggplant/EATA (``eata.py``, ``main.py``). Followed
line by line:

- Tent's configuration: only the affine parameters of the normalisation layers train; BatchNorm
  normalises with the test batch.
- Reliable-sample filtering (Eqn. 3): only samples whose prediction entropy is below
  ``E0 = entropy_margin * ln C`` enter the loss.
- Redundant-sample filtering (Eqn. 5): of those, a sample enters only if the cosine similarity
  of its softmax to a moving average of earlier selected softmaxes (EMA 0.9, Eqn. 4) is below
  ``d_margin`` in absolute value.
- Sample weights exp(E0 - E(x)), detached (Eqn. 6); loss = mean weighted entropy over the
  selected samples, plus the Fisher anti-forgetting term ``fisher_alpha * sum_i F_i (theta_i -
  theta0_i)^2`` (Eqn. 8-9). No update when no sample is selected (as the official code).
- Fisher information: on ``fisher_samples`` labelled-source images with the model's own
  predictions as labels (the official code uses its pseudo-labels, not the true labels), the
  squared gradient of the batch cross-entropy averaged over batches, before any adaptation.
- The scored logits are those of the forward pass that computed the loss (before the update).

Defaults: the peer benchmark's CIFAR-10 configuration (mariodoebler/test-time-adaptation,
``cfgs/cifar10_c/eata.yaml``: Adam lr 1e-3, ``fisher_alpha`` 1, ``d_margin`` 0.4, E0 = 0.4 ln C,
2000 source samples), because the official repository has ImageNet settings only. The streams
set the others (``strategy_defaults`` in ``streams/corruptions.toml``): cifar100-c the peer's
``cfgs/cifar100_c/eata.yaml`` (``d_margin`` 0.1), imagenet-c the official ImageNet settings (SGD
lr 2.5e-4, momentum 0.9, ``fisher_alpha`` 2000, ``d_margin`` 0.05). The Fisher information needs
clean in-distribution images: the stream's labelled source data where it has some, else
``--set fisher_data=DIR`` (the official code: 2000 clean ImageNet validation images). Without
either EATA runs without its Fisher term — ETA, as the peer does — and its rows say so: the
configuration label reads ``fisher=none (ETA)`` and ``describe`` has ``fisher: 0``.
Deviations, stated: the Fisher batches have the test batch size (the official code's loader
has it too). One number is read from the device per batch (how many samples were selected), as
the official code's ``if`` needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from cladapt.plugins.tta import configure_norm_adaptation

from cladapt.adaptation import adapt_step, entropy
from cladapt.batch import Batch
from cladapt.config import param
from cladapt.context import Run
from cladapt.data.batching import iterate
from cladapt.hookspecs import hookimpl
from cladapt.optim import make_optimizer
from cladapt.registry import StrategyRegistry
from cladapt.strategy import Strategy

PROBS_EMA = 0.9  # the official update_model_probs


@dataclass
class EATAConfig:
    optimizer: Literal["sgd", "adam"] = param(
        "adam", "optimizer (peer CIFAR config: Adam; official ImageNet: SGD)"
    )
    lr: float = param(
        1e-3, "learning rate (CIFAR: 1e-3; official ImageNet SGD: 2.5e-4)", ge=0, le=10
    )
    momentum: float = param(0.9, "SGD momentum / Adam beta1", ge=0, lt=1)
    entropy_margin: float = param(
        0.4, "reliable samples: entropy < entropy_margin * ln C (E0, Eqn. 3)", ge=0
    )
    d_margin: float = param(
        0.4,
        "redundant samples: |cos| to the running mean softmax >= this are dropped (Eqn. 5)",
        ge=0,
    )
    fisher_alpha: float = param(
        1.0, "weight of the Fisher anti-forgetting term (0: ETA; official ImageNet: 2000)", ge=0
    )
    fisher_samples: int = param(2000, "labelled-source images for the Fisher information", ge=0)
    fisher_data: str = param(
        "",
        "a folder of clean in-distribution images (<class>/<image> or flat) for the Fisher "
        "information on a stream without labelled source data (the official ImageNet code takes "
        "2000 clean ImageNet validation images; labels are not needed: EATA uses its own "
        "predictions)",
    )


def select_samples(
    logits: torch.Tensor, e_margin: float, running_probs: torch.Tensor | None, d_margin: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EATA's two filters: (reliable mask, selected mask, per-sample entropy). A sample is
    selected if reliable and, once a running mean softmax exists, not redundant with it."""
    ent = entropy(logits)
    reliable = ent < e_margin
    selected = reliable
    if running_probs is not None:
        cos = F.cosine_similarity(running_probs[None], logits.float().softmax(1), dim=1)
        selected = reliable & (cos.abs() < d_margin)
    return reliable, selected, ent


def fisher_images(run: Run, c: EATAConfig):
    """Clean in-distribution images for the Fisher information: ``fisher_data`` when given,
    else the stream's labelled source training data, else None (EATA runs as ETA)."""
    if c.fisher_data:
        from cladapt.data.folders import evaluation_images

        return evaluation_images(c.fisher_data, run.stream.input_shape[-1], "fisher_data")
    source = run.stream.source
    return source.train if source is not None and source.train is not None else None


def runs_as_eta(stream, cfg: EATAConfig) -> bool:
    """Whether a run of ``cfg`` on ``stream`` has no images for its Fisher term."""
    has_source = stream.source is not None and stream.source.train is not None
    wants = cfg.fisher_alpha > 0 and cfg.fisher_samples > 0
    return wants and not cfg.fisher_data and not has_source


def fisher_information(
    run: Run, params: dict[str, torch.nn.Parameter], samples: int, batch_size: int, data
) -> dict[str, torch.Tensor]:
    """Squared gradients of the pseudo-labelled cross-entropy on clean images, averaged over
    batches (the official ``main.py``)."""
    n = min(samples, len(data))
    # its own generator: drawing from run.generator would change the test order, which every
    # method must share
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(run.seed))[:n]
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    batches = 0
    for x, _ in iterate(data, batch_size, run.device, shuffle=False, order=order):
        logits = run.model(x).float()
        loss = F.cross_entropy(logits, logits.argmax(1))
        grads = torch.autograd.grad(loss, list(params.values()))
        for name, g in zip(params, grads, strict=True):
            fisher[name] += g.detach() ** 2
        batches += 1
    return {name: f / max(batches, 1) for name, f in fisher.items()}


class EATA(Strategy):
    """EATA: entropy minimisation on reliable, non-redundant samples with a Fisher
    anti-forgetting penalty (Niu et al., ICML 2022)."""

    name = "eata"
    protocols = ("test_time",)
    Config = EATAConfig

    @staticmethod
    def configuration_facts(stream, cfg: EATAConfig) -> list[str]:
        """What the run's configuration label adds: a run without Fisher images is ETA."""
        return ["fisher=none (ETA)"] if runs_as_eta(stream, cfg) else []

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        c = self.cfg
        params = configure_norm_adaptation(run)
        names = {id(p): n for n, p in run.model.named_parameters()}
        self.params = {names[id(p)]: p for p in params}
        self.e_margin = c.entropy_margin * math.log(run.stream.num_classes)
        self.fisher: dict[str, torch.Tensor] | None = None
        data = fisher_images(run, c)
        if c.fisher_alpha > 0 and c.fisher_samples > 0 and data is not None:
            self.fisher = fisher_information(
                run, self.params, c.fisher_samples, run.params.batch_size, data
            )
            self.anchor = {n: p.detach().clone() for n, p in self.params.items()}
        run.optimizer = make_optimizer(c.optimizer, params, c.lr, c.momentum)
        self.running_probs: torch.Tensor | None = None
        self.seen = self.reliable = self.selected = 0

    @hookimpl
    def cladapt_reset(self, run: Run) -> None:
        """Nothing of EATA's own: the protocol restores model and optimizer, as the official
        ``EATA.reset()`` does, which leaves ``current_model_probs`` (the moving average of the
        predictions the redundancy filter compares with) as it was."""

    def _anti_forgetting(self) -> torch.Tensor:
        return self.cfg.fisher_alpha * sum(
            (self.fisher[n] * (p - self.anchor[n]) ** 2).sum() for n, p in self.params.items()
        )

    @hookimpl
    def cladapt_adapt(self, run: Run, batch: Batch) -> torch.Tensor:
        with run.autocast():
            logits = run.model(batch.x)
        reliable, selected, ent = select_samples(
            logits, self.e_margin, self.running_probs, self.cfg.d_margin
        )
        count = int(selected.sum())  # the one host read per batch: update or not
        self.seen += len(ent)
        self.reliable += int(reliable.sum())
        self.selected += count
        if count:
            probs = logits.detach().float().softmax(1)[selected].mean(0)
            self.running_probs = (
                probs
                if self.running_probs is None
                else PROBS_EMA * self.running_probs + (1 - PROBS_EMA) * probs
            )
            weight = torch.exp(self.e_margin - ent.detach())
            loss = (ent * weight)[selected].mean()
            if self.fisher is not None:
                loss = loss + self._anti_forgetting()
            adapt_step(run, loss)
        return logits.detach().float()

    @hookimpl
    def cladapt_describe(self, run: Run) -> dict[str, float]:
        seen = max(self.seen, 1)
        return {
            "reliable_fraction": round(self.reliable / seen, 4),
            "selected_fraction": round(self.selected / seen, 4),
            "fisher": int(self.fisher is not None),
        }


@hookimpl
def cladapt_register_strategies(registry: StrategyRegistry) -> None:
    registry.add(EATA)
