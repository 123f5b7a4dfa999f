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

    def __init__(self, cfg: Any | None = None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()
