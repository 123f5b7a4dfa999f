"""Tidy result rows and crash-safe CSV appends.

One schema for every protocol: one metric value per row (see ``COLUMNS``). ``row_type`` is
``eval`` (a metric of one evaluation), ``summary`` (headline metrics and cost of a finished run)
or ``error`` (the run failed or was interrupted; ``note`` says why). A run with neither a summary
nor an error row was killed outright (SIGKILL, power loss): readers call it *incomplete*.

Writing. Appends take an exclusive file lock and write all rows of one group with a single
``write`` call, so concurrent runs never interleave rows. Before anything is modified the file's
first line must be the results header: a file that is not a cladapt results CSV is never touched.
A previous writer killed mid-write could leave a torn last record; the next append, under the
lock, cuts exactly that record (records are found by CSV quoting, since notes may span lines) and
nothing before it. A complete last record that merely lacks its final newline is kept.

Reading. :func:`read_results` checks the header and every record's field count; a short or
unparseable *last* record is a torn write and is dropped with a warning, anything malformed
before it is a one-line :class:`DataError` naming the line.

Text cells that a spreadsheet would run as a formula (starting with ``= + - @``, a tab or a
carriage return) are written with a leading ``'`` (OWASP's advice for CSV injection); a cell that
itself starts with ``'`` gets one more, so :func:`read_results` restores every value exactly.
"""

from __future__ import annotations

import csv
import io
import math
import mmap
import os
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

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
NUMERIC_COLUMNS = ("seed", "value")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


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


