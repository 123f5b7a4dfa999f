"""Progress reporting. Protocols call ``run.progress.track(...)``; the CLI supplies rich bars,
library use and tests get the silent default."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class NullProgress:
    def track(
        self,
        iterable: Iterable[T],
        total: int | None = None,
        description: str = "",
        transient: bool = False,
    ) -> Iterator[T]:
        """Yield from ``iterable`` while showing progress; ``transient`` bars vanish when done."""
        yield from iterable


class RichProgress(NullProgress):
    """One live bar per nesting level (the run's current phase: training on a task, adapting to
    a domain), with rate and ETA. A finished phase's bar is removed: a stream with many phases
    (gradual has 135) would otherwise redraw every finished bar ten times a second, a cost that
    grows with the square of the number of phases."""

    def __init__(self, console=None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            refresh_per_second=4,
        )

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def track(
        self,
        iterable: Iterable[T],
        total: int | None = None,
        description: str = "",
        transient: bool = False,
    ) -> Iterator[T]:
        task = self._progress.add_task(description, total=total)
        try:
            for item in iterable:
                yield item
                self._progress.advance(task)
        finally:
            self._progress.remove_task(task)
