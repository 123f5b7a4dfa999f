"""Builders of ``probes.toml``: cost probes, one synthetic batch at a paper's input shape.

A method's memory and compute per step depend on the architecture, the input size and the batch
size, not on the weights or the pixels. A cost probe is a stream of one domain of seeded random
images at the paper's shape, run in the test-time protocol's ``probe`` setting (one adaptation
step, its cost recorded, no error) on a randomly initialised model: the paper's configuration
without its data, so that a cost claim is judged where it was made.
"""

from __future__ import annotations

from typing import Any

import torch
from cladapt.streams.common import common_fields
from torch.utils.data import TensorDataset

from cladapt.stream import Experience, Stream


def build_cost_probe(
    name: str, d: dict[str, Any], data_root: str | None = None, seed: int = 0
) -> Stream:
    size, classes, images = int(d["image_size"]), int(d["classes"]), int(d["images"])
    g = torch.Generator().manual_seed(0)  # the same batch for every run: the data is not a seed's
    x = (torch.rand(images, 3, size, size, generator=g) * 255).to(torch.uint8)
    y = torch.arange(images) % classes
    probe = Experience(name="probe", kind="domain", test=TensorDataset(x, y))
    common = common_fields(name, d) | {
        "class_names": [f"class{i}" for i in range(classes)],
        "input_shape": (3, size, size),
    }
    stream = Stream(experiences=[probe], **common)
    stream.source_missing = "a cost probe has no source data: its model is randomly initialised"
    stream.has_source_data = False
    stream.random_source = True  # the cost does not depend on the weights
    stream.facts = {**stream.facts, "probe": f"{images} images at {size} px"}
    return stream
