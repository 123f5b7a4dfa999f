"""Name -> factory registries that plugins extend through the registration hooks."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from cladapt.errors import CladaptError, UnknownNameError
from cladapt.terminal import clean, unsafe_name

PROTOCOLS = ("continual", "test_time", "uda")

T = TypeVar("T")


@dataclass
class Entry:
    name: str
    factory: Any
    description: str
    protocols: tuple[str, ...] = ()
    origin: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    kind = "entry"

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self.origin = ""  # set by the plugin manager to the plugin being registered

    def _add(self, entry: Entry) -> None:
        why = unsafe_name(entry.name)
        if why:
            raise CladaptError(
                f"{self.kind} {clean(entry.name)!r} (registered by {entry.origin or '?'}) "
                f"refused: {why}"
            )
        for p in entry.protocols:
            if p not in PROTOCOLS:
                raise CladaptError(
                    f"{self.kind} {entry.name!r}: unknown protocol {p!r} (one of {PROTOCOLS})"
                )
        if entry.name in self._entries:
            other = self._entries[entry.name].origin
            raise CladaptError(
                f"{self.kind} {entry.name!r} is registered twice (by {other} and {entry.origin}); "
                "uninstall one of the plugins"
            )
        self._entries[entry.name] = entry

    def forget(self, origins: set[str]) -> None:
        """Drop the entries the plugins ``origins`` registered (a plugin skipped half-way)."""
        self._entries = {k: e for k, e in self._entries.items() if e.origin not in origins}
        if isinstance(self, StrategyRegistry):
            self.regularizers.forget(origins)

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._entries) from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return sorted(self._entries)


def _first_line(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, whole (it may span lines); a
    period after "et al", "e.g" or "i.e" does not end it."""
    paragraph = " ".join((doc or "").strip().split("\n\n")[0].split())
    return re.split(r"(?<! al)(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Z])", paragraph, maxsplit=1)[0].rstrip(
        "."
    ) + ("." if paragraph else "")


class RegularizerRegistry(Registry):
    kind = "regularizer"


class StrategyRegistry(Registry):
    """Strategies, plus the regularisers (extra-loss plugins) that compose with them."""

    kind = "strategy"

    def __init__(self) -> None:
        super().__init__()
        self.regularizers = RegularizerRegistry()

    def add_regularizer(self, cls: type, name: str | None = None) -> None:
        """Register a loss plugin class (``name``, ``Config``, hooks such as
        ``cladapt_extra_losses``) that ``--with NAME`` adds to any training strategy."""
        self.regularizers.origin = self.origin
        self.regularizers._add(
            Entry(
                name or cls.name,
                cls,
                _first_line(cls.__doc__),
                tuple(getattr(cls, "protocols", ())),
                self.origin,
            )
        )

    def add(self, strategy_cls: type, name: str | None = None) -> None:
        """Register a :class:`cladapt.strategy.Strategy` subclass (or any class with the same
        attributes: ``name``, ``protocols``, ``Config``, a docstring)."""
        self._add(
            Entry(
                name=name or strategy_cls.name,
                factory=strategy_cls,
                description=_first_line(strategy_cls.__doc__),
                protocols=tuple(strategy_cls.protocols),
                origin=self.origin,
            )
        )


class StreamRegistry(Registry):
    kind = "stream"

    def add(
        self,
        name: str,
        build: Callable[..., Any],
        protocol: str,
        description: str = "",
        embedded: bool = False,
        **extra: Any,
    ) -> None:
        """``build(data_root=..., seed=...)`` returns a :class:`cladapt.stream.Stream`.
        ``embedded``: needs no files outside installed packages (runs offline)."""
        self._add(
            Entry(
                name, build, description, (protocol,), self.origin, {"embedded": embedded, **extra}
            )
        )


class ModelRegistry(Registry):
    kind = "model"

    def add(
        self,
        name: str,
        factory: Callable[..., Any],
        description: str = "",
        prepare: Callable[..., Any] | None = None,
    ) -> None:
        """``prepare(input_shape=..., progress=...)``, if given, makes the model's one-off cached
        artefacts (e.g. pre-trained weights) before a run that asks for ``--pretrained`` starts
        its clock."""
        self._add(Entry(name, factory, description, (), self.origin, {"prepare": prepare}))
