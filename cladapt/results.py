"""Tidy result rows and crash-safe CSV appends.

One schema for every protocol: one metric value per row (see ``COLUMNS``). ``row_type`` is
``eval`` (a metric of one evaluation), ``summary`` (headline metrics and cost of a finished run)
or ``error`` (the run failed or was interrupted; ``note`` says why). A run with neither a summary
nor an error row was killed outright (SIGKILL, power loss): readers call it *incomplete*.

Writing. Appends lock the results file itself (``flock``; every path to the file — a symlink, a
hard link, a relative name — takes the same lock), open it ``O_APPEND`` and write all rows of one
group with a single ``write`` call, so concurrent runs never interleave rows. Before anything is
modified the file's first line must be the results header: a file that is not a cladapt results
CSV is never touched. A previous writer killed mid-write could leave a torn last record; the next
append, under the lock, cuts exactly the record :func:`read_results` would drop and nothing
before it; a file malformed anywhere else refuses the append, naming the line. A complete last
record that merely lacks its final newline is kept. ``bench`` starts its file afresh by moving
the old one aside (``NAME.<time>.bak``), never by deleting it.

Reading. :func:`read_results` checks the header (a UTF-8 byte-order mark, as Excel writes, is
accepted) and every record's field count, its value (a finite number or ``nan``) and its seed (an
integer). A short or unparseable *last* record, or one cut inside a multi-byte character, is a
torn write and is dropped with a warning — unless an unclosed quote in it swallows later lines
that are rows of their own (a stray quote from a hand edit, not a dead writer): that, and anything
malformed before the last record, is a one-line :class:`DataError` naming the line.

Text cells that a spreadsheet would run as a formula (starting with ``= + - @``, a tab or a
carriage return) are written with a leading ``'`` (OWASP's advice for CSV injection); a cell that
itself starts with ``'`` gets one more, so :func:`read_results` restores every value exactly.

What the writer writes, the reader reads: a row holding a line-breaking character that Python's
``csv`` writer leaves unquoted (a bare carriage return, as a CRLF shell script leaves at the end of
its last argument; form feeds, U+0085, U+2028, ...) is written with every cell quoted, and a cell
longer than ``CELL_LIMIT`` characters (Python's ``csv.field_size_limit()`` default, which other
CSV readers share) is refused before anything is written.
"""

from __future__ import annotations

import csv
import errno
import io
import math
import os
import re
import stat
import tempfile
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

try:  # POSIX: lock the results file itself
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from cladapt.errors import CladaptError, DataError

