"""What reaches the terminal: data printed as plain text, signals turned into clean stops.

Names come from plugins and CSV files, so they are data, never markup: rich would interpret
``[bold]`` in a string (or raise ``MarkupError`` on ``[/oops]``), and a terminal would obey
ANSI/OSC escape sequences (a CSV could set the window title). :func:`plain` strips control
characters and wraps the rest in a rich ``Text``, which rich prints verbatim.
"""

from __future__ import annotations

import re
import signal
import warnings
from typing import Any

from rich.text import Text

from cladapt.errors import Interrupted

# C0 controls but tab/newline, DEL, C1 controls (ESC starts ANSI CSI / OSC sequences)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(value: Any) -> str:
    """``str(value)`` without control characters."""
    return _CONTROL.sub("", str(value))


def plain(value: Any, style: str = "") -> Text:
    """A rich ``Text`` that prints ``value`` as written (no markup), controls removed."""
    return Text(clean(value), style=style)


_signals_seen: list[str] = []


def _on_signal(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    if _signals_seen:  # the first signal is being handled (error row, message): ignore more
        return
    _signals_seen.append(name)
    # ignored at the OS level from now on: Python restores default handlers while it shuts
    # down, and a late press would then kill the process mid-exit
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(name)


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM stop a run the same way (an error row, a one-line message, exit 130
    / 143); presses after the first are ignored, so cleanup never ends in a traceback."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, _on_signal)
        except ValueError:  # not the main thread (e.g. a test runner's worker): leave it
            return


def exit_code(exc: BaseException) -> int:
    return 143 if getattr(exc, "signal_name", "") == "SIGTERM" else 130


def install_warning_printer(console) -> None:
    """Python warnings from cladapt (e.g. a torn row skipped) as one ``warning:`` line."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        console.print(plain(f"warning: {message}", style="yellow"), soft_wrap=True)

    from cladapt.results import ResultsWarning

    warnings.showwarning = show  # type: ignore[assignment]
    warnings.filterwarnings("always", category=ResultsWarning)
