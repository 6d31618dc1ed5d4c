"""Input readers: round trips through every format, chunking, per-row validation, detection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pyfacematch.errors import InputError
from pyfacematch.io import INPUT_FORMATS, RecordReader, detect_format, write_table


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