COLUMNS = (
    "run_id",
    "started_at",
    "cladapt_version",
    "stream",
    "protocol",
    "setting",
    "strategy",
    "params_json",
    "model",
    "seed",
    "device",
    "row_type",
    "trained_upto",
    "eval_experience",
    "metric",
    "value",
    "note",
)
HEADER = ",".join(COLUMNS)
_HEADER_BYTES = HEADER.encode()
_BOM = b"\xef\xbb\xbf"
NUMERIC_COLUMNS = ("seed", "value")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
# characters that end a line for some reader (str.splitlines) but that csv's writer does not quote
_LINE_BREAKS = re.compile("[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
CELL_LIMIT = 131_072  # csv.field_size_limit()'s default: the longest cell any csv reader takes
SEED_MAX = 2**32 - 1  # the seeds a run accepts (numpy's seed range)


class ResultsWarning(UserWarning):
    """Something in a results file was skipped (e.g. a torn last row); the CLI prints it."""


@dataclass
class Record:
    """One metric value. ``trained_upto``: the experience (or epoch) the model had learned when
    it was evaluated; ``eval_experience``: what it was evaluated on; empty for run-level values."""

    metric: str
    value: float
    trained_upto: str = ""
    eval_experience: str = ""
    row_type: str = "eval"
    note: str = ""


def error_record(note: str) -> Record:
    """The row that marks a run as failed, interrupted or incomplete (never scored)."""
    return Record("run_failed", float("nan"), row_type="error", note=note[:500])


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _format_value(value: float, metric: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if not math.isfinite(float(value)):  # would rank first or last: never a result
        raise CladaptError(f"metric {metric!r} has the value {value}: not a finite number")
    return repr(float(value))


def escape_cell(value: Any) -> Any:
    """Neutralise a text cell a spreadsheet would evaluate (reversible, see the module doc)."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def unescape_cell(value: str) -> str:
    return value[1:] if value.startswith("'") else value


def check_cell(column: str, value: Any) -> None:
    """Refuse a cell the reader could not read back (longer than :data:`CELL_LIMIT`)."""
    if isinstance(value, str) and len(value) > CELL_LIMIT:
        raise CladaptError(
            f"a results row's {column} would be {len(value):,} characters, over the "
            f"{CELL_LIMIT:,} a CSV cell may hold (csv.field_size_limit): nothing was written; "
            "shorten what it records (e.g. a --set value or a plugin's Config default)"
        )


def rows_to_csv(rows: Iterable[dict[str, Any]], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", extrasaction="raise")
    # csv quotes a cell holding "\n" but not a bare "\r" (nor U+2028, ...): such a row is
    # written with every cell quoted, so no reader splits it
    quoted = csv.DictWriter(
        buf, fieldnames=COLUMNS, lineterminator="\n", extrasaction="raise", quoting=csv.QUOTE_ALL
    )
    if header:
        writer.writeheader()
    for row in rows:
        cells = {
            k: (
                _format_value(v, row.get("metric", ""))
                if k == "value"
                else v
                if k == "seed"
                else escape_cell(v)
            )
            for k, v in row.items()
        }
        for k, v in cells.items():
            check_cell(k, v)
        breaks = any(isinstance(v, str) and _LINE_BREAKS.search(v) for v in cells.values())
        (quoted if breaks else writer).writerow(cells)
    return buf.getvalue()


def is_sink(path: str | os.PathLike) -> bool:
    """``/dev/null`` (or the platform's null device): rows are discarded, nothing is created."""
    return os.path.realpath(path) == os.path.realpath(os.devnull)


def _first_line(path: Path) -> bytes:
    with open(path, "rb") as f:
        return _first_of(f.read(len(_BOM) + len(_HEADER_BYTES) + 2))


def _first_of(head: bytes) -> bytes:
    """The first line of a file's first bytes, a UTF-8 byte-order mark left out (b"" for a file
    holding nothing else, as PowerShell's ``Out-File -Encoding utf8`` leaves an empty one)."""
    lines = head.removeprefix(_BOM).splitlines()
    return lines[0] if lines else b""


def _is_empty(raw: bytes) -> bool:
    return not raw.removeprefix(_BOM).strip()


def _not_results(path: os.PathLike) -> DataError:
    return DataError(
        f"{path} is not a cladapt results CSV (its first line is not the results header); "
        "it was left untouched: pass another --out"
    )


def check_results_path(path: str | os.PathLike) -> None:
    """Fail at once, before any work, if ``path`` cannot take cladapt result rows: it exists but
    is not a results CSV (every row is checked, as the first append would), is not a regular
    file, is a symlink to nothing, or its folder is not writable."""
    path = Path(path)
    if is_sink(path):
        return
    try:
        _check_results_path(path)
    except OSError as exc:  # a name too long, a symlink loop, a path through a file, ...
        raise DataError(f"cannot use {path} as the results file: {exc.strerror or exc}") from None


def _check_results_path(path: Path) -> None:
    if path.is_symlink() and not path.exists():
        raise DataError(
            f"{path} is a symlink to a file that does not exist (or a symlink loop); "
            "pass --out FILE.csv"
        )
    if path.exists():
        if not path.is_file():
            raise DataError(f"{path} is not a regular file; pass --out FILE.csv")
        raw = path.read_bytes()
        if not _is_empty(raw):
            if _first_of(raw[: len(_BOM) + len(_HEADER_BYTES) + 2]) != _HEADER_BYTES:
                raise _not_results(path)
            _scan(raw, path)  # a malformed row is refused now, not after the run's work
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"cannot create {path}: {parent} is not a folder")
    _probe_writable(path)


def _probe_writable(path: Path) -> None:
    """A real write test (``os.access`` says yes to root even on a read-only mount): open the
    file for appending, or create and remove a scratch file beside it. Writes nothing."""
    try:
        if path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as exc:
        why = "not writable" if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else ""
        raise DataError(
            f"cannot write results to {path}: {why or exc.strerror or exc}"
            + (f" ({exc.strerror})" if why and exc.strerror else "")
        ) from None


@contextmanager
def locked(path: str | os.PathLike) -> Iterator[int]:
    """An ``O_APPEND`` descriptor of the results file ``path`` (created if missing) holding an
    exclusive lock on the file itself, so every path to it — a symlink, a hard link, a relative
    or absolute name — takes the same lock. If another writer replaced the file at ``path``
    while we waited (``bench`` moving an old file aside), the new file is locked instead."""
    path = Path(path)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise _write_error(path, exc) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device put in its place
                raise CladaptError(
                    f"cannot write results to {path}: it is no longer a regular file"
                )
            release = _lock(fd, path)
            try:
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(path))
                except FileNotFoundError:
                    same = False
                if same:
                    yield fd
                    return
            finally:
                release()
        finally:
            os.close(fd)


def _write_error(path: os.PathLike, exc: OSError) -> CladaptError:
    """One line for a results file that cannot be written (the reason in words)."""
    why = {
        errno.EFBIG: "the file-size limit (ulimit -f) was reached",
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.EISDIR: "it is a folder now",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return CladaptError(f"could not write results to {path}: {why}")


def _lock(fd: int, path: Path):
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return lambda: fcntl.flock(fd, fcntl.LOCK_UN)
    lock = FileLock(os.path.realpath(path) + ".lock")  # no flock (Windows): the resolved path
    lock.acquire()
    return lock.release


@dataclass
class _Scan:
    """What the reader makes of a results file; the writer acts on exactly the same view."""

    records: list[list[str]]  # complete rows (header excluded)
    lines: list[int]  # the line each row starts on
    torn_at: int | None = None  # byte offset of a torn last record, if any
    torn_line: int = 0
    torn_why: str = ""
    unterminated: bool = False  # the last complete row lacks its final newline


def _record_ok(record: list[str]) -> bool:
    return len(record) == len(COLUMNS) and _parse_value(record[COLUMNS.index("value")]) is not None


def _one_record(line: str) -> list[str] | None:
    try:
        records = list(csv.reader([line], strict=True))
    except csv.Error:
        return None
    return records[0] if len(records) == 1 else None


def _scan(raw: bytes, path: os.PathLike) -> _Scan:
    """Parse a results file the one way both the reader and the writer use: a torn last record
    (a short row, an unterminated quote, a multi-byte character cut at the end) is reported,
    anything malformed before it is a :class:`DataError` naming the line."""
    start = len(_BOM) if raw.startswith(_BOM) else 0  # Excel saves UTF-8 with a BOM
    chunks = raw[start:].splitlines(keepends=True)
    offsets = [start]
    lines: list[str] = []
    cut_char = False
    for n, chunk in enumerate(chunks):
        offsets.append(offsets[-1] + len(chunk))
        try:
            lines.append(chunk.decode("utf-8"))
        except UnicodeDecodeError as exc:
            last = n == len(chunks) - 1 and not chunk.endswith((b"\n", b"\r"))
            if last and exc.reason == "unexpected end of data":  # a torn multi-byte character
                lines.append(chunk[: exc.start].decode("utf-8", errors="replace"))
                cut_char = True
            else:
                raise DataError(
                    f"{path}, line {n + 1}: not UTF-8 text (not a cladapt results CSV)"
                ) from None
    with _long_cells():
        return _parse(raw, lines, offsets, cut_char, path)


@contextmanager
def _long_cells():
    """Parse with csv's cell limit raised, so a cell over :data:`CELL_LIMIT` (which the writer
    no longer writes, an older file may hold) is read, never mistaken for a torn record."""
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _parse(raw: bytes, lines: list[str], offsets: list[int], cut_char: bool, path) -> _Scan:
    reader = csv.reader(iter(lines), strict=True)
    try:
        header = next(reader)
    except (csv.Error, StopIteration) as exc:
        raise DataError(f"{path}: malformed CSV header ({exc})") from None
    if tuple(header) != COLUMNS:
        raise DataError(f"{path} is not a cladapt results CSV (its columns differ)")
    scan = _Scan([], [])
    while True:
        first = reader.line_num  # lines consumed before this record
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if reader.line_num < len(lines):
                raise DataError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from None
            _torn(scan, lines, first, offsets, path, f"{exc}")
            break
        if reader.line_num == len(lines) and (cut_char or not _record_ok(record)):
            if len(record) > len(COLUMNS):
                raise DataError(
                    f"{path}, line {first + 1}: {len(record)} fields, expected {len(COLUMNS)} "
                    "(not a valid results row)"
                )
            why = (
                "cut inside a character" if cut_char else f"{len(record)} of {len(COLUMNS)} fields"
            )
            _torn(scan, lines, first, offsets, path, why)
            break
        if not _record_ok(record):
            what = (
                f"{len(record)} fields, expected {len(COLUMNS)}"
                if len(record) != len(COLUMNS)
                else f"value {record[COLUMNS.index('value')]!r} is not a number"
            )
            raise DataError(f"{path}, line {first + 1}: {what} (not a valid results row)")
        scan.records.append(record)
        scan.lines.append(first + 1)
    scan.unterminated = (
        scan.torn_at is None and bool(scan.records) and not raw.endswith((b"\n", b"\r"))
    )
    return scan


def _torn(scan: _Scan, lines: list[str], first: int, offsets: list[int], path, why: str) -> None:
    """Record a torn last record starting after line ``first`` — unless it swallows later lines
    that are whole rows of their own: then a stray quote, not a dead writer, made it."""
    for n in range(first + 1, len(lines)):
        record = _one_record(lines[n])
        if record is not None and _record_ok(record):
            raise DataError(
                f"{path}, line {first + 1}: a quote opened on this line is never closed; it "
                f"would swallow the rows after it (line {n + 1} on): fix the quote by hand"
            )
    scan.torn_at, scan.torn_line, scan.torn_why = offsets[first], first + 1, why


def _repair_tail(fd: int, path: os.PathLike) -> bytes:
    """Cut a torn last record — exactly what :func:`read_results` drops — under the caller's
    lock; returns what must precede the next rows (a newline when the last record is complete
    but unterminated). Anything else malformed refuses the append (:class:`DataError`)."""
    raw = os.pread(fd, os.fstat(fd).st_size, 0)
    header_end = len(_HEADER_BYTES) + (len(_BOM) if raw.startswith(_BOM) else 0)
    if len(raw.rstrip(b"\r\n")) <= header_end:  # just the header
        return b"" if raw.endswith((b"\n", b"\r")) else b"\n"
    scan = _scan(raw, path)
    if scan.torn_at is not None:
        os.ftruncate(fd, scan.torn_at)
        return b""
    return b"\n" if scan.unterminated else b""


def append_rows(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """Append ``rows`` atomically with respect to other cladapt writers."""
    if not rows or is_sink(path):
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = rows_to_csv(rows, header=False).encode()  # a bad value fails before the file opens
    with locked(path) as fd:
        size = os.fstat(fd).st_size
        head = os.pread(fd, len(_BOM) + len(_HEADER_BYTES) + 2, 0) if size else b""
        empty = _is_empty(head) and _is_empty(os.pread(fd, size, 0))
        if size and not empty and _first_of(head) != _HEADER_BYTES:  # checked before any change
            raise _not_results(path)
        if empty:  # a new file, or one holding only a byte-order mark / blank lines
            os.ftruncate(fd, len(_BOM) if head.startswith(_BOM) else 0)
            data = (HEADER + "\n").encode() + body
        else:
            data = _repair_tail(fd, path) + body
        before = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
        except OSError as exc:  # e.g. ENOSPC or EFBIG before a single byte went out
            os.ftruncate(fd, before)
            raise _write_error(path, exc) from None
        if written != len(data):  # a short write: the disk or the file-size limit is full
            os.ftruncate(fd, before)
            raise CladaptError(
                f"could not write results to {path}: the disk or the file-size limit is full"
            )
        os.fsync(fd)


def move_aside(path: str | os.PathLike) -> Path | None:
    """Start ``path`` afresh without deleting anything: under the writers' lock, rename the old
    file to ``NAME.YYYYmmddTHHMMSS.bak`` beside it (returned). A run appending meanwhile waits
    for the lock, then writes to the new file."""
    path = Path(path)
    if is_sink(path) or not path.exists():
        return None
    with locked(path):
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        backup = path.with_name(f"{path.name}.{stamp}.bak")
        n = 1
        while backup.exists():
            backup = path.with_name(f"{path.name}.{stamp}-{n}.bak")
            n += 1
        os.rename(path, backup)
    return backup


def _parse_value(text: str) -> float | None:
    """A cell of the ``value`` column: a finite number or ``nan``; anything else (``inf`` too,
    which would rank first or last) is not a valid value."""
    if text in ("", "nan", "NaN"):
        return float("nan")
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


_SEED = re.compile(r"[0-9]{1,10}")


def read_results(path: str | os.PathLike):
    """Load a results CSV as a pandas DataFrame (see the module docstring for what is checked;
    a torn last row is dropped with a :class:`ResultsWarning`)."""
    import pandas as pd

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read results file {path}: {exc.strerror or exc}") from None
    if _is_empty(raw):
        raise DataError(f"{path} is empty: not a cladapt results CSV")
    scan = _scan(raw, path)
    if scan.torn_at is not None:
        warnings.warn(
            f"{path}, line {scan.torn_line}: dropped a torn last row ({scan.torn_why})",
            ResultsWarning,
            stacklevel=2,
        )
    value_at, seed_at = COLUMNS.index("value"), COLUMNS.index("seed")
    rows = []
    for line, rec in zip(scan.lines, scan.records, strict=True):
        seed = rec[seed_at]
        if seed and not (_SEED.fullmatch(seed) and int(seed) <= SEED_MAX):
            raise DataError(
                f"{path}, line {line}: seed {seed[:40]!r} is not an integer in 0 .. 2^32-1 "
                "(not a valid results row)"
            )
        row: list[Any] = [
            c if i in (value_at, seed_at) else unescape_cell(c) for i, c in enumerate(rec)
        ]
        row[value_at] = _parse_value(rec[value_at])
        rows.append(row)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["value"] = df["value"].astype(float)
    seeds = pd.to_numeric(df["seed"], errors="coerce")
    df["seed"] = seeds.astype("int64") if not seeds.isna().any() else seeds.astype("Int64")
    return df
