"""Continual learning of CLIP-style models (a stream with prompts, a model with a text head):
``zero-shot``, ``wise-ft``, ``zscl`` and ``lwf-clip`` (LwF as ZSCL's Table 1 runs it).
``finetune`` and ``lwf`` are the harness's general ones;
on MTIL streams the stream's recipe (AdamW, cosine schedule, label smoothing, 1000 iterations per
task, per-task rates) makes them ZSCL's Continual-FT baseline.

- zero-shot: the pre-trained model, never trained (MTIL's reference row).
- wise-ft: Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022. After every task
  the fine-tuned weights are interpolated with an anchor: theta = alpha * theta_ft +
  (1 - alpha) * theta_anchor. The anchor is the zero-shot model (the WiSE-FT paper's
  definition); ZSCL's MTIL script ``WiSE_finetune.sh`` interpolates with the model at the
  start of the task instead (``--set wise_anchor=previous``), alpha = 0.8 in both.
- zscl: Zheng et al., "Preventing Zero-Shot Transfer Degradation in Continual Learning of
  Vision-Language Models", ICCV 2023; defaults from the official ``mtil/scripts/ZSCL.sh`` and
  ``src/models/finetune.py``: fine-tuning with two distillation losses towards the frozen initial
  model on a reference set of unlabelled images and sentences, logits = scale * image @ text over
  the reference sentences, soft cross-entropy at T = 2 along the text axis (``image_loss``) and
  along the image axis (``text_loss``, the transposed logits), weight 1 each; an L2 penalty
  sum ||theta - theta_task_start||^2 with weight 1 (``--l2 1``); weight ensemble (WE): every
  ``avg_freq`` = 100 steps a running average of the weights is updated, and the averaged model is
  the one evaluated and continued from after the task.

Deviations: the reference set defaults to an *embedded* one (generated scenes and captions, see
``cladapt.data.mtil_mini``), because ImageNet and Conceptual Captions cannot ship; pass
``--set ref_images=DIR --set ref_texts=FILE`` for the paper's. The frozen teacher's sentence
features are computed once instead of at every step (same values: the teacher never changes).
The paper's ViT-B/16 normalises with LayerNorm, the same in training and evaluation; on a tower
with BatchNorm (mtil-mini's ``clip-tiny-rn``) the student in training mode and the eval-mode
teacher differ at equal weights, and the distillation pulls before any step (3.4x the task
loss's gradient, ``benchmarks/zscl_regime.py``): such towers train with ``batchnorm=frozen``
(the continual protocol's setting; mtil-mini's default).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from cladapt.plugins.baselines import Finetune, FinetuneConfig
from torch.utils.data import Dataset

from cladapt.adaptation import ema_update, frozen_copy
from cladapt.batch import Batch, StepOutput
from cladapt.config import param
from cladapt.context import Run
from cladapt.errors import ConfigError, DataError
from cladapt.hookspecs import hookimpl
from cladapt.registry import StrategyRegistry
from cladapt.results import Record
from cladapt.strategy import Strategy
from cladapt.stream import Experience


def require_clip(run: Run, strategy: str) -> None:
    if not hasattr(run.model, "encode_texts"):
        raise ConfigError(
            f"{strategy} needs a CLIP model with a text head (e.g. --model clip-tiny or an "
            f"open_clip name such as ViT-B-16); {run.model_name!r} is not one"
        )


def text_changed(model: torch.nn.Module) -> None:
    """Weights were replaced outside an optimizer step: the cached text head is stale."""
    if hasattr(model, "mark_text_changed"):
        model.mark_text_changed()


class ZeroShot(Strategy):
    """The pre-trained CLIP model as it is: no training (MTIL's zero-shot reference)."""

    name = "zero-shot"
    protocols = ("continual",)
    reference = "zero-shot reference"
    max_epochs = 0
    requires_prompts = True

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        require_clip(run, self.name)
        run.model.requires_grad_(False)


@dataclass
class WiSEConfig(FinetuneConfig):
    wise_alpha: float = param(
        0.8, "weight of the fine-tuned model in the interpolation", ge=0, le=1
    )
    wise_anchor: Literal["zero-shot", "previous"] = param(
        "zero-shot", "interpolate with the zero-shot model or the model at the task's start"
    )


class WiSEFT(Finetune):
    """Fine-tune, then interpolate the weights with the zero-shot model after every task."""

    name = "wise-ft"
    protocols = ("continual",)
    Config = WiSEConfig
    requires_prompts = True  # works on any model; benched where it is meant for

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        super().cladapt_setup(run)
        self.anchor = copy.deepcopy(run.model.state_dict())

    @hookimpl
    def cladapt_before_experience(self, run: Run) -> None:
        super().cladapt_before_experience(run)
        if self.cfg.wise_anchor == "previous":
            self.anchor = copy.deepcopy(run.model.state_dict())

    @hookimpl
    def cladapt_after_experience(self, run: Run) -> None:
        a = self.cfg.wise_alpha
        with torch.no_grad():
            for name, value in run.model.state_dict().items():
                if value.is_floating_point():
                    value.mul_(a).add_(self.anchor[name].to(value.device), alpha=1 - a)
        text_changed(run.model)


@dataclass
class ZSCLConfig(FinetuneConfig):
    zscl_temperature: float = param(2.0, "distillation temperature T", gt=0)
    image_loss: float = param(1.0, "weight of the distillation along the sentences (0: off)", ge=0)
    text_loss: float = param(1.0, "weight of the distillation along the images (0: off)", ge=0)
    l2: float = param(1.0, "weight of sum ||theta - theta_task_start||^2 (ZSCL.sh: --l2 1)", ge=0)
    we: bool = param(True, "weight ensemble: evaluate and continue from the averaged weights")
    avg_freq: int = param(100, "steps between weight-ensemble updates", ge=1)
    ref_images: str = param("", "folder of reference images (default: the embedded set)")
    ref_texts: str = param("", "text file of reference sentences, one per line (default: embedded)")
    ref_size: int = param(1000, "images in the embedded reference set", ge=1)
    ref_sentences: int = param(200, "sentences in the embedded reference set", ge=1)
    ref_batch_size: int = param(0, "reference images per step (0: the training batch size)", ge=0)


class ZSCL(Finetune):
    """ZSCL: distil towards the zero-shot model on a reference set, plus weight ensembling."""

    name = "zscl"
    protocols = ("continual",)
    Config = ZSCLConfig
    requires_prompts = True

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        require_clip(run, self.name)
        super().cladapt_setup(run)
        c = self.cfg
        self.teacher = frozen_copy(run.model).eval()
        images, texts = reference_data(run, c)
        self.ref_images = images
        self.reference = describe_reference(c, len(images), len(texts))
        if not (c.ref_images and c.ref_texts) and not run.stream.embedded:
            # a real stream scored with the embedded stand-in is not the paper's ZSCL: say so
            warnings.warn(
                f"zscl on {run.stream.name}: {self.reference}; the paper uses ImageNet images "
                "and Conceptual Captions (--set ref_images=DIR --set ref_texts=FILE)",
                UserWarning,
                stacklevel=2,
            )
        run.hook.cladapt_evaluated(
            run=run,
            records=[Record("reference_images", float(len(images)), note=self.reference)],
        )
        with torch.no_grad():
            self.ref_text = self.teacher.encode_texts(texts).float()
        self.ref_gen = torch.Generator().manual_seed(run.seed)
        self.ref_order = torch.empty(0, dtype=torch.long)
        self.we_model: torch.nn.Module | None = None

    def next_ref_batch(self, run: Run, n: int) -> torch.Tensor:
        """Cycle through the reference images in fresh seeded permutations."""
        if len(self.ref_order) < n:
            more = torch.randperm(len(self.ref_images), generator=self.ref_gen)
            self.ref_order = torch.cat([self.ref_order, more])
        idx, self.ref_order = self.ref_order[:n], self.ref_order[n:]
        x = torch.stack([_image(self.ref_images[i]) for i in idx.tolist()])
        x = x.to(run.device, non_blocking=True)
        size = run.stream.input_shape[1:]
        if tuple(x.shape[2:]) != tuple(size):  # the embedded set is stored small
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    @hookimpl
    def cladapt_before_experience(self, run: Run) -> None:
        super().cladapt_before_experience(run)
        trainable = [p for p in run.model.parameters() if p.requires_grad]
        self.task_start = [p.detach().clone() for p in trainable]
        self.we_model = copy.deepcopy(run.model).requires_grad_(False) if self.cfg.we else None
        self.we_n = 0

    @hookimpl
    def cladapt_extra_losses(self, run: Run, batch: Batch, outputs: StepOutput):
        c = self.cfg
        terms = []
        if c.image_loss or c.text_loss:
            n = c.ref_batch_size or len(batch)
            x = self.next_ref_batch(run, n)
            with torch.no_grad():
                target = self.teacher.logits(self.teacher.encode_image(x), self.ref_text)
            student = run.model.logits(run.model.encode_image(x), self.ref_text)
            T = c.zscl_temperature
            if c.image_loss:
                terms.append(c.image_loss * distillation(target, student, T))
            if c.text_loss:
                terms.append(c.text_loss * distillation(target.t(), student.t(), T))
        if c.l2:
            trainable = [p for p in run.model.parameters() if p.requires_grad]
            terms.append(
                c.l2
                * sum(
                    ((p - p0) ** 2).sum() for p, p0 in zip(trainable, self.task_start, strict=True)
                )
            )
        return torch.stack([t.float() for t in terms]).sum() if terms else None

    @hookimpl
    def cladapt_after_step(self, run: Run) -> None:
        super().cladapt_after_step(run)
        # ZSCL updates at its 0-based iterations 0, avg_freq, 2 * avg_freq, ...
        if self.we_model is not None and (self.task_step - 1) % self.cfg.avg_freq == 0:
            self.merge(run)

    def merge(self, run: Run) -> None:
        """ZSCL's merge_we: a running mean of the weights, i.e. an EMA with momentum n/(n+1)."""
        self.we_n += 1
        ema_update(self.we_model, run.model, self.we_n / (self.we_n + 1))

    @hookimpl
    def cladapt_after_experience(self, run: Run, experience: Experience) -> None:
        if self.we_model is not None:
            # ZSCL loops over range(total_iterations + 1): its last merge (iteration 1000 of
            # 1000, the 11th) takes the final model in. We train exactly `iterations` steps
            # (one fewer than ZSCL, as for every strategy) and merge the final model here.
            if self.task_step % self.cfg.avg_freq == 0:
                self.merge(run)
            with torch.no_grad():
                for p, w in zip(run.model.parameters(), self.we_model.parameters(), strict=True):
                    p.copy_(w)
            text_changed(run.model)
            self.we_model = None


@dataclass
class LwFCLIPConfig(FinetuneConfig):
    zscl_temperature: float = param(2.0, "distillation temperature T", gt=0)
    image_loss: float = param(1.0, "weight of the distillation along the prompts (0: off)", ge=0)
    text_loss: float = param(1.0, "weight of the distillation along the images (0: off)", ge=0)
    l2: float = param(0.0, "weight of sum ||theta - theta_task_start||^2 (lwf.sh: none)", ge=0)
    ref_batch_size: int = param(0, "distilled images per step (0: the training batch size)", ge=0)


class LwFCLIP(ZSCL):
    """LwF as ZSCL's Table 1 compares it (the official ``mtil/scripts/lwf.sh``): ZSCL's two
    distillation losses, but the teacher is the model at the start of the task (the previous
    task's checkpoint, ``--ref-model``; the pre-trained model for the first task), the images are
    the current task's training images (``--ref-dataset`` = the training dataset, batches of 64
    in a shuffled stream of their own) and the sentences are the current task's class prompts in
    its first (training) template; no weight ensemble and no L2 penalty.

    Deviation, stated: the distilled images go through the task's training transform
    (RandomResizedCrop with scale >= 0.9); lwf.sh loads them with its test preprocessing (centre
    crop). Li & Hoiem's LwF on the logits of earlier classes stays ``lwf``.
    """

    name = "lwf-clip"
    Config = LwFCLIPConfig

    @hookimpl
    def cladapt_setup(self, run: Run) -> None:
        require_clip(run, self.name)
        Finetune.cladapt_setup(self, run)
        self.ref_gen = torch.Generator().manual_seed(run.seed)
        self.we_model = None

    @hookimpl
    def cladapt_before_experience(self, run: Run, experience: Experience) -> None:
        Finetune.cladapt_before_experience(self, run)
        trainable = [p for p in run.model.parameters() if p.requires_grad]
        self.task_start = [p.detach().clone() for p in trainable]
        self.teacher = frozen_copy(run.model).eval()
        self.ref_images = experience.train
        self.ref_order = torch.empty(0, dtype=torch.long)
        prompts = run.stream.prompts
        if prompts is None or experience.classes is None:
            raise ConfigError(f"{self.name} needs a stream with class prompts (an MTIL stream)")
        texts = [prompts[c][0] for c in experience.classes]
        with torch.no_grad():
            self.ref_text = self.teacher.encode_texts(texts).float()
        self.we_model = None

    @hookimpl
    def cladapt_after_step(self, run: Run) -> None:
        Finetune.cladapt_after_step(self, run)

    @hookimpl
    def cladapt_after_experience(self, run: Run, experience: Experience) -> None:
        self.teacher = None  # the next task's teacher is the model as it is then


def distillation(teacher: torch.Tensor, student: torch.Tensor, T: float) -> torch.Tensor:
    """Soft cross-entropy at temperature T, scaled by T^2 (ZSCL's ``distillation``)."""
    soft = F.softmax(teacher.float() / T, dim=1)
    return -(soft * F.log_softmax(student.float() / T, dim=1)).sum(1).mean() * T**2


def _image(item) -> torch.Tensor:
    x = item[0] if isinstance(item, (tuple, list)) else item
    return x.float() / 255 if x.dtype == torch.uint8 else x


def describe_reference(c: ZSCLConfig, n_images: int, n_texts: int) -> str:
    images = (
        f"{n_images} images from {c.ref_images}"
        if c.ref_images
        else (f"embedded generated scenes ({n_images} images)")
    )
    texts = (
        f"{n_texts} sentences from {c.ref_texts}"
        if c.ref_texts
        else (f"embedded captions ({n_texts} sentences)")
    )
    return f"reference set: {images}, {texts}"


def reference_data(run: Run, c: ZSCLConfig) -> tuple[Dataset, list[str]]:
    """(images, sentences): the user's files, else the embedded generated set (32x32 scenes,
    resized to the stream's image size batch by batch)."""
    from cladapt.data.mtil_mini import reference_set

    shape = run.stream.input_shape
    images, texts = None, None
    if not c.ref_images or not c.ref_texts:
        images, texts = reference_set(c.ref_size, c.ref_sentences, seed=10_000 + run.seed)
    if c.ref_images:
        images = reference_images(Path(c.ref_images), shape[1])
    if c.ref_texts:
        path = Path(c.ref_texts)
        if not path.is_file():
            raise DataError(f"ref_texts: no such file {path}")
        if path.suffix.lower() in {".csv", ".tsv"}:
            texts = conceptual_captions(path)
        else:
            texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        texts = [t for t in texts if t]
        if not texts:
            raise DataError(f"ref_texts: {path} has no sentences")
    return images, texts


def conceptual_captions(path: Path) -> list[str]:
    """Every caption of ZSCL's Conceptual Captions file (``Validation_GCC-1.1.0-Validation_
    output.csv``: tab-separated, captions in the ``title`` column; ZSCL uses them all)."""
    import pandas as pd

    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"ref_texts: {path} is not a tab-separated captions file ({exc})") from None
    if "title" not in df.columns:
        raise DataError(
            f"ref_texts: {path} has no 'title' column (ZSCL's Conceptual Captions CSV is "
            f"tab-separated with filepath and title); columns: {', '.join(df.columns[:5])}"
        )
    return [str(t).strip() for t in df["title"]]


def reference_images(root: Path, size: int) -> Dataset:
    """Every image under ``root`` (any depth; ImageNet's train folder works), labels ignored."""
    import torchvision.transforms as T

    from cladapt.data.folders import ImagesUnder

    tf = T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
        ]
    )
    return ImagesUnder(root, tf, "ref_images")


@hookimpl
def cladapt_register_strategies(registry: StrategyRegistry) -> None:
    for cls in (ZeroShot, WiSEFT, ZSCL, LwFCLIP):
        registry.add(cls)
