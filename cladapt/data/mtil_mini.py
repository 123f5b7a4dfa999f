"""Embedded image-caption world for ``mtil-mini``: a tiny CLIP is pre-trained on captioned scenes
and then learns a sequence of tasks whose label spaces are *attributes* of the same scenes.

Scenes (3x32x32, values in [0, 1], batched torch, seeded):

- objects: a shape (circle, square, triangle, cross) of a named colour, small or large, on the
  left / right / top / bottom of a noisy background; captions name a random subset of the
  attributes ("a large red circle on the left", "a blue shape", "a square");
- digits: scikit-learn's handwritten digits, tinted ("the digit seven", "a green digit seven");
- dots: one to four discs ("three dots");
- photos: the objects' scenes on random crops of real photographs (those that ship with
  scikit-learn and matplotlib, as digits-m's MNIST-M blend uses), captioned as objects are.
  They stand for the web photos ImageNet is drawn from: in pre-training and in ZSCL's
  reference set, in no task (ZSCL distils on ImageNet and Conceptual Captions, whose images
  are not the tasks').

Pre-training sees free captions only; each task asks about one attribute with its own prompt
templates, so a pre-trained model has genuine zero-shot accuracy on every task's label set, and a
task's training can erase what later tasks need (the MTIL phenomenon, Zheng et al., ICCV 2023).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import TensorDataset

from cladapt.data.digits import digits_split
from cladapt.data.procedural import HUES, SHAPES, _paint, counting, shape_masks
from cladapt.data.uda_pairs import photo_crops

SIZES = {"small": (0.18, 0.26), "large": (0.36, 0.46)}
POSITIONS = {"left": (-0.5, 0.0), "right": (0.5, 0.0), "top": (0.0, -0.5), "bottom": (0.0, 0.5)}
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
COUNTS = ["one dot", "two dots", "three dots", "four dots"]
COLOURS = list(HUES)
_HUE = torch.tensor(list(HUES.values()))

# the task's own words per attribute, and the word the captions use for a value the captions do
# not name with it (no token shared with any task word)
TASK_WORDS = {
    "digit": NUMBERS,
    "count": COUNTS,
    "shape": list(SHAPES),
    "colour": COLOURS,
    "position": list(POSITIONS),
    "size": list(SIZES),
}
SYNONYMS = {
    "digit": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
    "count": ["a single spot", "a pair of spots", "a trio of spots", "a quartet of spots"],
    "shape": ["disc", "box", "wedge", "plus sign"],
    "colour": ["crimson", "emerald", "azure", "golden", "violet", "turquoise"],
    "position": ["west", "east", "north", "south"],
    "size": ["tiny", "huge"],
}
# the values the captions name with the task's word (by index into TASK_WORDS); two or more
# values of every attribute are named only by their synonym, so no task's zero-shot accuracy
# comes from ruling out the one class it cannot name (the tasks' zero-shot accuracies then span
# 44-88 %, CLIP ViT-B/16's on MTIL 24-89 %)
NAMED = {
    "digit": {0, 1, 2, 3, 4, 5, 6},
    "count": {0, 1},
    "shape": {0, 1},
    "colour": {0, 1, 2, 3},
    "position": {0, 1},
    "size": set(),
}


def caption_word(attribute: str, value: int) -> str:
    """How the pre-training captions name ``value`` of ``attribute``."""
    named = value in NAMED[attribute]
    return (TASK_WORDS if named else SYNONYMS)[attribute][value]


@dataclass
class Scenes:
    x: torch.Tensor
    kind: str  # objects | photos | digits | dots
    attrs: dict[str, torch.Tensor]  # attribute -> index per image


def objects(n: int, g: torch.Generator, size: int = 32, photo: bool = False) -> Scenes:
    """Shape scenes on a plain dark background, or on a photograph's crop when ``photo``."""
    shape = torch.randint(0, len(SHAPES), (n,), generator=g)
    colour = torch.randint(0, len(COLOURS), (n,), generator=g)
    where = torch.randint(0, len(POSITIONS), (n,), generator=g)
    big = torch.randint(0, 2, (n,), generator=g)
    offsets = torch.tensor(list(POSITIONS.values()))[where]
    jitter = 0.08 * torch.randn(n, 2, generator=g)
    lo, hi = (
        torch.tensor([SIZES["small"][0], SIZES["large"][0]]),
        torch.tensor([SIZES["small"][1], SIZES["large"][1]]),
    )
    r = lo[big] + (hi[big] - lo[big]) * torch.rand(n, generator=g)
    place = tuple(v.view(n, 1, 1) for v in ((offsets + jitter).unbind(1) + (r,)))
    hue = (_HUE[colour] + 0.06 * torch.randn(n, 3, generator=g)).clamp(0, 1)
    mask = shape_masks(shape, n, size, g, place)
    x = _paint(mask, hue, g, background=photo_crops(n, size, size, g) if photo else None)
    attrs = {"shape": shape, "colour": colour, "position": where, "size": big}
    return Scenes(x, "photos" if photo else "objects", attrs)


