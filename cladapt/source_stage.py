"""A strategy's one-off training of the parameters it adds, on the stream's labelled source data,
before test time: EcoTTA's meta-network warm-up, ViDA's source-trained adapters.

The result is a cache artefact like the source model: named by the fingerprint of everything that
determines it (the source data, the source weights' digest, the recipe), made once (concurrent
bench workers wait for the first one), and, for the embedded streams' default recipes, shipped in
the package (:mod:`cladapt.models.shipped`) so that every machine starts test time from the same
bytes. The data order is fixed (generator seed 0) so that every run seed adapts from the same
trained parameters; the time is not counted in the run's adaptation time. Made under autocast
(``--set amp=bf16|fp16``) it is a separate artefact, so an fp32 run never loads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cladapt.cache import cache_dir, fingerprint, preparing
from cladapt.context import Run
from cladapt.data.batching import iterate, num_batches
from cladapt.models.checkpoints import load_cached, load_into, save_checkpoint
from cladapt.models.shipped import shipped_file

BATCH_SIZE = 64


def train_on_source(
    run: Run,
    trained: nn.Module,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
    *,
    name: str,
    epochs: int,
    key: dict[str, Any],
    meta: dict[str, Any],
) -> bool:
    """Train ``trained`` (the added parameters; the rest of the model frozen by the caller) for
    ``epochs`` epochs of ``loss(x, y)`` over the source training data at batch 64, or load the
    shipped / cached result. False (nothing done) when the stream has no labelled source data
    or ``epochs`` is 0."""
    source = run.stream.source
    if epochs <= 0 or source is None or source.train is None:
        return False
    tic = time.perf_counter()
    if run.amp_dtype is not None:  # trained under autocast: not the fp32 artefact (nor shipped)
        key = key | {"amp": str(run.amp_dtype)}
    path = cache_dir() / "models" / f"{name}-{run.stream.source_id}-{fingerprint(**key)}.pt"
    shipped = shipped_file(path)
    if shipped is not None:
        load_into(trained, shipped)
    else:
        with preparing(path):
            if not load_cached(trained, path):
                _train(run, trained, loss, optimizer, epochs, name)
                save_checkpoint(
                    path,
                    trained.state_dict(),
                    {"stream": run.stream.name, "model": run.model_name, **meta},
                )
    run.untimed_s += time.perf_counter() - tic  # one-off and cached, like the source model
    return True


def _train(run, trained, loss, optimizer, epochs: int, name: str) -> None:
    data = run.stream.source.train
    gen = torch.Generator().manual_seed(0)
    opt = optimizer(list(trained.parameters()))
    trained.train()

    def batches():
        for _ in range(epochs):
            yield from iterate(data, BATCH_SIZE, run.device, shuffle=True, generator=gen)

    total = epochs * num_batches(data, BATCH_SIZE)
    for x, y in run.progress.track(batches(), total, f"{name}: training on the source data"):
        value = loss(x, y)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
