"""Stream / Experience data model.

A stream is an ordered list of experiences (tasks or domains) plus, for test-time and UDA
protocols, a labelled source experience the source model is trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from cladapt.config import param
from cladapt.errors import DataError


@dataclass
class Experience:
    """One task (continual) or domain (test-time, UDA target).

    ``train``: labelled training data. ``test``: labelled evaluation data. ``unlabelled``: target
    training data (UDA); labels, if the dataset has any, are stripped by the protocol.
    ``classes``: the global label ids this experience uses (task-incremental masks the others).
    """

    name: str
    kind: str = "task"
    train: Dataset | None = None
    test: Dataset | None = None
    dev: Dataset | None = None  # held out from train for model selection (NEVIS-style streams)
    dev_test: Dataset | None = None  # held out from train for development evaluation (NEVIS)
    unlabelled: Dataset | None = None
    classes: list[int] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # the same domain at another severity 1..5 (corruption streams; the ``gradual`` setting)
    at_severity: Callable[[int], Dataset] | None = None


@dataclass
class StreamOptions:
    """``--set`` keys that change how a stream is built. Only streams that declare an option
    accept it (the others fail in one line); a value that is left at its default keeps the
    stream's own."""

    image_size: int = param(
        0, "side length the stream resizes images to (0: the stream's own)", ge=0, le=4096
    )
    class_order: str = param(
        "",
        "class order of a split stream: icarl (numpy seed-1993 permutation, as iCaRL and most "
        "split-CIFAR papers), janson2022 (the simple-baseline paper's CIFAR-100 order), seeded "
        "(torch permutation of the stream's class_order_seed), sorted ('': the stream's own)",
    )
    train_copies: int = param(
        0,
        "digits-uda: the training digits and K - 1 deformed copies (random affine + elastic, "
        "Simard et al. 2003), for the labelled source and, blended, the unlabelled target: a "
        "training set of MNIST's order of size from the 1 257 digits (0: the stream's own, 1)",
        ge=0,
        le=100,
    )
    input_normalization: str = param(
        "",
        "what a --pretrained model sees: pretrained (inputs normalised with its weights' mean / "
        "std, timm's pretrained_cfg) or none (raw [0, 1] inputs, as the simple-baseline paper's "
        "code feeds them) ('': pretrained)",
    )
    preprocess: str = param(
        "",
        "ImageNet-C images: crop224 (as released, 224 px; EATA's and SAR's evaluation) or "
        "res256crop224 (resized to 256 and centre-cropped to 224: RobustBench's Res256Crop224, "
        "which CoTTA's ImageNet code loads ImageNet-C with) ('': the stream's own)",
    )
    corruption_order: str = param(
        "",
        "order of a corruption stream's domains: standard (gaussian_noise ... jpeg_compression), "
        "cotta10 (CoTTA's ten ImageNet orders, imagenet/cfgs/10orders: the run's seed picks "
        "order seed mod 10, so seeds 0-9 run all ten) ('': the stream's own)",
    )


@dataclass(frozen=True)
class TTAAugmentation:
    """Which test-time augmentations keep this stream's labels. Methods that augment (CoTTA's
    and ViDA's teachers) keep their own recipe within these limits. The default is natural
    images' (CoTTA's ``get_tta_transforms`` for CIFAR / ImageNet: horizontal flips, affine up to
    ±15°); a digit stream declares no flips and small rotations (a flipped 2 is not a 2)."""

    hflip: bool = True
    max_degrees: float = 15.0


@dataclass
class Stream:
    name: str
    protocol: str
    experiences: list[Experience]
    class_names: list[str]
    input_shape: tuple[int, int, int]
    source: Experience | None = None
    source_id: str = ""  # identifies the source data for the source-model cache
    embedded: bool = False  # built from data inside installed packages (set by the runner)
    settings: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)  # protocol parameter overrides
    # per strategy name, its parameters on this stream (the official scripts' per-dataset
    # settings, e.g. EATA's ImageNet lr, MCC's Office budget), over ``defaults``, for that
    # strategy's runs only (its own and the protocol's parameters)
    strategy_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    # per strategy name, where its settings on this stream come from (the official file)
    strategy_sources: dict[str, str] = field(default_factory=dict)
    description: str = ""
    notes: list[str] = field(
        default_factory=list
    )  # e.g. which tasks were skipped, shown by the CLI
    # (mean, std) the model normalises its [0, 1] input with (pretrained ImageNet models)
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    # images in [0, 1] with no normalisation of their own: a model loaded with pretrained
    # weights gets the mean / std it was trained with (timm's pretrained_cfg)
    normalize_for_pretrained: bool = False
    # per class, its text prompts (class name in each template; the first is the training
    # prompt): CLIP-style models build their classifier from them, and the continual protocol
    # then reports MTIL's Transfer / Avg / Last (zero-shot ability before each task is learned)
    prompts: list[list[str]] | None = None
    # facts about how this stream was built that a result depends on (e.g. the class order of a
    # split stream, the image size): recorded in every row's params_json under "stream"
    facts: dict[str, Any] = field(default_factory=dict)
    # label-preserving test-time augmentation (CoTTA, ViDA): see TTAAugmentation
    tta_augmentation: TTAAugmentation = field(default_factory=TTAAugmentation)
    # why a stream that trains its source model has no source data here (said when a run needs
    # it: no --checkpoint, no pre-trained weights)
    source_missing: str = ""
    # False for a stream that never has source data (ImageNet-C: the source model is pre-trained)
    has_source_data: bool = True
    # a cost probe's model starts from random weights (its cost does not depend on them)
    random_source: bool = False
    # the source-model recipe per model name where a model needs its own (SourceRecipe fields;
    # e.g. a ViT from scratch needs more epochs than the small CNN)
    source_recipes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def default_setting(self) -> str:
        return self.settings[0] if self.settings else "default"

    def check_not_empty(self) -> None:
        """Raise a one-line DataError if the stream has no experiences or one of them has no
        test images: its score would be an empty mean (0 % or 100 % error), never a result."""
        if not self.experiences:
            raise DataError(f"stream {self.name!r} has no experiences")
        for exp in self.experiences:
            if exp.test is None or len(exp.test) == 0:
                raise DataError(
                    f"stream {self.name!r}, {exp.kind} {exp.name!r}: no test images to score"
                )

    def check_shapes(self) -> None:
        """Raise a one-line DataError if any split's images do not match ``input_shape``."""
        parts = [("source", self.source)] if self.source else []
        parts += [(e.name, e) for e in self.experiences]
        for label, exp in parts:
            for split in ("train", "test", "dev", "unlabelled"):
                ds = getattr(exp, split)
                if ds is None or len(ds) == 0:
                    continue
                x = ds[0][0] if isinstance(ds[0], (tuple, list)) else ds[0]
                if not isinstance(x, torch.Tensor) or tuple(x.shape) != tuple(self.input_shape):
                    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                    raise DataError(
                        f"stream {self.name!r}, {label}/{split}: images have shape {shape}, "
                        f"expected {tuple(self.input_shape)} (C, H, W)"
                    )
