"""The source models of the published CIFAR corruption tables, built exactly as RobustBench
defines them (RobustBench/robustbench, ``model_zoo/architectures/wide_resnet.py`` and
``resnext.py``, ``model_zoo/cifar100.py``), so that RobustBench's released checkpoints load by
their own parameter names (``--checkpoint``; ``module.`` prefixes are dropped on load):

- ``wrn-28-10``: WideResNet-28-10, RobustBench's CIFAR-10 ``Standard`` model (the source model of
  the CoTTA and EcoTTA CIFAR10-C tables). Pre-activation basic blocks, widths 160 / 320 / 640,
  1x1 projection shortcuts where the width or stride changes, inputs in [0, 1] unnormalised.
- ``resnext-29-augmix``: ResNeXt-29 (cardinality 4, base width 32) trained with AugMix,
  RobustBench's CIFAR-100 ``Hendrycks2020AugMix_ResNeXt`` (the source model of the CIFAR100-C
  tables); it normalises its input with mean and std 0.5 itself. Those two constants are not
  in the released checkpoint (RobustBench lists the model among its known key mismatches), so
  here they are non-persistent buffers and the checkpoint loads strictly.

Written from the architecture descriptions; initialisation as RobustBench's (He-normal convs,
unit BatchNorm, zero biases)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PooledClassifier(nn.Module):
    """timm's interface over ``forward_features``: global average pooling (RobustBench's
    ``avg_pool2d(8)`` at 32 px) and the linear layer named ``head_name`` (kept as released)."""

    head_name = "fc"

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x if pre_logits else self.get_classifier()(x)

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.head_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class WRNBlock(nn.Module):
    """Pre-activation basic block; parameter names as RobustBench's ``BasicBlock``."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.same = cin == cout
        self.convShortcut = None if self.same else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(pre))))
        # an identity block adds its raw input; a projecting block projects the activated one
        return (x if self.same else self.convShortcut(pre)) + out


class WRNGroup(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[WRNBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(PooledClassifier):
    def __init__(self, depth: int = 28, widen: int = 10, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError("WideResNet depth must be 6n + 4")
        n, widths = (depth - 4) // 6, [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.block1 = WRNGroup(n, widths[0], widths[1], 1)
        self.block2 = WRNGroup(n, widths[1], widths[2], 2)
        self.block3 = WRNGroup(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes)
        self.num_features = widths[3]
        _init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.relu(self.bn1(x))


class ResNeXtBlock(nn.Module):
    """Bottleneck type C; parameter names as RobustBench's ``ResNeXtBottleneck``."""

    def __init__(self, cin: int, planes: int, cardinality: int, base_width: int, stride: int):
        super().__init__()
        inner = int(math.floor(planes * base_width / 64.0)) * cardinality
        self.conv_reduce = nn.Conv2d(cin, inner, 1, 1, 0, bias=False)
        self.bn_reduce = nn.BatchNorm2d(inner)
        self.conv_conv = nn.Conv2d(inner, inner, 3, stride, 1, groups=cardinality, bias=False)
        self.bn = nn.BatchNorm2d(inner)
        self.conv_expand = nn.Conv2d(inner, planes * 4, 1, 1, 0, bias=False)
        self.bn_expand = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn_reduce(self.conv_reduce(x)), inplace=True)
        out = F.relu(self.bn(self.conv_conv(out)), inplace=True)
        out = self.bn_expand(self.conv_expand(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + out, inplace=True)


class AugMixResNeXt(PooledClassifier):
    head_name = "classifier"

    def __init__(
        self, depth: int = 29, cardinality: int = 4, base_width: int = 32, num_classes: int = 100
    ) -> None:
        super().__init__()
        if (depth - 2) % 9:
            raise ValueError("ResNeXt depth must be 9n + 2")
        blocks = (depth - 2) // 9
        self.conv_1_3x3 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn_1 = nn.BatchNorm2d(64)
        cin = 64
        stages = []
        for planes, stride in ((64, 1), (128, 2), (256, 2)):
            layers = []
            for i in range(blocks):
                layers.append(
                    ResNeXtBlock(cin, planes, cardinality, base_width, stride if i == 0 else 1)
                )
                cin = planes * 4
            stages.append(nn.Sequential(*layers))
        self.stage_1, self.stage_2, self.stage_3 = stages
        self.classifier = nn.Linear(cin, num_classes)
        self.num_features = cin
        # AugMix's input normalisation; not in the released checkpoint, hence not persistent
        self.register_buffer("mu", torch.full((1, 3, 1, 1), 0.5), persistent=False)
        self.register_buffer("sigma", torch.full((1, 3, 1, 1), 0.5), persistent=False)
        _init(self)
        nn.init.kaiming_normal_(self.classifier.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_1(self.conv_1_3x3((x - self.mu) / self.sigma)), inplace=True)
        return self.stage_3(self.stage_2(self.stage_1(x)))


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear) and m.bias is not None:
            m.bias.data.zero_()


def _no_pretrained(name: str, pretrained) -> None:
    if pretrained:
        from cladapt.errors import ConfigError

        raise ConfigError(
            f"{name}: pass RobustBench's checkpoint with --checkpoint PATH (no hub weights here)"
        )


def wrn_28_10(num_classes: int, input_shape: tuple[int, int, int], pretrained=False, **_):
    _no_pretrained("wrn-28-10", pretrained)
    return WideResNet(28, 10, num_classes)


def resnext_29_augmix(num_classes: int, input_shape: tuple[int, int, int], pretrained=False, **_):
    _no_pretrained("resnext-29-augmix", pretrained)
    return AugMixResNeXt(29, 4, 32, num_classes)
