"""Pre-training of the small CNN (``small-cnn --pretrained``) on letters rendered from fonts.

The simple-baseline claim (Janson et al., "A simple baseline that questions the use of
pretrained-models in continual learning", 2022) is about a backbone pre-trained on data and
classes disjoint from the continual stream (ImageNet -> CIFAR): frozen, its features make a
nearest-mean classifier competitive with continual fine-tuning. The miniature here: the 52
Latin letters (A-Z, a-z; no digit) rendered from matplotlib's bundled TrueType faces with random
face, size, rotation, offset, stroke, colours and blur (the rendering of ``fonts-digits``),
16 000 images, and the small CNN trained on them once per machine with the harness's
source-model recipe (Adam, cosine schedule, random 4-pixel translations), then cached. The
continual streams it is meant for (``digits``, ``nevis-mini``) never show a letter.
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from cladapt.cache import cache_dir, code_digest, fingerprint
from cladapt.device import resolve_device
from cladapt.models.checkpoints import ensure_checkpoint, load_cached, load_into
from cladapt.progress import NullProgress

LETTERS = string.ascii_uppercase + string.ascii_lowercase


@dataclass(frozen=True)
class LettersRecipe:
    images: int = 16_000
    epochs: int = 6
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    seed: int = 0


def checkpoint_path(input_shape: tuple[int, int, int], recipe: LettersRecipe) -> Path:
    from cladapt.data import uda_pairs
    from cladapt.models import small_cnn, source

    key = fingerprint(
        shape=list(input_shape),
        recipe=asdict(recipe),
        letters=LETTERS,
        code=code_digest(small_cnn, uda_pairs._draw, source.train_classifier, pretrain),
    )
    return cache_dir() / "models" / f"small-cnn-letters-{key}.pt"


def pretrain(model: nn.Module, recipe: LettersRecipe, device: torch.device, progress) -> None:
    from cladapt.data.uda_pairs import render_font_symbols
    from cladapt.models.source import SourceRecipe, train_classifier

    size = 32
    x, y = render_font_symbols(LETTERS, recipe.images, size, recipe.seed)
    train = TensorDataset(x, y)
    fit = SourceRecipe(
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        seed=recipe.seed,
    )
    train_classifier(model, train, device, fit, progress, hflip=False, label="pre-train letters")


def ensure_pretrained(input_shape: tuple[int, int, int], progress=None) -> Path:
    """Pre-train and cache the small CNN on rendered letters unless this machine has it
    (about 3 minutes on 2 CPU cores, before a run's clock starts)."""
    from cladapt.models.small_cnn import SmallCNN

    if tuple(input_shape) != (3, 32, 32):
        from cladapt.errors import ConfigError

        raise ConfigError(
            f"small-cnn --pretrained: the letters pre-training is for 3x32x32 inputs, "
            f"not {'x'.join(map(str, input_shape))}"
        )
    recipe = LettersRecipe()

    def train() -> nn.Module:
        torch.manual_seed(recipe.seed)
        model = SmallCNN(num_classes=len(LETTERS))
        device = resolve_device("auto")
        pretrain(model.to(device), recipe, device, progress or NullProgress())
        return model

    meta = {"model": "small-cnn", **asdict(recipe)}
    return ensure_checkpoint(checkpoint_path(input_shape, recipe), train, meta)


def load_pretrained_backbone(model: nn.Module, input_shape: tuple[int, int, int]) -> None:
    """The pre-trained convolutional trunk into ``model``; its head (the stream's classes)
    keeps its fresh initialisation."""
    from cladapt.models.small_cnn import SmallCNN

    donor = SmallCNN(num_classes=len(LETTERS))
    path = ensure_pretrained(input_shape)
    if not load_cached(donor, path):  # an unusable file was deleted: make it again
        load_into(donor, ensure_pretrained(input_shape))
    model.features.load_state_dict(donor.features.state_dict())
