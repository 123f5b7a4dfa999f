"""Base class for strategies. A strategy is a pluggy plugin object: it implements the run-event
hooks it needs (see :mod:`cladapt.hookspecs`) and declares its hyper-parameters as a dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass
class NoConfig:
    """A strategy without hyper-parameters."""


class Strategy:
    """Subclass, set ``name``, ``protocols`` and ``Config``, and implement hooks with
    ``@hookimpl``. The instance receives its effective config as ``self.cfg``.

    The first line of the docstring is the one-line description ``cladapt list`` shows.
    """

    name: ClassVar[str] = ""
    protocols: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type] = NoConfig
    # regularisers (by registered name) always composed with this strategy, e.g. ("lwf",)
    regularizers: ClassVar[tuple[str, ...]] = ()
    # cap on training epochs per experience (e.g. 1 for class means); None: the protocol's
    max_epochs: ClassVar[int | None] = None
    # importable modules the strategy needs (an optional extra); `cladapt bench` skips it without
    requires: ClassVar[tuple[str, ...]] = ()
    # only for streams with class prompts (a CLIP-style text head): `cladapt bench` pairs it so
    requires_prompts: ClassVar[bool] = False
    # an oracle reference, not a method: the UDA protocol gives it the target's labels
    # (Batch.y_target); its rows are marked `oracle` in the summary and on the leaderboard
    uses_target_labels: ClassVar[bool] = False
    # a reference point the methods are read against, not a method (e.g. "upper bound" for joint
    # training, "zero-shot reference"): marked on the leaderboard and never a stream's "best"
    reference: ClassVar[str] = ""

    def __init__(self, cfg: Any | None = None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()

    @staticmethod
    def configuration_facts(stream: Any, cfg: Any) -> list[str]:
        """``key=value`` facts about how the strategy will run on ``stream`` that its rows'
        configuration label must carry (EATA on a stream without clean images for its Fisher
        term runs as ETA: ``fisher=none (ETA)``), decided when the run is planned."""
        return []


class Regularizer:
    """A loss plugin composed with any training strategy (``--with NAME``): implements
    ``cladapt_extra_losses`` and whatever other hooks it needs to keep its state. Its parameter
    names must be unique across a run (prefix them, e.g. ``lwf_alpha``)."""

    name: ClassVar[str] = ""
    protocols: ClassVar[tuple[str, ...]] = ("continual",)
    Config: ClassVar[type] = NoConfig

    def __init__(self, cfg: Any | None = None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()
