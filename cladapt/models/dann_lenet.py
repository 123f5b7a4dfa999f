"""The DANN paper's MNIST network (Ganin et al., "Domain-Adversarial Training of Neural Networks",
JMLR 2016, Fig. 4a, "inspired by the classical LeNet-5"): feature extractor conv 5x5 32 maps -
ReLU - max-pool 2x2 - conv 5x5 48 maps - ReLU - max-pool 2x2; label predictor fully connected
100 - ReLU - 100 - ReLU - classes; no BatchNorm, no dropout. Its domain classifier (100 - ReLU -
1 on the flattened features) is DANN's ``domain_head=small``.

timm's convention, as the harness's other models: ``forward_features`` -> the feature map,
``forward_head(pre_logits=True)`` -> the flattened features the domain classifier reads (the
paper's split point), ``get_classifier()`` -> the label predictor. On 32 x 32 inputs the
features are 48 x 5 x 5 = 1 200 wide (the paper's 28 x 28 MNIST: 48 x 4 x 4 = 768).
"""

from __future__ import annotations

import torch
from torch import nn


class DANNLeNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, image_size: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 32, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 48, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = ((image_size - 4) // 2 - 4) // 2
        self.num_features = 48 * side * side
        self.head = nn.Sequential(
            nn.Linear(self.num_features, 100),
            nn.ReLU(inplace=True),
            nn.Linear(100, 100),
            nn.ReLU(inplace=True),
            nn.Linear(100, num_classes),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.flatten(1)
        return x if pre_logits else self.head(x)

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
