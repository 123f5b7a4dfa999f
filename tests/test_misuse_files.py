"""A results file under misuse: hand edits, several paths to one file, concurrent writers, torn
and foreign encodings. Each test reproduces one way a file used to lose or gain rows."""

from __future__ import annotations

import multiprocessing as mp
import os
import warnings

import pytest
from click.testing import CliRunner

from cladapt.cli import main
from cladapt.errors import CladaptError, DataError
from cladapt.results import COLUMNS, ResultsWarning, append_rows, move_aside, read_results


def _rows(run: str, n: int = 1, value: float = 1.0, seed: int | str = 0) -> list[dict]:
    row = {c: "" for c in COLUMNS}
    row.update(run_id=run, stream="s", strategy="a", seed=seed, row_type="summary")
    return [dict(row, metric=f"m{i}", value=value + i) for i in range(n)]


def test_a_stray_quote_in_a_hand_edited_cell_never_cuts_later_rows(out):
    append_rows(out, _rows("r", 30))
    lines = out.read_bytes().split(b"\n")
    lines[5] = lines[5].replace(b",s,", b',laptop 15",', 1)  # as `sed -i` would
    out.write_bytes(b"\n".join(lines))
    before = out.read_bytes()
    append_rows(out, _rows("next"))
    assert out.read_bytes().startswith(before)
    df = read_results(out)
    assert len(df) == 31 and (df.stream == 'laptop 15"').sum() == 1


def test_an_opening_quote_that_swallows_later_rows_refuses_the_append(out):
    append_rows(out, _rows("r", 10))
    lines = out.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b",s,", b',"laptop,', 1)  # opens a quoted cell never closed
    out.write_bytes(b"\n".join(lines))
    before = out.read_bytes()
    with pytest.raises(DataError, match="line 4: a quote opened on this line is never closed"):
        append_rows(out, _rows("next"))
    assert out.read_bytes() == before
    with pytest.raises(DataError, match="line 4"):
        read_results(out)  # the reader agrees: not a torn tail


def test_a_genuinely_torn_multiline_note_is_still_cut(out):
    append_rows(out, _rows("r", 2))
    with open(out, "ab") as f:
        f.write(b'r9,t,0.1,s,p,c,a,{},m,0,cpu,error,,,run_failed,nan,"line one\nline two')
    append_rows(out, _rows("next"))
    assert list(read_results(out).run_id) == ["r", "r", "next"]


def _writer(path: str, worker: int, n: int) -> None:
    for i in range(n):
        append_rows(path, _rows(f"w{worker}", value=i))


def test_every_path_to_one_file_takes_the_same_lock(tmp_path):
    real = tmp_path / "results.csv"
    append_rows(real, _rows("seed"))
    (tmp_path / "link.csv").symlink_to(real)
    os.link(real, tmp_path / "hard.csv")
    paths = [str(real.resolve()), str(tmp_path / "link.csv"), str(tmp_path / "hard.csv")]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(p, w, 300)) for w, p in enumerate(paths)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    df = read_results(real)
    for w in range(3):
        assert sorted(df[df.run_id == f"w{w}"].value) == [float(i) for i in range(300)]


def test_moving_a_results_file_aside_waits_for_writers_and_deletes_nothing(out):
    append_rows(out, _rows("old", 3))
    backup = move_aside(out)
    assert not out.exists() and len(read_results(backup)) == 3
    append_rows(out, _rows("new"))  # a writer that comes later gets the new file
    assert list(read_results(out).run_id) == ["new"]
    assert move_aside(out).name != backup.name  # two backups in one second never collide


def test_bench_keeps_the_previous_results_file(tmp_path):
    out = tmp_path / "r.csv"
    append_rows(out, _rows("earlier"))
    res = CliRunner().invoke(
        main,
        ["bench", "--strategy", "source", "--stream", "digits-c", "--out", str(out)]
        + ["--site", str(tmp_path / "site"), "--workers", "1"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    backups = list(tmp_path.glob("r.csv.*.bak"))
    assert len(backups) == 1 and list(read_results(backups[0]).run_id) == ["earlier"]
    assert "earlier" not in set(read_results(out).run_id)


def test_bench_into_dev_null_fails_before_any_run():
    res = CliRunner().invoke(main, ["bench", "--out", os.devnull], catch_exceptions=False)
    assert res.exit_code == 2 and "keeps no rows" in res.output


@pytest.mark.parametrize("cell", ["-inf", "inf", "1e400"])
def test_infinite_values_are_never_read_as_results(out, cell):
    append_rows(out, _rows("r", 2))
    out.write_text(out.read_text().replace(",1.0,", f",{cell},", 1))
    with pytest.raises(DataError, match=f"line 2: value '{cell}' is not a number"):
        read_results(out)


def test_an_infinite_value_is_never_written(out):
    with pytest.raises(CladaptError, match="not a finite number"):
        append_rows(out, _rows("r", value=float("-inf")))
    assert not out.exists()


def test_a_fractional_seed_is_refused_not_truncated(out):
    append_rows(out, _rows("r", seed="1.5"))
    with pytest.raises(DataError, match="seed '1.5' is not an integer"):
        read_results(out)


def test_a_row_torn_inside_a_multibyte_character_is_dropped_not_fatal(out):
    append_rows(out, _rows("r"))
    row = _rows("cut")[0] | {"note": "température"}
    append_rows(out, [row])
    raw = out.read_bytes()
    out.write_bytes(raw[: raw.rindex("é".encode()) + 1])  # half of the two-byte é
    with pytest.warns(ResultsWarning, match="torn last row"):
        assert list(read_results(out).run_id) == ["r"]
    append_rows(out, _rows("next"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(read_results(out).run_id) == ["r", "next"]


def test_a_byte_order_mark_is_accepted_by_reader_and_writer(out):
    append_rows(out, _rows("r"))
    out.write_bytes(b"\xef\xbb\xbf" + out.read_bytes())  # saved by Excel as "CSV UTF-8"
    assert list(read_results(out).run_id) == ["r"]
    append_rows(out, _rows("next"))
    assert list(read_results(out).run_id) == ["r", "next"]


def test_a_carriage_return_only_file_is_read_and_appended_alike(out):
    append_rows(out, _rows("r", 2))
    out.write_bytes(out.read_bytes().replace(b"\n", b"\r"))  # classic Mac line ends
    assert len(read_results(out)) == 2
    append_rows(out, _rows("next"))
    assert list(read_results(out).run_id) == ["r", "r", "next"]
