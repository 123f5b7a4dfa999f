"""CifarResNet34, the learner network of dm_nevis' finetuning learners
(``experiments_jax/training/resnet.py`` ``CifarResNet34``, used by
``experiments_jax/configs/finetuning_dknn.py`` at 64 x 64): a ResNet-34 (basic blocks 3, 4, 6, 3;
widths 64 to 512; projection shortcuts where the shape changes) whose first convolution is 3 x 3
with stride 1 and which has no max-pool before the block groups, so small images keep their
resolution. Built from timm's ResNet with that stem."""

from __future__ import annotations

from torch import nn

from cladapt.errors import ConfigError


def cifar_resnet34(
    num_classes: int, input_shape: tuple[int, int, int], pretrained: bool = False, **_
) -> nn.Module:
    from timm.models.resnet import BasicBlock, ResNet

    if pretrained:
        raise ConfigError("cifar-resnet34 has no pretrained weights (dm_nevis trains it per run)")
    model = ResNet(BasicBlock, [3, 4, 6, 3], num_classes=num_classes, in_chans=input_shape[0])
    model.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model
