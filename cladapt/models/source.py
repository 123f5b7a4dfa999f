"""The source model of a test-time stream: trained by the harness on the stream's labelled
source data, once, and cached so that every strategy adapts the very same model.

Trained as standard source models are (e.g. the CIFAR-10 models of RobustBench / CoTTA): with
label-preserving augmentation only — random crops of the zero-padded image (translations of up
to ``translate`` pixels) and horizontal flips where the stream declares flips label-preserving
(``Stream.tta_augmentation.hflip``; never for digits) — and never with the test corruptions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cladapt.cache import cache_dir, fingerprint, preparing
from cladapt.data.batching import iterate, num_batches
from cladapt.device import seed_everything
from cladapt.errors import DivergenceError
from cladapt.models.checkpoints import load_cached, load_into, save_checkpoint
from cladapt.models.shipped import shipped_file
from cladapt.progress import NullProgress
from cladapt.stream import Stream

RECIPE_VERSION = 3  # bump when the training code changes, to invalidate cached models


@dataclass(frozen=True)
class SourceRecipe:
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 5e-4
    seed: int = 0  # fixed: the source model must not depend on the run's seed
    translate: int = 4  # random-crop padding in pixels (CIFAR's RandomCrop(32, padding=4)); 0: off


def source_recipe(stream: Stream, model_name: str) -> SourceRecipe:
    """The recipe ``model_name``'s source model is trained with on ``stream``: the stream's own
    for that model (``source_recipes``), else the default."""
    own = getattr(stream, "source_recipes", {}) or {}
    return SourceRecipe(**own.get(model_name.removesuffix("-pretrained"), {}))


def source_checkpoint_path(stream: Stream, model_name: str, recipe: SourceRecipe) -> Path:
    key = fingerprint(
        source=stream.source_id,
        model=model_name,
        shape=stream.input_shape,
        classes=stream.num_classes,
        recipe=asdict(recipe),
        hflip=stream.tta_augmentation.hflip,
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
    """Load the shipped source model (:mod:`cladapt.models.shipped`) or the cached one, or train
    it on ``stream.source.train`` and cache it."""
    recipe = recipe or source_recipe(stream, model_name)
    path = source_checkpoint_path(stream, model_name, recipe)
    model = make_model()
    shipped = shipped_file(path)
    if shipped is not None:  # the weights every machine uses (cladapt.models.shipped)
        load_into(model, shipped)
        return model.to(device)
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


def random_crop_flip(
    x: torch.Tensor, pad: int, hflip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Each image zero-padded by ``pad`` and cropped back at a random offset, then flipped
    horizontally with probability 1/2 if ``hflip``; draws come from ``generator`` (CPU)."""
    n, _, h, w = x.shape
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad))
        dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).tolist()
        x = torch.stack(
            [
                padded[i, :, a : a + h, b : b + w]
                for i, (a, b) in enumerate(zip(dy, dx, strict=True))
            ]
        )
    if hflip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


def train_source_model(
    model: nn.Module, stream: Stream, device: torch.device, recipe: SourceRecipe, progress
) -> None:
    """Adam + cosine schedule, cross-entropy on the clean labelled source split, with the
    label-preserving augmentation of the module docstring."""
    assert stream.source is not None and stream.source.train is not None
    train_classifier(
        model,
        stream.source.train,
        device,
        recipe,
        progress,
        hflip=stream.tta_augmentation.hflip,
        label=f"train source model ({stream.source_id})",
    )


def train_classifier(
    model: nn.Module,
    data,
    device: torch.device,
    recipe: SourceRecipe,
    progress,
    hflip: bool,
    label: str,
) -> None:
    """The recipe's training loop on a labelled dataset (also the harness's pre-training)."""
    generator = seed_everything(recipe.seed)
    steps = recipe.epochs * num_batches(data, recipe.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()

    def batches():
        for _ in range(recipe.epochs):
            yield from iterate(data, recipe.batch_size, device, shuffle=True, generator=generator)

    last = None
    for x, y in progress.track(batches(), steps, label):
        x = random_crop_flip(x, recipe.translate, hflip, generator)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        last = loss.detach()
    if last is not None and not torch.isfinite(last):
        raise DivergenceError(f"{label}: training diverged (NaN loss)")
    model.eval()