def digit_scenes(n: int, g: torch.Generator, train: bool = True) -> Scenes:
    ds = digits_split()[0 if train else 1]
    xs, ys = ds.tensors
    idx = torch.randint(0, len(ys), (n,), generator=g)
    colour = torch.randint(0, len(COLOURS), (n,), generator=g)
    ink = xs[idx, :1]  # grey levels
    x = _paint(ink[:, 0], (_HUE[colour] + 0.06 * torch.randn(n, 3, generator=g)).clamp(0, 1), g)
    return Scenes(x, "digits", {"digit": ys[idx], "colour": colour})


def dot_scenes(n: int, g: torch.Generator, size: int = 32) -> Scenes:
    x, y = counting(n, g, size)
    return Scenes(x, "dots", {"count": y})


def captions(scenes: Scenes, rng: random.Random) -> list[str]:
    """Free captions naming a random subset of each scene's attributes (:func:`caption_word`)."""
    a = {k: v.tolist() for k, v in scenes.attrs.items()}
    out = []
    for i in range(len(scenes.x)):
        if scenes.kind == "dots":
            out.append(caption_word("count", a["count"][i]))
        elif scenes.kind == "digits":
            colour = caption_word("colour", a["colour"][i])
            word = caption_word("digit", a["digit"][i])
            out.append(f"a {colour} digit {word}" if rng.random() < 0.4 else f"the digit {word}")
        else:  # objects and photos
            words = ["a"]
            if rng.random() < 0.5:
                words.append(caption_word("size", a["size"][i]))
            if rng.random() < 0.6:
                words.append(caption_word("colour", a["colour"][i]))
            words.append(caption_word("shape", a["shape"][i]) if rng.random() < 0.7 else "shape")
            if rng.random() < 0.8:
                words.append(f"on the {caption_word('position', a['position'][i])}")
            out.append(" ".join(words))
    return out


def caption_batch(n: int, g: torch.Generator, rng: random.Random) -> tuple[torch.Tensor, list[str]]:
    """A pre-training batch: 40 % objects, 20 % photos, 20 % digits (train split), 20 % dots,
    shuffled."""
    n_photos = n_digits = n_dots = n // 5
    parts = [
        objects(n - n_photos - n_digits - n_dots, g),
        objects(n_photos, g, photo=True),
        digit_scenes(n_digits, g),
        dot_scenes(n_dots, g),
    ]
    x = torch.cat([p.x for p in parts])
    texts = [c for p in parts for c in captions(p, rng)]
    order = torch.randperm(n, generator=g)
    return x[order], [texts[i] for i in order.tolist()]


@dataclass(frozen=True)
class MiniTask:
    name: str
    classes: list[str]
    templates: list[str]
    make: Callable[[int, torch.Generator, bool], tuple[torch.Tensor, torch.Tensor]]


def _attribute(attr: str) -> Callable[[int, torch.Generator, bool], tuple]:
    def make(n: int, g: torch.Generator, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        s = objects(n, g)
        return s.x, s.attrs[attr]

    return make


def _shape_colour(n: int, g: torch.Generator, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    s = objects(n, g)
    return s.x, s.attrs["colour"] * len(SHAPES) + s.attrs["shape"]


def _digit_colours(n: int, g: torch.Generator, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    s = digit_scenes(n, g, train)
    return s.x, s.attrs["colour"]


def _digits(n: int, g: torch.Generator, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    s = digit_scenes(n, g, train)
    return s.x, s.attrs["digit"]


def _dots(n: int, g: torch.Generator, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    s = dot_scenes(n, g)
    return s.x, s.attrs["count"]


TASKS: dict[str, MiniTask] = {
    t.name: t
    for t in (
        MiniTask("digits", NUMBERS, ["the digit {}"], _digits),
        MiniTask("shapes", list(SHAPES), ["a {}"], _attribute("shape")),
        MiniTask("colours", COLOURS, ["a {} shape"], _attribute("colour")),
        MiniTask("counting", COUNTS, ["{}"], _dots),
        MiniTask("positions", list(POSITIONS), ["a shape on the {}"], _attribute("position")),
        MiniTask("sizes", list(SIZES), ["a {} shape"], _attribute("size")),
        MiniTask(
            "shape-colour", [f"{c} {s}" for c in COLOURS for s in SHAPES], ["a {}"], _shape_colour
        ),
        MiniTask("digit-colours", COLOURS, ["a {} digit"], _digit_colours),
    )
}


def task_split(task: MiniTask, train: int, test: int, seed: int) -> tuple[TensorDataset, ...]:
    g = torch.Generator().manual_seed(seed)
    xtr, ytr = task.make(train, g, True)
    xte, yte = task.make(test, g, False)
    return TensorDataset(xtr, ytr), TensorDataset(xte, yte)


def reference_set(n_images: int, n_texts: int, seed: int) -> tuple[TensorDataset, list[str]]:
    """ZSCL's unlabelled reference data for mtil-mini: photo scenes and their captions, with
    their own seed. ZSCL uses ImageNet images and Conceptual Captions sentences: data of the
    pre-training kind from outside every task's domain, as the photos are here (no task uses
    them; each task's images come from the other families)."""
    g, rng = torch.Generator().manual_seed(seed), random.Random(seed)
    x = objects(n_images, g, photo=True).x
    texts: list[str] = []
    while len(texts) < n_texts:
        for c in captions(objects(256, g, photo=True), rng):
            if c not in texts and len(texts) < n_texts:
                texts.append(c)
    return TensorDataset(x), texts
