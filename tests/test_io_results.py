"""Result tables, rejects files and exports: formats, formula escaping, owner-only modes."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from pyfacematch.io import (
    INPUT_FORMATS,
    Reject,
    ResultColumns,
    concat_parts,
    read_results,
    write_rejects,
    write_results_part,
    write_table,
)
from pyfacematch.jobs import result_columns


def test_result_columns_decisions_and_empty_probe():
    ident = np.array([["x", "y"], [None, None], ["z", None]], object)
    scores = np.array([[0.9, 0.5], [np.nan, np.nan], [0.6, np.nan]], np.float32)
    cols = result_columns(["p", "q", "r"], ident, scores, 0.6)
    assert cols.probe_id == ["p", "p", "q", "r"]
    assert cols.rank.tolist() == [1, 2, 0, 1]
    assert cols.identity == ["x", "y", None, "z"]
    assert cols.decision == ["match", "no-match", "no-match", "match"]  # 0.6 >= 0.6
    assert np.isnan(cols.score[2])
    assert result_columns(["p"], ident[:1], scores[:1], None).decision == [None, None]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_parts_concatenate_to_one_table(tmp_path, fmt):
    import pyarrow as pa

    parts = []
    for i in range(3):
        cols = ResultColumns(
            [f"p{i}", f'q,"{i}'],
            np.array([1, 0], np.int32),
            [f"id{i}", None],
            np.array([0.5 + i / 10, np.nan], np.float32),
            ["match", None],
        )
        parts.append(tmp_path / f"part-{i}.{fmt}")
        write_results_part(parts[-1], fmt, cols)
    out = tmp_path / f"out.{fmt}"
    concat_parts(parts, out, fmt)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(out)
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        t = pcsv.read_csv(
            out,
            convert_options=pcsv.ConvertOptions(
                column_types={"probe_id": pa.string(), "identity": pa.string()},
                strings_can_be_null=True,
            ),
        )
    else:
        import pyarrow.json as pj

        t = pj.read_json(out)
    assert t.column("probe_id").to_pylist() == ["p0", 'q,"0', "p1", 'q,"1', "p2", 'q,"2']
    assert t.column("rank").to_pylist() == [1, 0] * 3
    assert t.column("identity").to_pylist() == ["id0", None, "id1", None, "id2", None]
    s = t.column("score").to_pylist()
    assert s[1::2] == [None] * 3
    np.testing.assert_allclose(s[0::2], [0.5, 0.6, 0.7], rtol=1e-6)


def test_rejects_file_formats(tmp_path):
    rej = [Reject(3, 4, "a,b", "malformed row: x"), Reject(9, None, None, "zero template: y")]
    write_rejects(tmp_path / "r.csv", rej)
    assert (tmp_path / "r.csv").read_text().splitlines() == [
        "row,line,id,reason",
        '3,4,"a,b",malformed row: x',
        "9,,,zero template: y",
    ]
    write_rejects(tmp_path / "r.jsonl", rej)
    recs = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert recs[1] == {"row": 9, "line": None, "id": None, "reason": "zero template: y"}


class _Tty:
    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.text = ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


def test_progress_bar_on_terminal_and_lines_otherwise():
    from pyfacematch.jobs import Progress

    tty = _Tty(True)
    p = Progress(100, "identify", stream=tty)
    p.update(40)
    p.close()
    assert "identify:  40%" in tty.text and "/100 [" in tty.text and "probes/s" in tty.text
    plain = _Tty(False)
    p = Progress(100, "identify", stream=plain, interval=0.0)
    p.update(40)
    p.close()
    first = plain.text.splitlines()[0]
    assert first.startswith("identify: 40/100 probes (40.0%)") and "ETA" in first
    quiet = _Tty(True)
    p = Progress(100, "identify", stream=quiet, quiet=True)
    p.update(40)
    p.close()
    assert quiet.text == ""


HOSTILE_IDS = ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\tTAB", "\rCR", "'quoted", "plain", "a,=b"]


def test_result_csv_ids_are_escaped_against_formulas_and_read_back_exactly(tmp_path):
    """Regression: ids starting with = + - @ tab CR were written as they came (CSV injection)."""
    n = len(HOSTILE_IDS)
    cols = ResultColumns(
        HOSTILE_IDS,
        np.ones(n, np.int32),
        list(reversed(HOSTILE_IDS)),
        np.full(n, -0.25, np.float32),  # a negative score is a number, never escaped
        ["no-match"] * n,
    )
    write_results_part(tmp_path / "part.csv", "csv", cols)
    concat_parts([tmp_path / "part.csv"], tmp_path / "out.csv", "csv")
    import csv

    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))[1:]
    for row in rows:  # no text cell may start a formula
        for cell in (row[0], row[2]):
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
        assert row[3] == "-0.250000"
    assert rows[0][0] == "'=1+2" and rows[7][0] == "plain" and rows[6][0] == "''quoted"
    for path in (tmp_path / "out.csv", tmp_path / "part.csv"):
        back = read_results(path)
        assert back.probe_id == HOSTILE_IDS and back.identity == list(reversed(HOSTILE_IDS))
        np.testing.assert_array_equal(back.score, cols.score)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_other_result_formats_keep_ids_verbatim(tmp_path, fmt):
    n = len(HOSTILE_IDS)
    cols = ResultColumns(
        HOSTILE_IDS, np.arange(n, dtype=np.int32), [None] * n, np.full(n, np.nan, np.float32),
        [None] * n,
    )  # fmt: skip
    write_results_part(tmp_path / f"r.{fmt}", fmt, cols)
    back = read_results(tmp_path / f"r.{fmt}")
    assert back.probe_id == HOSTILE_IDS and back.identity == [None] * n
    assert back.rank.tolist() == list(range(n)) and np.isnan(back.score).all()


def test_rejects_csv_cells_are_escaped(tmp_path):
    write_rejects(tmp_path / "r.csv", [Reject(1, 2, "=HYPERLINK(x)", "malformed row: y")])
    assert (tmp_path / "r.csv").read_text().splitlines()[1] == "1,2,'=HYPERLINK(x),malformed row: y"


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_written_files_are_owner_only_whatever_the_umask(tmp_path, umask):
    """Regression: results, parts, rejects and exports were created 0644 under umask 022."""
    cols = ResultColumns(["p"], np.ones(1, np.int32), ["x"], np.ones(1, np.float32), [None])
    old = os.umask(umask)
    try:
        files = []
        for fmt in ("csv", "jsonl", "parquet"):
            write_results_part(tmp_path / f"part.{fmt}", fmt, cols)
            concat_parts([tmp_path / f"part.{fmt}"], tmp_path / f"out.{fmt}", fmt)
            files += [tmp_path / f"part.{fmt}", tmp_path / f"out.{fmt}"]
        write_rejects(tmp_path / "rej.csv", [Reject(1, None, "a", "zero template: x")])
        files.append(tmp_path / "rej.csv")
        for fmt in INPUT_FORMATS:
            write_table(tmp_path / f"x.{fmt}", fmt, ["a"], np.ones((1, 3), np.float32))
            files.append(tmp_path / f"x.{fmt}")
        # a stale temporary file with loose permissions does not leak its mode either
        stale = tmp_path / f"again.csv.tmp-{os.getpid()}"
        stale.write_text("old")
        os.chmod(stale, 0o666)
        write_results_part(tmp_path / "again.csv", "csv", cols)
        files.append(tmp_path / "again.csv")
    finally:
        os.umask(old)
    for f in files:
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
