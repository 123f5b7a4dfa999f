"""Contrastive pre-training of the tiny CLIP (``clip-tiny``) on generated image-caption pairs,
cached like the source models. It gives mtil-mini a model with genuine zero-shot ability to lose.

Recipe: CLIP's symmetric InfoNCE (Radford et al., 2021) on fresh batches of
:func:`cladapt.data.mtil_mini.caption_batch`, AdamW with a cosine schedule; the learnable
temperature is trained here (it is frozen afterwards, as in ZSCL). Identical captions within a
batch are counted as positives of each other (soft targets), since the caption space is small.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cladapt.cache import cache_dir, fingerprint
from cladapt.device import resolve_device
from cladapt.models.checkpoints import ensure_checkpoint, load_cached, load_into
from cladapt.models.clip import tiny_clip
from cladapt.progress import NullProgress

GENERATOR_VERSION = 4  # bump when the caption world changes: invalidates cached models


@dataclass(frozen=True)
class PretrainRecipe:
    steps: int = 1000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 100
    seed: int = 0


# mtil-mini's ResNet tower: 3000 steps (7 min on one CPU thread; the weights ship, so no user
# pays it): at 500 steps its features did not separate the digits (a linear probe 36 %, where
# fine-tuning reached 42 %); the ViT's 1000 steps take ~137 s
RECIPES = {
    "vit": PretrainRecipe(),
    "resnet": PretrainRecipe(steps=3000),
    "resnet-w32": PretrainRecipe(steps=500),
}
_ARCH_KEYS = {"vit": "v1", "resnet": "rn-v1", "resnet-w32": "rn-w32-v1"}  # "v1": kept valid
MODEL_NAMES = {"vit": "clip-tiny", "resnet": "clip-tiny-rn", "resnet-w32": "clip-tiny-rn-w32"}


def checkpoint_path(
    input_shape: tuple[int, int, int], recipe: PretrainRecipe, tower: str = "vit"
) -> Path:
    key = fingerprint(
        shape=list(input_shape),
        recipe=asdict(recipe),
        generator=GENERATOR_VERSION,
        arch=_ARCH_KEYS[tower],
    )
    return cache_dir() / "clip" / f"{MODEL_NAMES[tower]}-{key}.pt"


def contrastive_loss(
    image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, captions: list[str]
) -> torch.Tensor:
    logits = scale * image @ text.t()
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    key = torch.tensor([ids[c] for c in captions], device=logits.device)
    same = (key[:, None] == key[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def pretrain(model: nn.Module, recipe: PretrainRecipe, device: torch.device, progress=None) -> None:
    """Train ``model`` (a :class:`ClipClassifier` whose open_clip ``logit_scale`` is temporarily
    a parameter again) on generated pairs."""
    from cladapt.data.mtil_mini import caption_batch

    progress = progress or NullProgress()
    clip = model.clip
    log_scale = nn.Parameter(clip.logit_scale.log().clone())
    params = [p for p in clip.parameters()] + [log_scale]
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)

    def lr_at(step: int) -> float:
        if step < recipe.warmup:
            return (step + 1) / recipe.warmup
        return 0.5 * (
            1 + math.cos(math.pi * (step - recipe.warmup) / (recipe.steps - recipe.warmup))
        )

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    g, rng = torch.Generator().manual_seed(recipe.seed), random.Random(recipe.seed)
    torch.manual_seed(recipe.seed)
    model.train()
    for _ in progress.track(range(recipe.steps), recipe.steps, "pre-train clip-tiny"):
        x, texts = caption_batch(recipe.batch_size, g, rng)
        image = model.encode_image(x.to(device))
        text = model.encode_text(model.tokenize(texts))
        loss = contrastive_loss(image, text, log_scale.clamp(max=math.log(100)).exp(), texts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        clip.logit_scale.copy_(log_scale.clamp(max=math.log(100)).exp())
    model.eval()
    model.refresh_head()


def ensure_pretrained(input_shape: tuple[int, int, int], progress=None, tower: str = "vit") -> Path:
    """Pre-train and cache the tiny CLIP with ``tower`` for ``input_shape`` unless this machine
    has it."""
    recipe = RECIPES[tower]

    def train() -> nn.Module:
        torch.manual_seed(recipe.seed)  # the same initial weights on every machine
        model = tiny_clip(1, input_shape, tower=tower)
        device = resolve_device("auto")
        pretrain(model.to(device), recipe, device, progress)
        return model

    meta = {"model": MODEL_NAMES[tower], **asdict(recipe)}
    return ensure_checkpoint(checkpoint_path(input_shape, recipe, tower), train, meta)


def tiny_clip_model(
    num_classes: int,
    input_shape: tuple[int, int, int],
    pretrained: bool | str = False,
    tower: str = "vit",
    **kwargs,
) -> nn.Module:
    """The registry's ``clip-tiny`` / ``clip-tiny-rn``: :func:`cladapt.models.clip.tiny_clip`,
    with the harness's pre-trained weights when ``pretrained``."""
    model = tiny_clip(num_classes, input_shape, tower=tower, **kwargs)
    if pretrained:
        load_pretrained_tiny_clip(model, input_shape, tower)
    return model


def load_pretrained_tiny_clip(
    model: nn.Module, input_shape: tuple[int, int, int], tower: str = "vit"
) -> None:
    """Load the cached pre-trained weights into ``model``, pre-training them first if this
    machine has none (one to two minutes on a CPU; the runner does it before a run's clock
    starts, with a progress bar)."""
    path = ensure_pretrained(input_shape, tower=tower)
    if not load_cached(model, path):  # unusable file: deleted
        load_into(model, ensure_pretrained(input_shape, tower=tower))
    model.mark_text_changed()
