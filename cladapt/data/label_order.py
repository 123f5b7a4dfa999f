"""Non-i.i.d. test orders for test-time adaptation: the labels of consecutive batches correlated.

- ``sorted``: the peer benchmark's ``correlated`` setting (mariodoebler/test-time-adaptation,
  ``DELTA_DIRICHLET = 0``): the domain's samples shuffled, then sorted by class, ascending.
- ``dirichlet``: RoTTA's ``LabelDirichletDomainSequence`` (Yuan et al., CVPR 2023,
  ``core/data/ttasampler.py``): ``min(C, 100)`` time slots; each class's samples are split over the
  slots in proportions drawn from Dirichlet(gamma, ..., gamma); within a slot the class chunks
  follow in a random order. Small gamma (RoTTA: 0.1) puts most of a class in one slot. Deviation:
  RoTTA splits each class's samples in dataset order; we shuffle them first (the same in
  distribution for CIFAR-10-C, whose files are in random order, and not dependent on how a
  dataset happens to be stored).
"""

from __future__ import annotations

import numpy as np
import torch


def _rng(generator: torch.Generator | None) -> np.random.Generator:
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    return np.random.default_rng(seed)


def sorted_order(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices that visit the samples class by class (ascending), each class in random order."""
    shuffled = torch.randperm(len(labels), generator=generator)
    by_class = torch.sort(labels.cpu()[shuffled], stable=True).indices
    return shuffled[by_class]


def dirichlet_order(
    labels: torch.Tensor, gamma: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """RoTTA's temporally correlated order (see the module docstring)."""
    rng = _rng(generator)
    y = labels.cpu().numpy()
    classes = np.unique(y)
    slots: list[list[np.ndarray]] = [[] for _ in range(min(len(classes), 100))]
    for c in classes:
        ids = rng.permutation(np.flatnonzero(y == c))
        share = rng.dirichlet([gamma] * len(slots))
        cuts = (np.cumsum(share)[:-1] * len(ids)).astype(int)
        for slot, part in zip(slots, np.split(ids, cuts), strict=True):
            slot.append(part)
    order = [part for slot in slots for k in rng.permutation(len(slot)) if len(part := slot[k])]
    return torch.from_numpy(np.concatenate(order)).long()
