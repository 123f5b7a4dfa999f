"""Tidy result rows and crash-safe CSV appends.

One schema for every protocol: one metric value per row (see ``COLUMNS``). ``row_type`` is
``eval`` (a metric of one evaluation), ``summary`` (headline metrics and cost of a finished run)
or ``error`` (the run failed or was interrupted; ``note`` says why).

Appends take an exclusive file lock and write all rows of one group with a single ``write``
call, so concurrent runs never interleave rows. A previous writer killed mid-write could leave a
partial last line: the next append, under the lock, cuts it back to the last complete row.
"""

from __future__ import annotations

import csv
import io
import math
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from cladapt.errors import CladaptError

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


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _format_value(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    return repr(float(value))


def rows_to_csv(rows: Iterable[dict[str, Any]], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", extrasaction="raise")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: (_format_value(v) if k == "value" else v) for k, v in row.items()})
    return buf.getvalue()


def _heal_torn_tail(fd: int) -> None:
    """Cut a partial last line left by a writer that died mid-write (caller holds the lock)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    os.lseek(fd, size - 1, os.SEEK_SET)
    if os.read(fd, 1) == b"\n":
        return
    chunk = min(size, 1 << 20)
    os.lseek(fd, size - chunk, os.SEEK_SET)
    tail = os.read(fd, chunk)
    cut = tail.rfind(b"\n")
    os.ftruncate(fd, (size - chunk + cut + 1) if cut >= 0 else 0)


def _check_header(fd: int, path: Path) -> bool:
    """True if the file is empty (a header is needed); error if it has a foreign header."""
    if os.fstat(fd).st_size == 0:
        return True
    os.lseek(fd, 0, os.SEEK_SET)
    first = os.read(fd, 4096).split(b"\n", 1)[0].decode("utf-8", "replace")
    if first != ",".join(COLUMNS):
        raise CladaptError(
            f"{path} is not a cladapt results file of this version (header differs); use --out"
        )
    return False


def append_rows(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """Append ``rows`` atomically with respect to other cladapt writers."""
    if not rows:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _heal_torn_tail(fd)
            data = rows_to_csv(rows, header=_check_header(fd, path)).encode()
            os.lseek(fd, 0, os.SEEK_END)
            written = os.write(fd, data)
            if written != len(data):  # regular files do not short-write unless the disk is full
                os.ftruncate(fd, os.fstat(fd).st_size - written)
                raise CladaptError(f"could not write results to {path} (disk full?)")
            os.fsync(fd)
        finally:
            os.close(fd)


def read_results(path: str | os.PathLike):
    """Load a results CSV as a pandas DataFrame."""
    import pandas as pd

    return pd.read_csv(
        path,
        dtype={"trained_upto": str, "eval_experience": str, "note": str},
        keep_default_na=False,
        na_values={"value": ["nan"]},
    )
