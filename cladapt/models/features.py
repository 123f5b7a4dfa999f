"""Pooled features and logits from one forward pass, for strategies that need both (DANN,
feature distillation, nearest-mean classifiers). Works with timm models and any model that
follows timm's ``forward_features`` / ``forward_head(pre_logits=True)`` / ``get_classifier()``."""

from __future__ import annotations

import torch
from torch import nn

from cladapt.errors import ConfigError


def feature_dim(model: nn.Module) -> int:
    dim = getattr(model, "num_features", None)
    if dim is None:
        raise ConfigError(f"{type(model).__name__} does not expose num_features (timm convention)")
    return int(dim)


def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for attr in ("forward_features", "forward_head", "get_classifier"):
        if not hasattr(model, attr):
            raise ConfigError(
                f"{type(model).__name__} has no {attr}(): this strategy needs a timm-style model"
            )
    feats = model.forward_head(model.forward_features(x), pre_logits=True)
    return feats, model.get_classifier()(feats)


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled pre-logit features (timm convention)."""
    if not hasattr(model, "forward_features") or not hasattr(model, "forward_head"):
        raise ConfigError(
            f"{type(model).__name__} has no forward_features(): a timm-style model is needed"
        )
    return model.forward_head(model.forward_features(x), pre_logits=True)