def _format_value(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    return repr(float(value))


def escape_cell(value: Any) -> Any:
    """Neutralise a text cell a spreadsheet would evaluate (reversible, see the module doc)."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def unescape_cell(value: str) -> str:
    return value[1:] if value.startswith("'") else value


def rows_to_csv(rows: Iterable[dict[str, Any]], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", extrasaction="raise")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: (_format_value(v) if k == "value" else v if k == "seed" else escape_cell(v))
                for k, v in row.items()
            }
        )
    return buf.getvalue()


def is_sink(path: str | os.PathLike) -> bool:
    """``/dev/null`` (or the platform's null device): rows are discarded, nothing is created."""
    return os.path.realpath(path) == os.path.realpath(os.devnull)


def _first_line(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(len(_HEADER_BYTES) + 2).split(b"\n", 1)[0].rstrip(b"\r")


def check_results_path(path: str | os.PathLike) -> None:
    """Fail at once, before any work, if ``path`` cannot take cladapt result rows: it exists but
    is not a results CSV, is not a regular file, or its folder is not writable."""
    path = Path(path)
    if is_sink(path):
        return
    if path.exists():
        if not path.is_file():
            raise DataError(f"{path} is not a regular file; pass --out FILE.csv")
        if path.stat().st_size and _first_line(path) != _HEADER_BYTES:
            raise DataError(
                f"{path} is not a cladapt results CSV (its first line is not the results "
                "header); it was left untouched: pass another --out"
            )
        if not os.access(path, os.W_OK):
            raise DataError(f"{path} is not writable")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"cannot create {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"cannot write results to {path}: the folder {parent} is not writable")
    _probe_writable(path)


def _probe_writable(path: Path) -> None:
    """A real write test: ``os.access`` says yes to root even on a read-only mount."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = str(path) + ".lock"
    try:
        FileLock(lock).acquire(timeout=60).lock.release()
    except OSError as exc:
        raise DataError(f"cannot write results to {path}: {exc.strerror or exc}") from None


def _record_ends(data: mmap.mmap | bytes, start: int) -> tuple[int, int]:
    """(offset just past the last complete record's newline, quote parity of the whole file).

    A newline ends a record iff an even number of quote characters precedes it; quoted notes
    may contain newlines. Only records after ``start`` (the header's end) are considered."""
    size = len(data)
    quotes = 0
    for lo in range(0, size, 1 << 24):
        quotes += data[lo : lo + (1 << 24)].count(b'"')
    end, after = size, 0
    while True:
        nl = data.rfind(b"\n", start, end)
        if nl < 0:
            return start, quotes % 2
        after += data[nl + 1 : end].count(b'"')
        if (quotes - after) % 2 == 0:
            return nl + 1, quotes % 2
        end = nl


def _complete_record(tail: bytes) -> bool:
    """A tail without its final newline is complete iff it is exactly one well-formed row."""
    try:
        records = list(csv.reader(io.StringIO(tail.decode("utf-8")), strict=True))
    except (UnicodeDecodeError, csv.Error):
        return False
    if len(records) != 1 or len(records[0]) != len(COLUMNS):
        return False
    return _parse_value(records[0][COLUMNS.index("value")]) is not None


def _repair_tail(fd: int) -> bytes:
    """Cut a torn last record (the caller holds the lock); returns what must precede the next
    rows (a newline when the last record is complete but unterminated)."""
    size = os.fstat(fd).st_size
    header_end = len(_HEADER_BYTES)
    if size <= header_end:  # just the header, without its newline
        return b"\n" if size == header_end else b""
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as data:
        boundary, odd = _record_ends(data, header_end)
        tail = bytes(data[boundary:size])
    if not tail:
        return b""
    if not odd and _complete_record(tail):
        return b"\n"
    os.ftruncate(fd, max(boundary, header_end + 1))
    return b""


def append_rows(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """Append ``rows`` atomically with respect to other cladapt writers."""
    if not rows or is_sink(path):
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size:  # validate before anything is modified
                os.lseek(fd, 0, os.SEEK_SET)
                first = os.read(fd, len(_HEADER_BYTES) + 2).split(b"\n", 1)[0].rstrip(b"\r")
                if first != _HEADER_BYTES:
                    raise DataError(
                        f"{path} is not a cladapt results CSV (its first line is not the "
                        "results header); it was left untouched: pass another --out"
                    )
            prefix = _repair_tail(fd) if size else b""
            data = prefix + rows_to_csv(rows, header=not size).encode()
            os.lseek(fd, 0, os.SEEK_END)
            before = os.fstat(fd).st_size
            try:
                written = os.write(fd, data)
            except OSError as exc:  # e.g. ENOSPC before a single byte went out
                os.ftruncate(fd, before)
                raise CladaptError(f"could not write results to {path}: {exc.strerror}") from None
            if written != len(data):  # regular files do not short-write unless the disk is full
                os.ftruncate(fd, before)
                raise CladaptError(f"could not write results to {path} (disk full?)")
            os.fsync(fd)
        finally:
            os.close(fd)


def _parse_value(text: str) -> float | None:
    if text in ("", "nan", "NaN"):
        return float("nan")
    try:
        return float(text)
    except ValueError:
        return None


def read_results(path: str | os.PathLike):
    """Load a results CSV as a pandas DataFrame (see the module docstring for what is checked;
    a torn last row is dropped with a :class:`ResultsWarning`)."""
    import pandas as pd

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read results file {path}: {exc.strerror or exc}") from None
    if not raw.strip():
        raise DataError(f"{path} is empty: not a cladapt results CSV")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}, line {line}: not UTF-8 text (not a cladapt results CSV)"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV header ({exc})") from None
    if tuple(header) != COLUMNS:
        raise DataError(f"{path} is not a cladapt results CSV (its columns differ)")
    records: list[list[str]] = []
    starts: list[int] = []
    try:
        while True:
            starts.append(reader.line_num + 1)
            try:
                records.append(next(reader))
            except StopIteration:
                starts.pop()
                break
    except csv.Error as exc:
        if _only_tail_left(reader):
            warnings.warn(f"{path}: dropped a torn last row ({exc})", ResultsWarning, stacklevel=2)
            starts.pop()
        else:
            raise DataError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from None
    rows = []
    value_at, seed_at = COLUMNS.index("value"), COLUMNS.index("seed")
    for n, (line, rec) in enumerate(zip(starts, records, strict=True)):
        last = n == len(records) - 1
        value = _parse_value(rec[value_at]) if len(rec) == len(COLUMNS) else None
        if len(rec) != len(COLUMNS) or value is None:
            if last and len(rec) <= len(COLUMNS):
                warnings.warn(
                    f"{path}, line {line}: dropped a torn last row ({len(rec)} of "
                    f"{len(COLUMNS)} fields)",
                    ResultsWarning,
                    stacklevel=2,
                )
                continue
            what = (
                f"{len(rec)} fields, expected {len(COLUMNS)}"
                if len(rec) != len(COLUMNS)
                else f"value {rec[value_at]!r} is not a number"
            )
            raise DataError(f"{path}, line {line}: {what} (not a valid results row)")
        row = [c if i in (value_at, seed_at) else unescape_cell(c) for i, c in enumerate(rec)]
        row[value_at] = value
        rows.append(row)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["value"] = df["value"].astype(float)
    seeds = pd.to_numeric(df["seed"], errors="coerce")
    bad = seeds.isna() & (df["seed"] != "")
    if bad.any():
        raise DataError(
            f"{path}: seed {df['seed'][bad].iloc[0]!r} is not an integer (not a valid results row)"
        )
    df["seed"] = seeds.astype("int64") if not seeds.isna().any() else seeds.astype("Int64")
    return df


def _only_tail_left(reader) -> bool:
    """After a CSV error: True if the error is in the file's last record (a torn write)."""
    try:
        for _ in reader:
            return False
    except csv.Error:
        return False
    return True
