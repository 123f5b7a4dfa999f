"""Classical continual-learning regularisers as composable loss plugins, and the strategies
``lwf`` / ``ewc`` (fine-tuning with the regulariser). ``--with lwf`` adds LwF to any training
strategy; both add their term through ``cladapt_extra_losses``.

- LwF: Li & Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI 2017. Before each new task
  the current model is frozen as the teacher; on the new task's images the student's logits of
  the previously seen classes are trained towards the teacher's with a temperature-T soft
  cross-entropy, weighted by lambda_o (paper: T = 2, lambda_o = 1). Single-head class-incremental
  use distils the old classes' logits of the shared head (the "old task head" of the paper).
- EWC: Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks", PNAS 2017.
  After each task the diagonal Fisher information F is estimated on that task's training images
  (per-sample gradients with torch.func, labels sampled from the model's predictive distribution,
  BatchNorm in eval mode) and the penalty (lambda / 2) sum_tasks sum_i F_i (theta_i - theta*_i)^2
  is added, one quadratic anchor per past task as in the paper. The strength is
  dataset-dependent; the default is a starting point, not a tuned value.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from cladapt.plugins.baselines import Finetune
from torch.func import functional_call, grad, vmap

from cladapt.batch import Batch, StepOutput, mask_logits
from cladapt.config import param
from cladapt.context import Run
from cladapt.data.batching import iterate
from cladapt.hookspecs import hookimpl
from cladapt.registry import StrategyRegistry
from cladapt.strategy import Regularizer
from cladapt.stream import Experience


def seen_classes(run: Run, upto: int) -> torch.Tensor | None:
    """Global class ids of experiences [0, upto); None when experiences do not declare them."""
    exps = run.stream.experiences[:upto]
    if any(e.classes is None for e in exps):
        return None
    ids = sorted({c for e in exps for c in e.classes})
    return torch.as_tensor(ids, device=run.device)


@dataclass
class LwFConfig:
    lwf_alpha: float = param(1.0, "lambda_o: weight of the distillation loss", ge=0)
    lwf_temperature: float = param(2.0, "distillation temperature T", gt=0)


class LwF(Regularizer):
    """Learning without Forgetting: distil the previous model's old-class logits (Li & Hoiem)."""

    name = "lwf"
    Config = LwFConfig

    def __init__(self, cfg=None) -> None:
        super().__init__(cfg)
        self.teacher: torch.nn.Module | None = None
        self.old: torch.Tensor | None = None

    @hookimpl
    def cladapt_before_experience(self, run: Run, experience: Experience) -> None:
        if run.experience_index == 0:
            return
        self.teacher = copy.deepcopy(run.model).eval().requires_grad_(False)
        self.old = seen_classes(run, run.experience_index)

    @hookimpl
    def cladapt_extra_losses(
        self, run: Run, batch: Batch, outputs: StepOutput
    ) -> torch.Tensor | None:
        if self.teacher is None or outputs.logits is None:
            return None
        with torch.no_grad():
            target = self.teacher(batch.x).float()
        student = outputs.logits.float()
        if self.old is not None:
            target, student = target[:, self.old], student[:, self.old]
        T = self.cfg.lwf_temperature
        soft = F.softmax(target / T, dim=1)
        return self.cfg.lwf_alpha * -(soft * F.log_softmax(student / T, dim=1)).sum(1).mean()


@dataclass
class EWCConfig:
    ewc_lambda: float = param(
        1.0, "penalty strength lambda (dataset-dependent; large values diverge)", ge=0
    )
    ewc_samples: int = param(512, "training images per task used to estimate the Fisher", ge=1)


class EWC(Regularizer):
    """Elastic Weight Consolidation: quadratic penalty weighted by the Fisher (Kirkpatrick 2017)."""

    name = "ewc"
    Config = EWCConfig

    def __init__(self, cfg=None) -> None:
        super().__init__(cfg)
        self.anchors: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []

    @hookimpl
    def cladapt_after_experience(self, run: Run, experience: Experience) -> None:
        from cladapt.protocols.base import class_mask

        fisher = diagonal_fisher(run, experience, class_mask(run, experience), self.cfg.ewc_samples)
        params = {k: p.detach().clone() for k, p in run.model.named_parameters() if k in fisher}
        self.anchors.append((fisher, params))

    @hookimpl
    def cladapt_extra_losses(
        self, run: Run, batch: Batch, outputs: StepOutput
    ) -> torch.Tensor | None:
        if not self.anchors:
            return None
        current = dict(run.model.named_parameters())
        penalty = sum(
            (fisher[k] * (current[k] - anchor[k]).pow(2)).sum()
            for fisher, anchor in self.anchors
            for k in fisher
        )
        return 0.5 * self.cfg.ewc_lambda * penalty


def diagonal_fisher(
    run: Run, experience: Experience, mask: torch.Tensor | None, samples: int
) -> dict[str, torch.Tensor]:
    """E_x E_{y ~ p(y|x)} [ (d log p(y|x) / d theta)^2 ] over up to ``samples`` training images."""
    model = run.model
    was_training = model.training
    model.eval()
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def log_lik(p, x, y):
        logits = mask_logits(functional_call(model, (p, buffers), (x.unsqueeze(0),)), mask)
        return -F.cross_entropy(logits.float(), y.unsqueeze(0))  # log p(y|x), vmap-friendly

    per_sample = vmap(grad(log_lik), in_dims=(None, 0, 0))
    fisher = {k: torch.zeros_like(p) for k, p in params.items()}
    seen = 0
    for x, _ in iterate(experience.train, 64, run.device, shuffle=True, generator=run.generator):
        x = x[: samples - seen]
        with torch.no_grad():
            probs = F.softmax(mask_logits(model(x), mask).float(), dim=1)
        y = torch.multinomial(probs, 1).squeeze(1)
        for k, g in per_sample(params, x, y).items():
            fisher[k] += g.pow(2).sum(0)
        seen += len(x)
        if seen >= samples:
            break
    model.train(was_training)
    return {k: f / max(seen, 1) for k, f in fisher.items()}


class LwFStrategy(Finetune):
    """Fine-tuning with Learning without Forgetting (Li & Hoiem 2016)."""

    name = "lwf"
    protocols = ("continual",)
    regularizers = ("lwf",)


class EWCStrategy(Finetune):
    """Fine-tuning with Elastic Weight Consolidation (Kirkpatrick et al. 2017)."""

    name = "ewc"
    protocols = ("continual",)
    regularizers = ("ewc",)


@hookimpl
def cladapt_register_strategies(registry: StrategyRegistry) -> None:
    registry.add_regularizer(LwF)
    registry.add_regularizer(EWC)
    registry.add(LwFStrategy)
    registry.add(EWCStrategy)
