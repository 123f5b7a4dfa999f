"""Errors a user can act on. The CLI prints them on one line and exits non-zero."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CladaptError(Exception):
    """Base class: the message must tell the user what to do."""


class UnknownNameError(CladaptError):
    """A strategy, stream, model, setting or parameter name that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        known = sorted(known)
        same_case = [k for k in known if k.casefold() == name.casefold()]  # --set LR=
        close = same_case or difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = f"known: {', '.join(known)}" if len(known) <= 12 else f"{len(known)} known"
        super().__init__(f"unknown {kind} {name!r}; " + (hint or listing))
        self.kind, self.name, self.suggestions = kind, name, close


class ConfigError(CladaptError):
    """A malformed or inapplicable --set value or option."""


class DataError(CladaptError):
    """Missing or malformed data files, or tensors of the wrong shape."""


class DivergenceError(CladaptError):
    """A loss became NaN or infinite."""


class PluginWarning(UserWarning):
    """A third-party plugin was skipped or will not work as written; the CLI prints one line."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM: the run writes an error row and stops."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def interruption_note(exc: BaseException) -> str:
    name = getattr(exc, "signal_name", "SIGINT")
    return "interrupted (Ctrl-C)" if name == "SIGINT" else f"interrupted ({name})"


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, or a stand-in when the exception's own ``__str__`` fails."""
    try:
        return str(exc)
    except Exception:  # a plugin's exception class with a broken __str__
        return f"<{type(exc).__name__} whose message could not be printed>"
