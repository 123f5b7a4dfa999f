"""``create_model``: one factory over the model registry, with timm as the fallback."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cladapt.errors import CladaptError, DataError, UnknownNameError
from cladapt.registry import ModelRegistry


def create_model(
    registry: ModelRegistry,
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    pretrained: bool | str = False,
    **kwargs: Any,
) -> nn.Module:
    """Registered names first, then open_clip architectures (``ViT-B-16``, ``open_clip:RN50``),
    then ``timm:<name>`` (or any other name timm knows) through timm. ``prompts`` and
    ``class_names`` reach registered and open_clip factories (CLIP's text head); timm ignores
    them."""
    check_model_name(registry, name)
    if name in registry:
        return registry.get(name).factory(
            num_classes=num_classes, input_shape=input_shape, pretrained=pretrained, **kwargs
        )
    from cladapt.models.clip import create_open_clip, is_open_clip_name

    if is_open_clip_name(name):
        return create_open_clip(name, num_classes, input_shape, pretrained, **kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k not in ("prompts", "class_names")}
    import timm

    timm_name = name.removeprefix("timm:")
    try:
        return timm.create_model(
            timm_name,
            pretrained=bool(pretrained),
            num_classes=num_classes,
            in_chans=input_shape[0],
            **kwargs,
        )
    except (OSError, RuntimeError) as exc:
        if pretrained:
            raise DataError(
                f"pretrained weights for {timm_name!r} are not available offline "
                f"({type(exc).__name__}); put them in the Hugging Face cache (HF_HOME) "
                "or pass --checkpoint PATH"
            ) from None
        raise CladaptError(f"cannot create timm model {timm_name!r}: {exc}") from None


def check_model_name(registry: ModelRegistry, name: str) -> None:
    """Fail before a run starts if ``name`` is neither registered nor a timm model."""
    if name in registry:
        return
    from cladapt.models.clip import is_open_clip_name

    if is_open_clip_name(name):
        return
    import timm

    if not timm.is_model(name.removeprefix("timm:")):
        raise UnknownNameError("model", name, registry.names())


class Normalized(nn.Module):
    """``model((x - mean) / std)`` for inputs in [0, 1] (streams whose images stay in [0, 1], so
    that augmentations and corruptions work in pixel space); timm's forward_features /
    forward_head / get_classifier pass through."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.num_features = getattr(model, "num_features", None)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features((x - self.mean) / self.std)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.model.forward_head(x, pre_logits=pre_logits)

    def get_classifier(self) -> nn.Module:
        return self.model.get_classifier()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)
