"""CLIP through open_clip as a classifier whose head is the text encoder's embedding of prompts.

``ClipClassifier(x)`` returns ``logit_scale * <image feature, class text feature>`` for every class
of the stream, like CLIP's zero-shot classifier (Radford et al., ICML 2021): each class has one or
more prompts (class name inserted into its dataset's templates), the class feature is the
normalised mean of the prompts' normalised text features (prompt ensembling).

Training follows the ZSCL code (Zheng et al., ICCV 2023, ``Thunderbeee/ZSCL`` ``mtil``): the
temperature ``logit_scale`` is frozen (kept as a buffer, so no strategy can train it); when the text
encoder's parameters require gradients, a training forward recomputes the text features of the
current task's classes (``set_task_classes``) from their *first* prompt, with gradients, and the
cached head is refreshed with all prompts before the next evaluation.

Inputs are images in [0, 1]; the model normalises them with the CLIP mean and std itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cladapt.errors import CladaptError, DataError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_TEMPLATE = "a photo of a {}."


class ClipClassifier(nn.Module):
    def __init__(
        self,
        clip: nn.Module,
        tokenizer,
        prompts: Sequence[Sequence[str]],
        mean: Sequence[float] = OPENAI_MEAN,
        std: Sequence[float] = OPENAI_STD,
        text_chunk: int = 256,
    ) -> None:
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.text_chunk = text_chunk
        scale = clip.logit_scale.detach().exp().clone()
        del clip.logit_scale  # frozen temperature, as in ZSCL (never in an optimizer)
        clip.register_buffer("logit_scale", scale)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        flat = [p for class_prompts in prompts for p in class_prompts]
        owner = [c for c, class_prompts in enumerate(prompts) for _ in class_prompts]
        firsts, start = [], 0
        for class_prompts in prompts:
            if not class_prompts:
                raise CladaptError("every class needs at least one prompt")
            firsts.append(start)
            start += len(class_prompts)
        self.register_buffer("tokens", tokenizer(flat), persistent=False)
        self.register_buffer("owner", torch.tensor(owner), persistent=False)
        self.register_buffer("first_prompt", torch.tensor(firsts), persistent=False)
        dim = clip.text_projection.shape[-1] if hasattr(clip, "text_projection") else None
        dim = dim or clip.visual.output_dim
        self.register_buffer("head", torch.zeros(len(prompts), dim), persistent=False)
        self.task_classes: torch.Tensor | None = None
        self._stale = True
        self._head_ready = False
        self.num_classes = len(prompts)
        self.num_features = dim

    # ----------------------------------------------------------------- encoders
    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised image features of images in [0, 1]."""
        return F.normalize(self.clip.encode_image((x - self.mean) / self.std), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_text(tokens), dim=-1)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts)).to(self.tokens.device)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised features of free texts (chunked; gradients flow if enabled)."""
        tokens = self.tokenize(texts)
        return torch.cat(
            [
                self.encode_text(tokens[i : i + self.text_chunk])
                for i in range(0, len(tokens), self.text_chunk)
            ]
        )

    # ----------------------------------------------------------------- head
    def text_trains(self) -> bool:
        return torch.is_grad_enabled() and any(
            p.requires_grad for n, p in self.clip.named_parameters() if not n.startswith("visual.")
        )

    def set_task_classes(self, classes: Sequence[int] | None) -> None:
        """Classes whose text features are recomputed (with gradients) in training forwards."""
        self.task_classes = (
            None if classes is None else torch.as_tensor(list(classes), device=self.head.device)
        )

    @property
    def head_stale(self) -> bool:
        """The text encoder changed since the head was computed."""
        return self._stale

    def mark_text_changed(self) -> None:
        """Weights were replaced outside a training forward (weight averaging, interpolation)."""
        self._stale = True

    @torch.no_grad()
    def refresh_head(self) -> None:
        feats = torch.cat(
            [
                self.encode_text(self.tokens[i : i + self.text_chunk]).float()
                for i in range(0, len(self.tokens), self.text_chunk)
            ]
        )
        summed = torch.zeros_like(self.head).index_add_(0, self.owner, feats)
        self.head.copy_(F.normalize(summed, dim=-1))
        self._stale = False
        self._head_ready = True

    def text_head(self) -> torch.Tensor:
        if self.training and self.text_trains():
            classes = (
                self.task_classes
                if self.task_classes is not None
                else torch.arange(self.num_classes, device=self.head.device)
            )
            if not self._head_ready:  # other classes' rows: any computed head will do
                self.refresh_head()
            fresh = self.encode_text(self.tokens[self.first_prompt[classes]])
            self._stale = True  # the text encoder is about to change: refresh before evaluating
            return self.head.index_copy(0, classes, fresh.to(self.head.dtype))
        if self._stale:
            self.refresh_head()
        return self.head

    def logits(self, image_features: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        return self.clip.logit_scale * image_features @ head.t().to(image_features.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.encode_image(x), self.text_head())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image features (for feature-based strategies such as nmc)."""
        return self.encode_image(x)


