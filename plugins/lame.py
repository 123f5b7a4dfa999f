"""LAME: Laplacian Adjusted Maximum-likelihood Estimation (``lame``).

Boudiaf, Mueller, Ben Ayed, Bertinetto, "Parameter-free Online Test-time Adaptation", CVPR 2022;
official code fiveai/LAME (``src/adaptation/lame.py``). The model is never changed: for each
test batch LAME takes the frozen source model's probabilities p and its L2-normalised pooled
features, builds an affinity W between the batch's samples, and returns the assignments Y that
minimise the Laplacian-regularised energy, by the paper's bound optimisation
``Y <- softmax(log p + W Y)`` from ``Y = p`` until the energy changes by at most 1e-8 relative
(at most 100 steps). Affinities as the official code: ``knn`` (binary k nearest neighbours, self
excluded), ``rbf`` (sigma = mean distance to the k-th neighbour; the official default) and
``linear``. The scored output is log Y (argmax Y, as the official code's predictions).

Defaults: the official overall best (``configs/method/best/LAME/overall_best.yaml``: 5
neighbours, the default ``rbf`` affinity), also the peer benchmark's (mariodoebler/
test-time-adaptation). The source model runs in eval mode (source BN statistics), as there.
Deviation: none in the method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from cladapt.batch import Batch
from cladapt.config import param
from cladapt.context import Run
from cladapt.errors import ConfigError
from cladapt.hookspecs import hookimpl
from cladapt.models.features import features_and_logits
from cladapt.registry import StrategyRegistry
from cladapt.strategy import Strategy


def affinity(feats: torch.Tensor, kind: str, knn: int) -> torch.Tensor:
    """[N, N] affinity of L2-normalised features (fiveai/LAME's three kinds)."""
    n = feats.shape[0]
    if kind == "linear":
        return feats @ feats.t()
    dist = torch.cdist(feats, feats)
    if kind == "rbf":
        kth = dist.topk(min(knn, n), dim=-1, largest=False).values[:, -1]
        sigma = kth.mean()
        return torch.exp(-(dist**2) / (2 * sigma**2))
    neighbours = dist.topk(min(knn + 1, n), dim=-1, largest=False).indices[:, 1:]  # not itself
    return torch.zeros(n, n, device=feats.device).scatter_(-1, neighbours, 1.0)


def laplacian_assignments(
    probs: torch.Tensor, kernel: torch.Tensor, max_steps: int = 100
) -> torch.Tensor:
    """Y by LAME's bound optimisation of E(Y) = sum Y(-log p) - sum W Y Y + sum Y log Y."""
    unary = -torch.log(probs + 1e-10)
    y = probs.clone()
    old = float("inf")
    for steps in range(1, max_steps + 1):
        pairwise = kernel @ y
        y = (-unary + pairwise).softmax(-1)
        energy = float((unary * y - pairwise * y + y * torch.log(y.clamp_min(1e-20))).sum())
        if steps > 2 and abs(energy - old) <= 1e-8 * abs(old):
            break
        old = energy
    return y


@dataclass
class LAMEConfig:
    affinity: Literal["knn", "rbf", "linear"] = param(
        "rbf", "affinity between a batch's features (official default and overall best: rbf)"
    )
    knn: int = param(5, "neighbours for the knn affinity and the rbf bandwidth", ge=1)
    max_steps: int = param(100, "bound-optimisation steps at most", ge=1)


class LAME(Strategy):
    """LAME (Boudiaf et al. CVPR 2022): output-only Laplacian adjustment; no parameter changes."""

    name = "lame"
    protocols = ("test_time",)
    Config = LAMEConfig

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        if run.amp_dtype is not None:
            # bf16 features move which neighbours the affinity links, and the bound optimisation
            # amplifies it: 2.7 points on three digits-c domains (tests/test_precision.py)
            raise ConfigError(
                "lame runs in fp32 only: low-precision features change its affinity graph and "
                "its predictions; drop --set amp"
            )
        run.model.requires_grad_(False)
        run.model.eval()

    @hookimpl
    def cladapt_adapt(self, run: Run, batch: Batch) -> torch.Tensor:
        c = self.cfg
        with torch.no_grad(), run.autocast():
            feats, logits = features_and_logits(run.model, batch.x)
        probs = logits.float().softmax(-1)
        kernel = affinity(F.normalize(feats.float(), dim=-1), c.affinity, c.knn)
        y = laplacian_assignments(probs, kernel, c.max_steps)
        return torch.log(y.clamp_min(1e-20))


@hookimpl
def cladapt_register_strategies(registry: StrategyRegistry) -> None:
    registry.add(LAME)
