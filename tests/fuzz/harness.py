"""Fuzz targets of the file readers: bytes in, a typed error or a clean read out.

Each target writes the fuzzer's bytes to a file (or feeds them as standard input) and reads it the
way a job does. The package's typed errors (:class:`~pyfacematch.errors.PyFaceMatchError`) are the
expected way to refuse a bad file; any other exception is a crash and is raised to the fuzzer.
Used by ``fuzz_readers.py`` (atheris, coverage-guided) and by ``tests/test_fuzz.py`` (the seed
corpus, then a short atheris run).
"""

from __future__ import annotations

import io
import os
import struct
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pyfacematch.errors import PyFaceMatchError

__all__ = ["CORPUS", "TARGETS", "npy_bytes", "run_one", "zip_bomb"]

CORPUS = Path(__file__).resolve().parent / "corpus"
_TMP = Path(tempfile.mkdtemp(prefix="pfm-fuzz-"))


def _options(data: bytes) -> dict:
    """Reader options chosen by the last byte, so one corpus explores several configurations."""
    b = data[-1] if data else 0
    kind = "landmarks" if b & 1 else "templates"
    return {
        "kind": kind,
        "points": 3 if kind == "landmarks" else None,
        "n_blocks": 3 if b & 2 else None,
        "on_error": "stop" if b & 4 else "skip",
        "chunk_size": 1 + (b >> 4) % 5,
        "fields": ("claim",) if b & 8 else (),
    }


def _read(path: str, fmt: str, data: bytes) -> None:
    from pyfacematch.io import RecordReader

    opts = _options(data)
    with RecordReader(path, fmt=fmt, **opts) as r:
        r.count_records()
        for c in r.chunks():
            assert len(c.ids) == len(c.values) == len(c.rows)
            assert c.values.dtype == np.float32 and np.isfinite(c.values).all()
            assert len(c.ids) + len(c.rejects) <= c.count


def _file_target(fmt: str, suffix: str) -> Callable[[bytes], None]:
    def target(data: bytes) -> None:
        p = _TMP / f"input{suffix}"
        p.write_bytes(data)
        try:
            _read(str(p), fmt, data)
        except PyFaceMatchError:
            pass

    target.__name__ = f"fuzz_{fmt}"
    return target


def _stdin_target(fmt: str, base: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """Half of the inputs as a file, half as standard input (the streaming readers)."""

    def target(data: bytes) -> None:
        if len(data) % 3:
            return base(data)
        old = sys.stdin
        sys.stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="")
        try:
            _read("-", fmt, data)
        except PyFaceMatchError:
            pass
        finally:
            sys.stdin = old

    target.__name__ = base.__name__
    return target


def fuzz_keymodel(data: bytes) -> None:
    from pyfacematch.keys.model import KeyModel

    p = _TMP / "model.npz"
    p.write_bytes(data)
    try:
        km = KeyModel.load(p)
    except PyFaceMatchError:
        return
    assert km.dim > 0


def fuzz_gallery(data: bytes) -> None:
    """The gallery database file itself (SQLite bytes from anywhere): open it read-only, list,
    search and verify. A crafted file must give a typed error or a consistent gallery."""
    from pyfacematch.gallery import Gallery

    d = _TMP / "gallery"
    d.mkdir(exist_ok=True)
    for f in d.iterdir():  # the previous input's database, WAL, shm, index folder
        if f.is_dir():
            for g in f.iterdir():
                g.unlink()
            f.rmdir()
        else:
            f.unlink()
    p = d / "g.db"
    p.write_bytes(data)
    os.chmod(p, 0o600)
    try:
        g = Gallery.open(p, read_only=True)
    except PyFaceMatchError:
        return
    try:
        ids = g.identities()
        assert len(ids) == len(g) and len(set(ids)) == len(ids)
        if g.dim and ids:
            probe = np.ones(g.dim, np.float32) / np.sqrt(g.dim)
            for r in g.identify(probe, k=min(3, len(ids))):
                assert all(c.identity in set(ids) for c in r.candidates)
            g.verify(ids[0], probe)
            g.info()
    except PyFaceMatchError:
        pass
    finally:
        g.close()


TARGETS: dict[str, Callable[[bytes], None]] = {
    "npy": _stdin_target("npy", _file_target("npy", ".npy")),
    "npz": _file_target("npz", ".npz"),
    "csv": _stdin_target("csv", _file_target("csv", ".csv")),
    "jsonl": _stdin_target("jsonl", _file_target("jsonl", ".jsonl")),
    "parquet": _file_target("parquet", ".parquet"),
    "keymodel": fuzz_keymodel,
    "gallery": fuzz_gallery,
}


def run_one(target: str, data: bytes) -> None:
    """Run one input through ``target`` (raises on a crash)."""
    TARGETS[target](data)


def cleanup() -> None:
    for f in _TMP.iterdir():
        os.unlink(f)


# --------------------------------------------------------------------------- hostile files
def npy_bytes(a: np.ndarray, shape: tuple[int, ...] | None = None) -> bytes:
    """``a`` saved as .npy, with its header's shape replaced by ``shape`` when given."""
    f = io.BytesIO()
    hdr = np.lib.format.header_data_from_array_1_0(a)
    if shape is not None:
        hdr["shape"] = shape
    np.lib.format.write_array_header_1_0(f, hdr)
    f.write(np.ascontiguousarray(a).tobytes())
    return f.getvalue()


def zip_bomb(path, member: str, shape: tuple[int, ...], *, lie: int | None = None) -> int:
    """An .npz whose member ``member`` inflates to a float64 zero array of ``shape``.

    Written by streaming zeros through deflate, so the file is small while the member is big.
    ``lie`` replaces the member's declared uncompressed size. Returns the uncompressed size.
    """
    header = npy_bytes(np.zeros((0,), np.float64), shape)
    total = len(header) + int(np.prod(shape)) * 8
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = [comp.compress(header)]
    block = bytes(1 << 20)
    left = total - len(header)
    crc = zlib.crc32(header)
    while left > 0:
        b = block[: min(left, len(block))]
        body.append(comp.compress(b))
        crc = zlib.crc32(b, crc)
        left -= len(b)
    body.append(comp.flush())
    data = b"".join(body)
    # written by hand: local header + data + central directory, with the sizes we say
    size = total if lie is None else lie
    name = (member + ".npy").encode()
    local = struct.pack(
        "<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(data), size, len(name), 0
    )
    central = struct.pack(
        "<4s6H3L5H2L",
        b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(data), size, len(name), 0, 0, 0, 0, 0, 0,
    )  # fmt: skip
    cd_off = len(local) + len(name) + len(data)
    cd = central + name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(cd), cd_off, 0)
    with open(path, "wb") as fh:
        fh.write(local + name + data + cd + end)
    return total
