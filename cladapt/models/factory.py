"""``create_model``: one factory over the model registry, with timm as the fallback."""

from __future__ import annotations

from typing import Any

from torch import nn

from cladapt.errors import CladaptError, DataError, UnknownNameError
from cladapt.registry import ModelRegistry


def create_model(
    registry: ModelRegistry,
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Registered names first; ``timm:<name>`` (or any other name timm knows) through timm."""
    check_model_name(registry, name)
    if name in registry:
        return registry.get(name).factory(
            num_classes=num_classes, input_shape=input_shape, pretrained=pretrained, **kwargs
        )
    import timm

    timm_name = name.removeprefix("timm:")
    try:
        return timm.create_model(
            timm_name,
            pretrained=pretrained,
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
    import timm

    if not timm.is_model(name.removeprefix("timm:")):
        raise UnknownNameError("model", name, registry.names())
