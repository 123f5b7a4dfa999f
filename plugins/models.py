"""Built-in model factories. Any timm model name also works (see ``cladapt.models.factory``)."""

from __future__ import annotations

from cladapt.hookspecs import hookimpl
from cladapt.models.small_cnn import SmallCNN
from cladapt.registry import ModelRegistry


def small_cnn(
    num_classes: int, input_shape: tuple[int, int, int], pretrained: bool = False, **_
) -> SmallCNN:
    return SmallCNN(num_classes=num_classes, in_chans=input_shape[0])


@hookimpl
def cladapt_register_models(registry: ModelRegistry) -> None:
    registry.add(
        "small-cnn", small_cnn, "3-stage conv-BN-ReLU CNN for 32x32 inputs (~94k parameters)"
    )
