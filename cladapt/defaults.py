"""Built-in default behaviour, registered in every run with ``trylast`` so that any strategy
implementing the same hook is called first (firstresult hooks stop at the first non-None)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cladapt.batch import Batch, StepOutput, mask_logits
from cladapt.context import Run
from cladapt.hookspecs import hookimpl
from cladapt.optim import check_learning_rates


def cross_entropy_step(run: Run, batch: Batch, class_mask: torch.Tensor | None) -> StepOutput:
    """Cross-entropy of ``run.model`` on a labelled batch, logits masked to ``class_mask``, with
    the protocol's label smoothing (``--set label_smoothing=``, 0 unless a stream sets it)."""
    raw = run.model(batch.x)
    logits = mask_logits(raw, class_mask)
    smoothing = float(getattr(run.params, "label_smoothing", 0.0))
    if smoothing and class_mask is not None:
        # smooth over the allowed classes only (masked logits are -inf)
        logp = F.log_softmax(logits.float(), dim=1).masked_fill(~class_mask, 0.0)
        nll = -logp.gather(1, batch.y[:, None]).squeeze(1)
        allowed = class_mask.sum(-1)  # per sample when the mask is per sample (B x C)
        loss = ((1 - smoothing) * nll - smoothing * logp.sum(1) / allowed).mean()
        return StepOutput(loss=loss, logits=raw)
    loss = F.cross_entropy(logits.float(), batch.y, label_smoothing=smoothing)
    # unmasked: regularisers such as LwF read the logits of classes outside the task's mask
    return StepOutput(loss=loss, logits=raw)


class DefaultBehaviour:
    """Cross-entropy training, eval-mode prediction, predict-only adaptation, snapshot reset."""

    @hookimpl(trylast=True)
    def cladapt_train_step(self, run: Run, batch: Batch) -> StepOutput:
        return cross_entropy_step(run, batch, batch.class_mask)

    @hookimpl(trylast=True)
    def cladapt_predict(self, run: Run, batch: Batch) -> torch.Tensor:
        was_training = run.model.training
        run.model.eval()
        with torch.no_grad(), run.autocast():
            logits = run.model(batch.x)
        run.model.train(was_training)
        return mask_logits(logits.float(), batch.class_mask)

    @hookimpl(trylast=True)
    def cladapt_adapt(self, run: Run, batch: Batch) -> torch.Tensor:
        return run.hook.cladapt_predict(run=run, batch=batch)

    @hookimpl(trylast=True)
    def cladapt_setup(self, run: Run) -> None:
        # after the strategy's own setup: whatever optimizer it built, its rate must be sane
        if run.optimizer is not None:
            check_learning_rates(run.optimizer)

    @hookimpl(tryfirst=True)
    def cladapt_reset(self, run: Run) -> None:
        run.restore()
