"""Write the seed corpus of the reader fuzzers (``tests/fuzz/corpus/<target>/``).

Small valid files of every format (templates and landmarks, masks, ids, extra fields) and a few
known-hostile ones (the issue 12 reproductions). Run from the repository root after changing a
format; the files are kept in the repository.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np

CORPUS = Path(__file__).resolve().parent / "corpus"


def _npy(a: np.ndarray, shape=None) -> bytes:
    f = io.BytesIO()
    if shape is None:
        np.save(f, a)
    else:
        hdr = np.lib.format.header_data_from_array_1_0(a)
        hdr["shape"] = shape
        np.lib.format.write_array_header_1_0(f, hdr)
        f.write(a.tobytes())
    return f.getvalue()


def _galleries(d: Path, rng: np.random.Generator) -> dict[str, bytes]:
    """Small gallery databases: plain and masked, with a removal and a calibration."""
    import sqlite3

    from pyfacematch.gallery import Gallery

    out = {}
    for name, blocks in (("plain", None), ("masked", [0, 4, 8])):
        p = d / f"{name}.db"
        g = Gallery.open(p, dim=8, blocks=blocks)
        x = rng.standard_normal((6, 8)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        for i in range(3):
            g.enroll(f"p{i}", x[2 * i : 2 * i + 2])
        g.remove("p1")
        g.close()
        con = sqlite3.connect(p)  # one self-contained file: no WAL beside it
        con.execute("PRAGMA journal_mode=DELETE")
        con.execute("VACUUM")
        con.close()
        out[name] = p.read_bytes()
    return out


def main() -> None:
    from pyfacematch import KeyModel
    from pyfacematch.io import write_table
    from pyfacematch.keys.schemes import get_scheme

    rng = np.random.default_rng(0)
    t = rng.standard_normal((3, 4)).astype(np.float32)
    lm = rng.standard_normal((2, 3, 2)).astype(np.float32)
    masks = np.array([1, 3, 7], np.uint64)
    seeds: dict[str, dict[str, bytes]] = {
        k: {} for k in ("npy", "npz", "csv", "jsonl", "parquet", "keymodel", "gallery")
    }
    with tempfile.TemporaryDirectory() as d:
        for fmt in ("npz", "csv", "jsonl", "parquet"):
            p = Path(d) / f"t.{fmt}"
            write_table(p, fmt, ["a", "=b", "c"], t, masks=masks, extra={"claim": ["x", "y", "z"]})
            seeds[fmt]["templates"] = p.read_bytes()
            write_table(p, fmt, ["a", "b"], lm, value_name="landmarks")
            seeds[fmt]["landmarks"] = p.read_bytes()
        scheme = get_scheme("ibug68")
        faces = scheme.mean_shape[None, :, :2] + 0.01 * rng.standard_normal((30, 68, 2))
        km = KeyModel.fit(
            faces.astype(np.float32), np.repeat(np.arange(10), 3), scheme=scheme, dim=8
        )
        km.save(Path(d) / "km.npz")
        seeds["keymodel"]["small"] = (Path(d) / "km.npz").read_bytes()
        seeds["gallery"].update(_galleries(Path(d), rng))
    seeds["npy"]["templates"] = _npy(t)
    seeds["npy"]["landmarks"] = _npy(lm)
    seeds["npy"]["fortran"] = _npy(np.asfortranarray(t.astype(np.float64)))
    seeds["npy"]["huge-shape"] = _npy(t, (2, 10**12))
    seeds["npy"]["int16"] = _npy(np.arange(8, dtype=np.int16).reshape(2, 4))
    seeds["jsonl"]["deep"] = b'{"id": "a", "template": ' + b"[" * 3000 + b"]" * 3000 + b"}\n"
    seeds["jsonl"]["odd"] = (
        json.dumps({"id": 1.5, "template": [1, "x"], "mask": -1}).encode()
        + b"\n"
        + b'{"id": "b", "template": [1e999, 2], "visibility": [1, 0, 1]}\n[1, 2]\n'
    )
    seeds["csv"]["odd"] = b'id,f0,mask,vis0\n=a,1,3,1\nb,x,,\n"c\nd",1e999,99,0\n'
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = io.BytesIO()
    pq.write_table(pa.table({"id": ["a"], "template": [1.0]}), f)
    seeds["parquet"]["scalar"] = f.getvalue()
    f = io.BytesIO()
    pq.write_table(pa.table({"id": [1, 2], "template": [[1.0, 2.0], None]}), f)
    seeds["parquet"]["nulls"] = f.getvalue()
    # Seeds are overwritten, never deleted: inputs the fuzzers found (``crash-*``) stay.
    for target, files in seeds.items():
        (CORPUS / target).mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (CORPUS / target / name).write_bytes(data)


if __name__ == "__main__":
    main()
