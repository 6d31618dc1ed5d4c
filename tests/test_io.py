"""Readers and writers of the CLI: round trips, chunking, per-row validation, result tables."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pyfacematch.errors import InputError
from pyfacematch.io import (
    INPUT_FORMATS,
    RecordReader,
    ResultColumns,
    concat_parts,
    detect_format,
    write_rejects,
    write_results_part,
    write_table,
)
from pyfacematch.jobs import result_columns


def _templates(rng: np.random.Generator, n: int = 23, d: int = 16) -> np.ndarray:
    return rng.standard_normal((n, d)).astype(np.float32)


def _read_all(reader: RecordReader) -> tuple[list[str], np.ndarray, list]:
    ids: list[str] = []
    vals = []
    rejects = []
    for c in reader.chunks():
        ids += c.ids
        vals.append(c.values)
        rejects += c.rejects
    return ids, np.concatenate(vals), rejects


@pytest.mark.parametrize("fmt", INPUT_FORMATS)
def test_round_trip_every_format(tmp_path, rng, fmt):
    t = _templates(rng)
    ids = [f"p{i}" for i in range(len(t))]
    path = tmp_path / f"x.{fmt}"
    write_table(path, fmt, ids, t)
    with RecordReader(path, chunk_size=5) as r:
        got_ids, got, rejects = _read_all(r)
    assert rejects == []
    np.testing.assert_array_equal(got, t)  # float32 survives every format exactly
    assert got_ids == ([str(i) for i in range(len(t))] if fmt == "npy" else ids)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl", "npy"])
def test_chunks_have_fixed_boundaries_and_skip(tmp_path, rng, fmt):
    t = _templates(rng, n=20)
    path = tmp_path / f"x.{fmt}"
    if fmt == "parquet":  # several small row groups: chunks must cross them
        import pyarrow as pa
        import pyarrow.parquet as pq

        tbl = pa.table(
            {
                "id": [f"p{i}" for i in range(20)],
                "template": pa.FixedSizeListArray.from_arrays(pa.array(t.ravel()), 16),
            }
        )
        pq.write_table(tbl, path, row_group_size=3)
    else:
        write_table(path, fmt, [f"p{i}" for i in range(20)], t)
    r = RecordReader(path, chunk_size=7)
    chunks = list(r.chunks())
    assert [(c.index, c.start, c.count) for c in chunks] == [(0, 0, 7), (1, 7, 7), (2, 14, 6)]
    assert [int(x) for x in chunks[1].rows] == list(range(8, 15))
    r2 = RecordReader(path, chunk_size=7)
    rest = list(r2.chunks(skip_chunks=1))
    assert [c.index for c in rest] == [1, 2]
    np.testing.assert_array_equal(rest[0].values, t[7:14])
    np.testing.assert_array_equal(rest[1].values, t[14:])


def _bad_csv(path, d: int = 4) -> None:
    head = "id," + ",".join(f"f{j}" for j in range(d))
    rows = [
        "a,1,2,3,4",
        "b,1,2,3",  # short row
        "c,1,x,3,4",  # not a number
        "d,1,nan,3,4",  # NaN
        "e,0,0,0,0",  # zero vector
        ",1,2,3,4",  # missing id
        "",  # blank line: not a record
        "g,5,6,7,8",
    ]
    path.write_text(head + "\n" + "\n".join(rows) + "\n")


def test_bad_rows_stop_naming_file_and_row(tmp_path):
    p = tmp_path / "probes.csv"
    _bad_csv(p)
    r = RecordReader(p, dim=4, chunk_size=100)
    with pytest.raises(InputError) as ei:
        list(r.chunks())
    msg = str(ei.value)
    assert "probes.csv row 2 (line 3)" in msg and "expected 5 fields" in msg
    assert "--on-error skip" in msg


def test_bad_rows_skip_to_rejects_with_reasons(tmp_path):
    p = tmp_path / "probes.csv"
    _bad_csv(p)
    r = RecordReader(p, dim=4, chunk_size=3, on_error="skip")
    ids, vals, rejects = _read_all(r)
    assert ids == ["a", "g"]
    np.testing.assert_array_equal(vals, [[1, 2, 3, 4], [5, 6, 7, 8]])
    got = [(x.row, x.line, x.id, x.kind) for x in rejects]
    assert got == [
        (2, 3, "b", "malformed row"),
        (3, 4, "c", "malformed number"),
        (4, 5, "d", "non-finite value"),
        (5, 6, "e", "zero template"),
        (6, 7, None, "missing id"),
    ]


def test_wrong_dimension_and_nan_in_binary_formats(tmp_path, rng):
    t = _templates(rng, n=6, d=8)
    t[2, 3] = np.nan
    write_table(tmp_path / "x.parquet", "parquet", [f"p{i}" for i in range(6)], t)
    r = RecordReader(tmp_path / "x.parquet", dim=8, on_error="skip")
    ids, _, rejects = _read_all(r)
    assert ids == ["p0", "p1", "p3", "p4", "p5"]
    assert [(x.row, x.kind) for x in rejects] == [(3, "non-finite value")]
    r = RecordReader(tmp_path / "x.parquet", dim=9, on_error="skip")
    ids, _, rejects = _read_all(r)
    assert ids == [] and len(rejects) == 6
    assert rejects[0].reason.startswith("wrong dimension: expected 9 numbers, got 8")


def test_jsonl_malformed_and_variable_length(tmp_path):
    p = tmp_path / "p.jsonl"
    lines = [
        json.dumps({"id": "a", "template": [1, 2, 3]}),
        "{not json",
        json.dumps({"id": "b", "template": [1, 2]}),
        json.dumps({"id": 7, "template": [0, 0, 1], "claim": "x"}),
        json.dumps(["a list"]),
        json.dumps({"id": "c"}),
    ]
    p.write_text("\n".join(lines) + "\n")
    r = RecordReader(p, on_error="skip", fields=("claim",))
    chunks = list(r.chunks())
    c = chunks[0]
    assert c.ids == ["a", "7"] and c.fields["claim"] == [None, "x"]
    assert [(x.row, x.kind) for x in c.rejects] == [
        (2, "malformed JSON"),
        (3, "wrong dimension"),
        (5, "malformed JSON"),
        (6, "missing template"),
    ]


def test_masks_validated_against_blocks(tmp_path, rng):
    t = _templates(rng, n=4, d=6)
    masks = np.array([3, 0, 8, 1], np.uint64)  # 2 blocks: 0 and 8 are invalid
    write_table(tmp_path / "m.jsonl", "jsonl", ["a", "b", "c", "d"], t, masks=masks)
    r = RecordReader(tmp_path / "m.jsonl", n_blocks=2, on_error="skip")
    (c,) = list(r.chunks())
    assert c.ids == ["a", "d"] and c.masks.tolist() == [3, 1]
    assert [x.reason for x in c.rejects] == [
        "bad mask: no valid block (mask 0)",
        "bad mask: bits beyond the 2 region blocks",
    ]


def test_landmarks_reader_and_visibility(tmp_path, rng):
    lm = rng.standard_normal((3, 5, 2)).astype(np.float32)
    recs = [
        {"id": "a", "landmarks": lm[0].tolist()},
        {"id": "b", "landmarks": lm[1].tolist(), "visibility": [1, 1, 0, 1, 1]},
        {"id": "c", "landmarks": lm[2].tolist()[:4]},
    ]
    p = tmp_path / "l.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in recs))
    r = RecordReader(p, "landmarks", points=5, on_error="skip")
    (c,) = list(r.chunks())
    assert c.values.shape == (2, 5, 2)
    np.testing.assert_array_equal(c.values, lm[:2])
    assert c.visibility.tolist() == [[True] * 5, [True, True, False, True, True]]
    assert c.rejects[0].kind == "wrong landmark count"


def test_detect_format():
    assert detect_format("a.PARQUET") == "parquet"
    assert detect_format("a.ndjson") == "jsonl"
    with pytest.raises(InputError, match="--input-format"):
        detect_format("-")
    with pytest.raises(InputError, match="cannot tell the format"):
        detect_format("a.txt")
    with pytest.raises(InputError):
        detect_format("a.npy", output=True)


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
    from pyfacematch.io import Reject

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
