"""Built-in model factories. Any timm model name also works (see ``cladapt.models.factory``)."""

from __future__ import annotations

from functools import partial

from cladapt.hookspecs import hookimpl
from cladapt.models.small_cnn import SmallCNN
from cladapt.registry import ModelRegistry


def small_cnn(
    num_classes: int, input_shape: tuple[int, int, int], pretrained: bool = False, **_
) -> SmallCNN:
    model = SmallCNN(num_classes=num_classes, in_chans=input_shape[0])
    if pretrained:
        from cladapt.models.letters_pretrain import load_pretrained_backbone

        load_pretrained_backbone(model, input_shape)
    return model


@hookimpl
def cladapt_register_models(registry: ModelRegistry) -> None:
    from cladapt.models.letters_pretrain import ensure_pretrained

    registry.add(
        "small-cnn",
        small_cnn,
        "4-stage conv-BN-ReLU CNN (width 16, global average pool; ~61k parameters); "
        "--pretrained: its trunk pre-trained by the harness on 52 rendered letters (cached)",
        prepare=ensure_pretrained,
    )


def dann_lenet(num_classes: int, input_shape: tuple[int, int, int], **_):
    """The DANN paper's MNIST network (cladapt/models/dann_lenet.py)."""
    from cladapt.models.dann_lenet import DANNLeNet

    return DANNLeNet(num_classes, in_chans=input_shape[0], image_size=input_shape[1])


@hookimpl(specname="cladapt_register_models")
def register_dann_lenet(registry: ModelRegistry) -> None:
    registry.add(
        "dann-lenet",
        dann_lenet,
        "the DANN paper's MNIST network (JMLR 2016, Fig. 4a): conv 32 / 48 with max-pool, "
        "label predictor 100-100, no BatchNorm (0.17M parameters at 32 px)",
    )


def tiny_vit(num_classes: int, input_shape: tuple[int, int, int], pretrained: bool = False, **_):
    """A small timm VisionTransformer for 32x32 inputs: patch 4, width 96, depth 4, 3 heads."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=input_shape[1],
        patch_size=4,
        in_chans=input_shape[0],
        num_classes=num_classes,
        embed_dim=96,
        depth=4,
        num_heads=3,
        mlp_ratio=2.0,
    )


@hookimpl(specname="cladapt_register_models")
def register_tiny_vit(registry: ModelRegistry) -> None:
    registry.add(
        "tiny-vit",
        tiny_vit,
        "timm ViT for 32x32 inputs: patch 4, width 96, depth 4 (~0.3M parameters)",
    )


@hookimpl(specname="cladapt_register_models")
def register_cifar_resnet34(registry: ModelRegistry) -> None:
    from cladapt.models.cifar_resnet import cifar_resnet34

    registry.add(
        "cifar-resnet34",
        cifar_resnet34,
        "dm_nevis' CifarResNet34: ResNet-34 with a 3x3 stride-1 stem and no max-pool (~21M "
        "parameters), NEVIS'22's learner at 64x64",
    )


@hookimpl(specname="cladapt_register_models")
def register_robustbench(registry: ModelRegistry) -> None:
    from cladapt.models.robustbench import resnext_29_augmix, wrn_28_10

    registry.add(
        "wrn-28-10",
        wrn_28_10,
        "WideResNet-28-10 as RobustBench's CIFAR-10 Standard model (36.5M parameters); loads "
        "RobustBench's checkpoint with --checkpoint",
    )
    registry.add(
        "resnext-29-augmix",
        resnext_29_augmix,
        "ResNeXt-29 (cardinality 4, width 32) as RobustBench's CIFAR-100 "
        "Hendrycks2020AugMix_ResNeXt (normalises its input by 0.5 / 0.5); loads RobustBench's "
        "checkpoint with --checkpoint",
    )


@hookimpl(specname="cladapt_register_models")
def register_tiny_clip(registry: ModelRegistry) -> None:
    from cladapt.models.clip_pretrain import ensure_pretrained, tiny_clip_model

    registry.add(
        "clip-tiny",
        tiny_clip_model,
        "tiny open_clip CLIP (ViT width 64, 2+2 layers); --pretrained: pre-trained by the harness "
        "on generated image-caption pairs (cached)",
        prepare=ensure_pretrained,
    )
    registry.add(
        "clip-tiny-rn",
        partial(tiny_clip_model, tower="resnet"),
        "tiny open_clip CLIP with CLIP's modified-ResNet image tower (width 8, sides a multiple "
        "of 32); --pretrained: its own harness pre-training (cached); see docs/mtil.md",
        prepare=partial(ensure_pretrained, tower="resnet"),
    )
    registry.add(
        "clip-tiny-rn-w32",
        partial(tiny_clip_model, tower="resnet-w32"),
        "clip-tiny-rn at 4 times the image tower's width (16 times its parameters; pre-trained "
        "on first use with --pretrained, a few minutes on a CPU); see docs/mtil.md",
        prepare=partial(ensure_pretrained, tower="resnet-w32"),
    )
