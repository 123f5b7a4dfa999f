import csv
import multiprocessing as mp

import pytest

from cladapt.errors import CladaptError
from cladapt.results import COLUMNS, append_rows, read_results


def _row(i: int, run: str = "r") -> dict:
    row = {c: "" for c in COLUMNS}
    row.update(run_id=run, metric="m", value=float(i), note=f'a, "quoted"\nmultiline {i}')
    return row


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_header_written_once_and_rows_round_trip(out):
    append_rows(out, [_row(1), _row(2)])
    append_rows(out, [_row(3)])
    rows = _read(out)
    assert [float(r["value"]) for r in rows] == [1.0, 2.0, 3.0]
    assert rows[0]["note"] == 'a, "quoted"\nmultiline 1'
    assert out.read_text().count("run_id,started_at") == 1
    assert list(read_results(out)["value"]) == [1.0, 2.0, 3.0]


def test_torn_tail_from_a_dead_writer_is_cut(out):
    append_rows(out, [_row(1)])
    with open(out, "a") as f:
        f.write("r,2026,0.1,digits,contin")  # a writer killed mid-row
    append_rows(out, [_row(2)])
    assert [float(r["value"]) for r in _read(out)] == [1.0, 2.0]


def test_foreign_file_is_refused(out):
    out.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(CladaptError, match="not a cladapt results CSV"):
        append_rows(out, [_row(1)])


def _writer(path: str, worker: int, n: int) -> None:
    for i in range(n):
        append_rows(path, [_row(i, run=f"w{worker}"), _row(i + 1000, run=f"w{worker}")])


def test_concurrent_processes_lose_no_row(out):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(out), w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    rows = _read(out)
    assert len(rows) == 4 * 40 * 2
    for w in range(4):
        mine = [float(r["value"]) for r in rows if r["run_id"] == f"w{w}"]
        assert sorted(mine) == sorted(
            [float(i) for i in range(40)] + [float(i + 1000) for i in range(40)]
        )
