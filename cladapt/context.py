"""The ``Run`` context every run-event hook receives."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cladapt.progress import NullProgress
from cladapt.stream import Experience, Stream


@dataclass
class Run:
    """Everything a strategy needs, in one object.

    Stable attributes (plugins may read them): ``run_id, stream, protocol, setting, strategy,
    model_name, seed, device, params`` (the protocol's effective config), ``model``, ``optimizer``,
    ``experience`` and ``experience_index`` (current), ``step`` (global optimizer steps),
    ``images_seen``, ``generator`` (seeded CPU generator for data order), ``progress``, ``hook``
    (to call other hooks), ``state`` (a dict for plugins' own scratch data), and
    ``create_model()`` which builds a fresh model of the run's architecture on the device.
    """

    run_id: str
    stream: Stream
    protocol: str
    setting: str
    strategy: Any
    model_name: str
    seed: int
    device: torch.device
    params: Any
    hook: Any
    create_model: Callable[[], nn.Module]
    source_model: Callable[[], nn.Module] | None = None
    amp_dtype: torch.dtype | None = None
    model: nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    experience: Experience | None = None
    experience_index: int = -1
    step: int = 0
    images_seen: int = 0
    generator: torch.Generator = field(default_factory=torch.Generator)
    progress: Any = field(default_factory=NullProgress)
    state: dict[str, Any] = field(default_factory=dict)
    # one-off, cached preparation (e.g. a warm-up on source data): not charged to wall time
    untimed_s: float = 0.0

    def autocast(self) -> AbstractContextManager:
        """Autocast for model forwards where ``--set amp`` asks for it (fp32 by default).
        Data transforms (augmentations, corruptions) must run outside it, in fp32."""
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        )

    def trainable_parameters(self) -> int:
        """Parameters the optimizer updates (0 when the strategy does not train)."""
        if self.optimizer is None:
            return 0
        seen: set[int] = set()
        total = 0
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
        return total

    def snapshot(self) -> None:
        """Remember model and optimizer state, for ``cladapt_reset``."""
        self.state["_snapshot"] = (
            copy.deepcopy(self.model.state_dict()) if self.model is not None else None,
            copy.deepcopy(self.optimizer.state_dict()) if self.optimizer is not None else None,
        )

    def restore(self) -> None:
        model_state, optim_state = self.state["_snapshot"]
        if self.model is not None and model_state is not None:
            self.model.load_state_dict(model_state)
        if self.optimizer is not None and optim_state is not None:
            # a copy: the optimizer adopts the tensors it is given and would update the snapshot
            self.optimizer.load_state_dict(copy.deepcopy(optim_state))

    def params_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self.params)
        cfg = getattr(self.strategy, "cfg", None)
        if cfg is not None and dataclasses.is_dataclass(cfg):
            out.update(dataclasses.asdict(cfg))
        return out
