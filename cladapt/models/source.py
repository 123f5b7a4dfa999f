"""The source model of a test-time stream: trained by the harness on the stream's labelled
source data, once, and cached so that every strategy adapts the very same model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cladapt.data.batching import iterate, num_batches
from cladapt.device import seed_everything
from cladapt.errors import DivergenceError
from cladapt.models.checkpoints import (
    cache_dir,
    fingerprint,
    load_cached,
    preparing,
    save_checkpoint,
)
from cladapt.progress import NullProgress
from cladapt.stream import Stream

RECIPE_VERSION = 2  # bump when the training code changes, to invalidate cached models


@dataclass(frozen=True)
class SourceRecipe:
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 5e-4
    seed: int = 0  # fixed: the source model must not depend on the run's seed


def source_checkpoint_path(stream: Stream, model_name: str, recipe: SourceRecipe) -> Path:
    key = fingerprint(
        source=stream.source_id,
        model=model_name,
        shape=stream.input_shape,
        classes=stream.num_classes,
        recipe=asdict(recipe),
        version=RECIPE_VERSION,
    )
    return cache_dir() / "models" / f"{stream.source_id}-{model_name}-{key}.pt"


def get_source_model(
    stream: Stream,
    model_name: str,
    make_model: Callable[[], nn.Module],
    device: torch.device,
    recipe: SourceRecipe | None = None,
    progress=None,
) -> nn.Module:
    """Load the cached source model, or train it on ``stream.source.train`` and cache it."""
    recipe = recipe or SourceRecipe(**stream.defaults.get("source_recipe", {}))
    path = source_checkpoint_path(stream, model_name, recipe)
    model = make_model()
    if load_cached(model, path):
        return model.to(device)
    with preparing(path):  # parallel bench workers train it once; the others wait and load
        if load_cached(model, path):
            return model.to(device)
        model = model.to(device)
        train_source_model(model, stream, device, recipe, progress or NullProgress())
        save_checkpoint(
            path,
            model.state_dict(),
            {"stream": stream.name, "model": model_name, **asdict(recipe)},
        )
    return model


def train_source_model(
    model: nn.Module, stream: Stream, device: torch.device, recipe: SourceRecipe, progress
) -> None:
    """Adam + cosine schedule, cross-entropy on the clean labelled source split."""
    assert stream.source is not None and stream.source.train is not None
    generator = seed_everything(recipe.seed)
    data = stream.source.train
    steps = recipe.epochs * num_batches(data, recipe.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()

    def batches():
        for _ in range(recipe.epochs):
            yield from iterate(data, recipe.batch_size, device, shuffle=True, generator=generator)

    last = None
    for x, y in progress.track(batches(), steps, f"train source model ({stream.source_id})"):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        last = loss.detach()
    if last is not None and not torch.isfinite(last):
        raise DivergenceError("source model training diverged (NaN loss)")
    model.eval()
