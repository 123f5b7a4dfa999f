"""What reaches the terminal: data printed as plain text, signals turned into clean stops.

Names come from plugins and CSV files, so they are data, never markup: rich would interpret
``[bold]`` in a string (or raise ``MarkupError`` on ``[/oops]``), and a terminal would obey
ANSI/OSC escape sequences (a CSV could set the window title). :func:`plain` strips control
characters and wraps the rest in a rich ``Text``, which rich prints verbatim.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
import warnings
from typing import Any

from rich.text import Text

from cladapt.errors import Interrupted

# C0 controls but tab/newline, DEL, C1 controls (ESC starts ANSI CSI / OSC sequences), and the
# invisible format characters (Unicode category Cf) that reorder or hide text: bidi overrides
# and isolates (U+202A-E, U+2066-9: "Trojan Source", CVE-2021-42574), zero-width spaces and
# joiners, the soft hyphen, the BOM and the tag characters
_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000e0000-\U000e007f]"
)


# an ANSI / OSC escape sequence whole (its ESC alone would be removed by _CONTROL, leaving
# "[1m" in the text)
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?)")


def clean(value: Any) -> str:
    """``str(value)`` without escape sequences, control, bidi or zero-width characters."""
    return _CONTROL.sub("", _ESCAPES.sub("", str(value)))


# characters that print as nothing although no Unicode category says so: Hangul fillers and the
# blank Braille pattern
_BLANKS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def unsafe_name(name: object) -> str:
    """Why ``name`` cannot name a strategy, stream or model ('' if it can): two names that look
    alike must be one name, a name must print as it reads, and a command line must read it as a
    name (not an option)."""
    import unicodedata

    if not isinstance(name, str) or not name.strip():
        return "a name must be a non-empty string"
    if name != name.strip():
        return "a name must not start or end with white space"
    if _CONTROL.search(name) or "\n" in name or "\t" in name:
        return "a name must not contain control, bidi or zero-width characters"
    if not name[0].isalnum():
        return "a name must start with a letter or a digit (not '-', '_' or a symbol)"
    if unicodedata.normalize("NFKC", name) != name:
        return (
            "a name must be written in Unicode's NFKC form "
            "(no separate accents, no compatibility forms)"
        )
    for c in name:
        if unicodedata.category(c) in ("Cc", "Cf", "Co", "Cn", "Zl", "Zp", "Mn", "Me") or (
            c in _BLANKS
        ):
            return f"a name must not contain invisible or combining characters (U+{ord(c):04X})"
    scripts = {unicodedata.name(c, "?").split()[0] for c in name if c.isalpha()}
    if len(scripts) > 1:
        return (
            f"a name must not mix scripts ({', '.join(sorted(scripts)).title()}): it would look "
            "like another name"
        )
    return ""


def name_key(name: object) -> str:
    """The name a results file's key cell stands for: as printed (no control, bidi or
    zero-width characters), in NFKC form, so two cells that look alike are one key."""
    import unicodedata

    return unicodedata.normalize("NFKC", clean(name))


def plain(value: Any, style: str = "") -> Text:
    """A rich ``Text`` that prints ``value`` as written (no markup), controls removed."""
    return Text(clean(value), style=style)


_signals_seen: list[str] = []
_first_at: list[float] = []
_handled: list[bool] = [False]
SECOND_SIGNAL_GRACE_S = 2.0  # a second signal this soon after the first belongs to the same stop


def _on_signal(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    if _signals_seen:
        if _handled[0] or time.monotonic() - _first_at[0] < SECOND_SIGNAL_GRACE_S:
            return  # the first signal is being acted on (error row, message): ignore more
        # the first was swallowed (e.g. a plugin's bare ``except:``) and the run went on
        sys.stderr.write(f"error: interrupted again ({name}): terminated at once\n")
        sys.stderr.flush()
        os._exit(143 if name == "SIGTERM" else 130)
    _signals_seen.append(name)
    _first_at.append(time.monotonic())
    raise Interrupted(name)


def raise_if_interrupted() -> None:
    """Raise the pending interruption again if a signal arrived and was swallowed before the
    run acted on it: called before every hook call of a run and before it is scored, so a
    plugin's bare ``except:`` can delay a stop by one batch but never turn it into a result."""
    if _signals_seen and not _handled[0]:
        raise Interrupted(_signals_seen[0])


def interruption_handled() -> None:
    """The run has taken the interruption (its error row is being written): later signals are
    ignored at the OS level, since Python restores default handlers while it shuts down and a
    late press would then kill the process mid-exit."""
    if not _signals_seen:
        return
    _handled[0] = True
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, signal.SIG_IGN)
        except ValueError:  # not the main thread
            return


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM stop a run the same way (an error row, a one-line message, exit 130
    / 143); presses while the first is acted on are ignored, so cleanup never ends in a
    traceback; a second signal after a swallowed first one terminates the process at once."""
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

    from cladapt.errors import PluginWarning
    from cladapt.results import ResultsWarning

    warnings.showwarning = show  # type: ignore[assignment]
    warnings.filterwarnings("always", category=ResultsWarning)
    warnings.filterwarnings("default", category=PluginWarning)
