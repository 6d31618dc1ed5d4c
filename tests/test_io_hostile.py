"""Hostile input files are typed errors or rejects, never crashes or huge allocations (issue 12)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from pyfacematch.errors import InputError
from pyfacematch.io import RecordReader, write_table

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
from harness import zip_bomb  # noqa: E402


def _npy_claiming(shape: tuple[int, ...], rows: np.ndarray) -> bytes:
    """A float32 .npy whose header claims ``shape`` but which holds only ``rows``."""
    f = io.BytesIO()
    hdr = np.lib.format.header_data_from_array_1_0(rows.astype(np.float32))
    hdr["shape"] = shape
    np.lib.format.write_array_header_1_0(f, hdr)
    f.write(rows.astype(np.float32).tobytes())
    return f.getvalue()


def _read(path, **kw):
    with RecordReader(path, on_error="skip", **kw) as r:
        chunks = list(r.chunks())
    return [i for c in chunks for i in c.ids], [x for c in chunks for x in c.rejects]


def test_deeply_nested_jsonl_is_a_reject(tmp_path):
    """Regression: json.loads raised RecursionError, so identify exited 3."""
    p = tmp_path / "deep.jsonl"
    deep = "[" * 100_000 + "]" * 100_000
    p.write_text(
        json.dumps({"id": "a", "template": [1, 2]})
        + "\n"
        + '{"id": "b", "template": '
        + deep
        + "}\n"
        + json.dumps({"id": "c", "template": [3, 4]})
        + "\n"
    )
    ids, rejects = _read(p)
    assert ids == ["a", "c"]
    assert [(x.row, x.kind) for x in rejects] == [(2, "malformed JSON")]
    assert "nested too deeply" in rejects[0].reason


def test_jsonl_numbers_beyond_float_and_odd_fields_are_rejects(tmp_path):
    """Regression: an integer too large for a float raised OverflowError (exit 3)."""
    p = tmp_path / "big.jsonl"
    p.write_text(
        json.dumps({"id": "a", "template": [1, 10**400]})
        + "\n"
        + json.dumps({"id": "b", "landmarks": [[0, 0], [1, 1]], "visibility": [1, 10**400]})
        + "\n"
        + json.dumps({"id": "c", "template": [1, 2]})
        + "\n"
    )
    ids, rejects = _read(p)
    assert ids == ["c"]
    assert [(x.row, x.kind) for x in rejects] == [
        (1, "malformed template"),
        (2, "missing template"),
    ]
    ids, rejects = _read(p, kind="landmarks", points=2)
    assert ids == [] and [x.kind for x in rejects] == [
        "missing landmark",
        "bad visibility",
        "missing landmark",
    ]


def test_scalar_parquet_value_column_is_refused_at_open(tmp_path):
    """Regression: a float column 'template' hit ArrowNotImplementedError mid-read (exit 3)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "scalar.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "template": [1.0, 2.0]}), p)
    with pytest.raises(InputError, match="expected one list of numbers per record"):
        RecordReader(p)
    pq.write_table(pa.table({"id": ["a"], "template": [["x", "y"]]}), p)
    with pytest.raises(InputError, match="holds list<element: string>"):
        RecordReader(p)


@pytest.mark.parametrize("shape", [(10**12, 4), (2, 10**12), (2, 4, 10**9)])
def test_npy_header_claiming_a_huge_shape_is_refused_before_allocating(tmp_path, shape):
    """Regression: (2, 10**12) made numpy allocate 7 TiB (MemoryError, exit 3)."""
    p = tmp_path / "huge.npy"
    p.write_bytes(_npy_claiming(shape, np.ones((2, 4))))
    with pytest.raises(InputError, match="truncated or crafted"):
        RecordReader(p, "landmarks" if len(shape) == 3 else "templates", points=4)


def test_npy_stream_claiming_more_rows_than_it_holds(tmp_path):
    """A pipe cannot be measured: rows are read as they arrive and the shortfall is an error."""
    data = _npy_claiming((10**12, 4), np.ones((3, 4)))
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as fh:
            fh.write(data)

    t = threading.Thread(target=feed)
    t.start()
    fifo_path = f"/dev/fd/{r}"
    try:
        reader = RecordReader(fifo_path, fmt="npy", chunk_size=2, on_error="skip")
        chunks = reader.chunks()
        first = next(chunks)
        assert first.ids == ["0", "1"]
        with pytest.raises(InputError, match="the stream ends at row 4"):
            next(chunks)
    finally:
        t.join()
        os.close(r)


def test_npz_zip_bomb_input_is_refused(tmp_path):
    p = tmp_path / "bomb.npz"
    zip_bomb(p, "templates", (40_000, 512))
    with pytest.raises(InputError, match="likely zip bomb"):
        RecordReader(p)


