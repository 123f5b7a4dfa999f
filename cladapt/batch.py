"""What flows through the hooks: a batch of data and the output of a training step."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """One batch, already on the run's device.

    ``x``: images (N, C, H, W). ``y``: labels (N,) or None where the protocol hides them.
    ``x_target``: unlabelled target images (UDA only). ``y_target``: their labels, given only to
    oracle strategies (``Strategy.uses_target_labels``, e.g. ``target-oracle``), never to a UDA
    method. ``class_mask``: boolean (num_classes,) of the logits allowed for this batch
    (task-incremental setting), else None.
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    x_target: torch.Tensor | None = None
    class_mask: torch.Tensor | None = None
    y_target: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass
class StepOutput:
    """Result of ``cladapt_train_step``: the loss (None: no gradient step) and the logits."""

    loss: torch.Tensor | None
    logits: torch.Tensor | None = None
    features: torch.Tensor | None = None


def mask_logits(logits: torch.Tensor, class_mask: torch.Tensor | None) -> torch.Tensor:
    """Set logits of classes outside the mask to a large negative value (task-incremental)."""
    if class_mask is None:
        return logits
    return logits.masked_fill(~class_mask, torch.finfo(logits.dtype).min)
