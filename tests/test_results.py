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


# ---------------------------------------------------------------- what the writer writes, the
# reader reads (reliability round 4: R1, R2, R15, R29, R33, R38)


def test_a_cell_longer_than_the_csv_limit_is_refused_before_anything_is_written(out):
    append_rows(out, [_row(1)])
    before = out.read_bytes()
    big = _row(2)
    big["params_json"] = "x" * (csv.field_size_limit() + 1)
    with pytest.raises(CladaptError, match="over the 131,072 a CSV cell may hold"):
        append_rows(out, [big])
    assert out.read_bytes() == before
    append_rows(out, [_row(3)])  # and the file still takes rows
    assert list(read_results(out)["value"]) == [1.0, 3.0]


def test_a_long_last_cell_already_in_a_file_is_read_never_cut_as_torn(out):
    """An older file may hold a cell over csv's default limit: it is a row, not a torn write."""
    from cladapt.results import rows_to_csv

    append_rows(out, [_row(1)])
    long_row = _row(2)
    long_row["note"] = "n" * 140_000
    # written as an older version of the writer would have (no size check)
    with open(out, "a", newline="") as f:
        csv.writer(f, lineterminator="\n").writerow([long_row[c] for c in COLUMNS])
    assert rows_to_csv  # the module's writer is not used for that row
    append_rows(out, [_row(3)])
    df = read_results(out)
    assert list(df["value"]) == [1.0, 2.0, 3.0]
    assert len(df.note.iloc[1]) == 140_000


@pytest.mark.parametrize("text", ["openai\r", "bad\rthing", "a\u2028b", "x\x85y", "f\x0cg"])
def test_a_bare_carriage_return_or_line_separator_in_a_cell_round_trips(out, text):
    row = _row(2)
    row["model"], row["note"] = text, text
    append_rows(out, [_row(1), row])
    append_rows(out, [_row(3)])  # the next append neither cuts nor refuses
    df = read_results(out)
    assert list(df["value"]) == [1.0, 2.0, 3.0]
    assert df.model.iloc[1] == text and df.note.iloc[1] == text


def test_a_file_holding_only_a_byte_order_mark_takes_rows(out):
    from cladapt.results import check_results_path

    out.write_bytes(b"\xef\xbb\xbf")  # PowerShell's Out-File -Encoding utf8 of nothing
    check_results_path(out)
    append_rows(out, [_row(1)])
    assert list(read_results(out)["value"]) == [1.0]


@pytest.mark.parametrize("seed", ["-5", "99999999999999999999", "4294967296"])
def test_a_seed_outside_the_seed_range_is_a_malformed_row(out, seed):
    from cladapt.errors import DataError

    row = _row(1)
    row["seed"] = seed
    append_rows(out, [row, _row(2)])
    with pytest.raises(DataError, match="seed .* is not an integer in 0 .. 2\\^32-1"):
        read_results(out)


def test_a_malformed_middle_row_refuses_the_run_before_any_work(out):
    from cladapt.errors import DataError
    from cladapt.results import check_results_path

    append_rows(out, [_row(1), _row(2), _row(3)])
    lines = out.read_text().split("\n")
    lines[2] = lines[2] + ",extra"  # row 1 now has 18 fields; later rows are fine
    out.write_text("\n".join(lines))
    with pytest.raises(DataError, match="line 2: 18 fields"):
        check_results_path(out)


def test_results_path_faults_are_one_line_errors_before_the_run(tmp_path):
    from cladapt.errors import DataError
    from cladapt.results import check_results_path

    dangling = tmp_path / "dang.csv"
    dangling.symlink_to(tmp_path / "missing" / "x.csv")
    with pytest.raises(DataError, match="symlink to a file that does not exist"):
        check_results_path(dangling)
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    with pytest.raises(DataError, match="symlink"):
        check_results_path(loop)
    with pytest.raises(DataError, match="cannot use .* as the results file"):
        check_results_path(tmp_path / ("n" * 300 + ".csv"))


def test_a_results_file_replaced_by_a_folder_or_a_fifo_mid_run_is_a_one_line_error(out):
    import os

    append_rows(out, [_row(1)])
    out.unlink()
    out.mkdir()
    with pytest.raises(CladaptError, match="could not write results to .*: it is a folder now"):
        append_rows(out, [_row(2)])
    out.rmdir()
    os.mkfifo(out)
    with pytest.raises(CladaptError, match="no longer a regular file"):
        append_rows(out, [_row(2)])


def test_the_file_size_limit_is_named_as_such(out):
    import resource
    import subprocess
    import sys

    append_rows(out, [_row(1)])
    size = out.stat().st_size
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({size + 10}, {size + 10}))\n"
        "import signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_results import _row\n"
        "from cladapt.results import append_rows\n"
        f"append_rows({str(out)!r}, [_row(2)] * 5)\n"
    )
    assert resource  # the limit is set in the child process only
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "file-size limit" in done.stderr
    assert list(read_results(out)["value"]) == [1.0]  # nothing half-written