def test_npz_with_objects_is_refused_without_unpickling(tmp_path):
    p = tmp_path / "o.npz"
    np.savez(p, templates=np.ones((2, 3), np.float32), ids=np.array(["a", None], object))
    with pytest.raises(InputError, match="pickles never are"):
        RecordReader(p)


def test_cli_exits_2_not_3_on_hostile_inputs(tmp_path, rng):
    """The reported exit 3 (internal error) of ``pyfacematch identify`` on each hostile file."""
    import pyfacematch as pf

    g = pf.Gallery.open(tmp_path / "g.db", dim=4)
    g.enroll_many(["x", "y"], rng.standard_normal((2, 4)).astype(np.float32))
    g.close()
    import pyarrow as pa
    import pyarrow.parquet as pq

    # a valid record too: a chunk of rejects only is another defect (jobs, issue 12 item 5)
    (tmp_path / "deep.jsonl").write_text(
        '{"id": "a", "template": ' + "[" * 50_000 + '}\n{"id": "b", "template": [1, 2, 3, 4]}\n'
    )
    pq.write_table(pa.table({"id": ["a"], "template": [1.0]}), tmp_path / "scalar.parquet")
    (tmp_path / "huge.npy").write_bytes(_npy_claiming((2, 10**12), np.ones((2, 4))))
    write_table(tmp_path / "ok.npy", "npy", ["a"], np.ones((1, 4), np.float32))
    env = dict(os.environ, PYTHONSAFEPATH="1")
    for name, want in (("deep.jsonl", 1), ("scalar.parquet", 2), ("huge.npy", 2), ("ok.npy", 0)):
        out = subprocess.run(
            [sys.executable, "-m", "pyfacematch", "identify", "-g", "g.db", "-i", name,
             "-o", f"{name}.csv", "--on-error", "skip", "--quiet"],
            cwd=tmp_path, capture_output=True, env=env, timeout=120,
        )  # fmt: skip
        assert out.returncode == want, (name, out.stderr.decode())


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_line_that_is_not_utf8_spoils_only_itself(tmp_path, fmt):
    """Regression (found by the fuzzer): text was decoded by 8 KB blocks, so one bad byte made
    a CSV header unreadable, and JSONL dropped every other record of the block silently or
    retried the same block forever."""
    p = tmp_path / f"bad.{fmt}"
    if fmt == "csv":
        p.write_bytes(b"id,f0\r\na,1\r\nb\xff,2\r\nc,3\r\n")
    else:
        p.write_bytes(
            b'{"id": "a", "template": [1]}\n{"id": "b\xff", "template": [1]}\n'
            b'{"id": "c", "template": [2]}\n'
        )
    ids, rejects = _read(p, chunk_size=2)
    assert ids == ["a", "c"]
    assert [(x.row, x.line, x.kind) for x in rejects] == [
        (2, 3 if fmt == "csv" else 2, "malformed text")
    ]


def test_old_mac_line_endings_still_split_lines(tmp_path):
    p = tmp_path / "cr.csv"
    p.write_bytes(b"id,f0\ra,1\rb,2\r")
    assert _read(p) == (["a", "b"], [])


def test_parquet_ids_that_are_not_utf8_are_rejects(tmp_path):
    """Regression (found by the fuzzer): Arrow does not validate strings on read, so
    ``to_pylist`` raised UnicodeDecodeError (exit 3)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = pa.array([b"a", b"\x82b", b"c"], pa.binary()).cast(pa.string(), safe=False)
    p = tmp_path / "bad.parquet"
    tbl = pa.table({"id": ids, "template": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]})
    pq.write_table(tbl, p)
    got, rejects = _read(p)
    assert got == ["a", "c"]
    assert [(x.row, x.kind) for x in rejects] == [(2, "malformed text")]


def test_parquet_column_names_that_are_not_utf8_are_an_input_error():
    """Regression (found by the fuzzer, input kept in the corpus): pyarrow raised
    UnicodeDecodeError from ParquetFile (exit 3)."""
    p = Path(__file__).parent / "fuzz" / "corpus" / "parquet" / "crash-column-name-not-utf8"
    with pytest.raises(InputError, match="not a readable Parquet file"):
        RecordReader(p, fmt="parquet")


def test_landmark_coordinates_beyond_float32_are_rejects(tmp_path):
    """Regression (found by the fuzzer): 1e300 passed the float64 check and became inf in the
    float32 chunk (with a RuntimeWarning) for landmarks; only templates were checked."""
    lm = np.zeros((2, 3, 2))
    lm[0] = [[0, 0], [1, 0], [0, 1]]
    lm[1] = [[0, 0], [1e300, 0], [0, 1]]
    np.save(tmp_path / "l.npy", lm)
    ids, rejects = _read(tmp_path / "l.npy", kind="landmarks", points=3)
    assert ids == ["0"]
    assert [(x.row, x.reason) for x in rejects] == [
        (2, "non-finite value: a number overflows float32")
    ]