def class_prompts(
    class_names: Sequence[str], templates: Sequence[str] | None = None
) -> list[list[str]]:
    templates = list(templates or [DEFAULT_TEMPLATE])
    return [[t.format(c) for t in templates] for c in class_names]


# --------------------------------------------------------------------- factories
def is_open_clip_name(name: str) -> bool:
    try:
        import open_clip
    except ImportError:  # pragma: no cover - open_clip is a dependency
        return False
    return name.removeprefix("open_clip:") in open_clip.list_models()


def _pretrained_tag(arch: str, pretrained: bool | str) -> str | None:
    import open_clip

    if not pretrained:
        return None
    if isinstance(pretrained, str) and pretrained not in ("default", "true"):
        return pretrained  # a tag (e.g. openai) or a path to a weights file
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if not tags:
        raise DataError(f"open_clip has no pretrained weights for {arch!r}")
    return "openai" if "openai" in tags else tags[0]


def needs_quick_gelu(arch: str, tag: str | None) -> bool:
    """Whether the weights were trained with QuickGELU (OpenAI's CLIP): open_clip >= 2.29 builds
    ``ViT-B-16`` with ``nn.GELU`` and only warns on a mismatch (ImageNet zero-shot 64.4 instead
    of 68.3, mlfoundations/open_clip#1109). A tag says so in open_clip's pretrained config; a
    weights file does when it is a TorchScript archive, the format OpenAI released (a state dict
    converted from it cannot be told apart: name the ``-quickgelu`` architecture for it)."""
    import open_clip

    if tag is None:
        return False
    path = Path(tag).expanduser()
    if path.is_file():
        return _is_torchscript(path)
    return bool(open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu", False))


def openai_release(path: Path, arch: str, input_shape: tuple[int, int, int]) -> nn.Module:
    """OpenAI's own release (a TorchScript archive, e.g. ``ViT-B-16.pt``): open_clip's JIT path
    (``load_openai_model``: the archive's weights into open_clip's CLIP, QuickGELU as trained),
    in fp32 on the CPU. PyTorch's ``weights_only`` loading refuses TorchScript, which is why
    ``create_model`` cannot take the file."""
    import open_clip

    clip = open_clip.load_openai_model(str(path), precision="fp32", device="cpu")
    size = clip.visual.image_size
    side = size[0] if isinstance(size, (tuple, list)) else size
    if side != input_shape[1]:
        raise DataError(
            f"--pretrained {path}: OpenAI's release is built for {side} px images, the stream "
            f"has {input_shape[1]} px"
        )
    return clip


def _check_activation_is_known(name: str, arch: str) -> None:
    """A plain state dict does not say which activation its weights were trained with: for an
    architecture that OpenAI released with QuickGELU weights, a weights file is refused unless
    the name says which (``-quickgelu``, or ``open_clip:`` for the architecture as it is)."""
    import open_clip

    explicit = name.startswith("open_clip:") or "quickgelu" in arch.lower()
    if explicit or "openai" not in open_clip.list_pretrained_tags_by_model(arch):
        return
    raise DataError(
        f"--pretrained FILE with --model {arch}: a state dict does not say whether its weights "
        "were trained with QuickGELU (OpenAI's) or GELU (e.g. LAION's), and the wrong one costs "
        f"accuracy; pass --model {arch}-quickgelu for OpenAI's weights (or OpenAI's TorchScript "
        f"release {arch}.pt), --model open_clip:{arch} for weights trained with GELU"
    )


def _is_torchscript(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def create_open_clip(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    pretrained: bool | str = False,
    prompts: Sequence[Sequence[str]] | None = None,
    class_names: Sequence[str] | None = None,
    **_,
) -> ClipClassifier:
    """An open_clip architecture (``ViT-B-16``, ``RN50``, ...); ``pretrained``: True for the
    default tag (``openai`` where it exists), a tag, or a local weights file."""
    import open_clip

    arch = name.removeprefix("open_clip:")
    tag = _pretrained_tag(arch, pretrained)
    path = Path(tag).expanduser() if tag else None
    try:
        # hub download failures are logged before they raise: the one-line error below says it
        logging.disable(logging.ERROR)
        if path is not None and path.is_file() and _is_torchscript(path):
            clip = openai_release(path, arch, input_shape)
        else:
            if path is not None and path.is_file():
                _check_activation_is_known(name, arch)
            clip = open_clip.create_model(
                arch,
                pretrained=tag,
                force_image_size=input_shape[1],
                force_quick_gelu=needs_quick_gelu(arch, tag),
            )
    except CladaptError:
        raise
    except Exception as exc:  # hub downloads fail offline with several exception types
        if tag is None:
            raise CladaptError(f"cannot create open_clip model {arch!r}: {exc}") from None
        raise DataError(
            f"open_clip weights {tag!r} for {arch!r} are not available offline "
            f"({type(exc).__name__}); put them in the Hugging Face cache (HF_HOME) or pass "
            "--pretrained /path/to/open_clip_model.bin"
        ) from None
    finally:
        logging.disable(logging.NOTSET)
    cfg = getattr(clip.visual, "preprocess_cfg", {}) or {}
    prompts = prompts or class_prompts(class_names or [str(i) for i in range(num_classes)])
    return ClipClassifier(
        clip,
        open_clip.get_tokenizer(arch),
        prompts,
        mean=tuple(cfg.get("mean", OPENAI_MEAN)),
        std=tuple(cfg.get("std", OPENAI_STD)),
    )


TINY_TOWERS = ("vit", "resnet", "resnet-w32")
RESNET_WIDTHS = {"resnet": 8, "resnet-w32": 32}  # CLIP ModifiedResNet's base width


def tiny_clip(
    num_classes: int,
    input_shape: tuple[int, int, int],
    prompts: Sequence[Sequence[str]] | None = None,
    class_names: Sequence[str] | None = None,
    tower: str = "vit",
    **_,
) -> ClipClassifier:
    """A tiny open_clip CLIP built from a custom config for small images: a 2-layer width-64
    text tower over 16-token texts and one of these image towers: ``vit`` (ViT on a 4x4 grid of
    patches, width 64, 2 layers; ``clip-tiny``), ``resnet`` (CLIP's modified ResNet, one
    bottleneck per stage, width 8, attention pooling; ``clip-tiny-rn``, sides a multiple of 32) or
    ``resnet-w32`` (the same at width 32: 16 times the image tower's parameters;
    ``clip-tiny-rn-w32``, for measuring what capacity changes).
    Randomly initialised: :func:`cladapt.models.clip_pretrain.tiny_clip_model` adds the weights
    the harness pre-trains on generated image-caption pairs, one checkpoint per tower."""
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    if tower not in TINY_TOWERS:
        raise CladaptError(f"unknown clip-tiny tower {tower!r}; choose from {TINY_TOWERS}")
    side = input_shape[1]
    if tower in RESNET_WIDTHS:
        if side % 32 or input_shape[2] != side:
            raise DataError(
                f"clip-tiny-rn needs square images whose side is a multiple of 32 (got "
                f"{input_shape[1]}x{input_shape[2]}): its ResNet tower downsamples by 32"
            )
        vision = open_clip.CLIPVisionCfg(
            layers=(1, 1, 1, 1), width=RESNET_WIDTHS[tower], image_size=side
        )
    else:
        vision = open_clip.CLIPVisionCfg(
            layers=2, width=64, head_width=32, patch_size=max(side // 4, 1), image_size=side
        )
    context = 16
    clip = open_clip.CLIP(
        embed_dim=64,
        vision_cfg=vision,
        text_cfg=open_clip.CLIPTextCfg(context_length=context, width=64, heads=2, layers=2),
    )
    prompts = prompts or class_prompts(class_names or [str(i) for i in range(num_classes)])
    return ClipClassifier(clip, SimpleTokenizer(context_length=context), prompts)
