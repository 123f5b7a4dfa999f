"""A backbone with a bottleneck between its pooled features and a new classifier, as the UDA
recipes put on pretrained networks (Ganin et al. JMLR 2016 on Office; tllib's
``ImageClassifier``: Linear(F, 256) -> BatchNorm1d -> ReLU, then the classifier and the domain
heads read the 256-d bottleneck)."""

from __future__ import annotations

import torch
from torch import nn

from cladapt.models.features import feature_dim, features


class BottleneckClassifier(nn.Module):
    """timm-style: ``forward_features`` = the backbone's pooled features, ``forward_head`` =
    bottleneck (+ classifier), ``num_features`` = the bottleneck width."""

    def __init__(self, backbone: nn.Module, dim: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.bottleneck = nn.Sequential(
            nn.Linear(feature_dim(backbone), dim), nn.BatchNorm1d(dim), nn.ReLU()
        )
        self.head = nn.Linear(dim, num_classes)
        self.num_features = dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return features(self.backbone, x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.bottleneck(x)
        return x if pre_logits else self.head(x)

    def get_classifier(self) -> nn.Module:
        return self.head

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The backbone's parameters but its own (unused) classifier's."""
        unused = {id(p) for p in self.backbone.get_classifier().parameters()}
        return [p for p in self.backbone.parameters() if id(p) not in unused]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
