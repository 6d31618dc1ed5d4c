"""The memory-mapped serving folder: reopened answers are byte-identical, truncated or altered files
are refused with a clear message, and a SIGKILL during append loses nothing acknowledged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import pyfacematch as pf
from pyfacematch.errors import FormatVersionError, GalleryFileError, InputError
from pyfacematch.index.serving import BLOCK_BYTES, ServingFolder


def _gallery(rng: np.random.Generator, n: int = 5000, d: int = 96) -> np.ndarray:
    return pf.normalize(rng.standard_normal((n, d)))


@pytest.mark.parametrize("kind", ["int8", "bf16"])
def test_reopened_folder_answers_byte_identically(
    tmp_path: Path, kind: str, rng: np.random.Generator
) -> None:
    x = _gallery(rng)
    ids = np.arange(x.shape[0], dtype=np.int64) * 3 + 7
    c = pf.CompactMatrix.from_float32(x, kind, exact=x)
    q = pf.normalize(x[:20] + 0.1 * rng.standard_normal((20, x.shape[1])).astype(np.float32))
    before = c.topk(q, 10)
    sf = ServingFolder.write(tmp_path / "srv", x, ids, compact=c, params={"depth": 64})
    del sf
    sf = ServingFolder.open(tmp_path / "srv", verify="full")
    assert sf.check()
    assert isinstance(sf.float32, np.memmap)
    assert sf.params == {"depth": 64}
    for load in (True, False):
        sf = ServingFolder.open(tmp_path / "srv", load_compact=load)
        mapped = sf.compact()
        assert mapped is not None and isinstance(mapped.codes, np.memmap) is not load
        after = mapped.topk(q, 10)
        for a, b in zip(before, after):
            assert a.tobytes() == b.tobytes()
    np.testing.assert_array_equal(sf.ids, ids)
    # the pread path (rows never mapped) gives the same bytes
    for a, b in zip(before, sf.search(q, 10)):
        assert a.tobytes() == b.tobytes()
    for a, b in zip(c.topk(q[0], 3), sf.search(q[0], 3)):
        assert a.tobytes() == b.tobytes()


def test_truncated_and_altered_files_are_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    x = _gallery(rng, n=3000)
    c = pf.CompactMatrix.from_float32(x, "int8")
    ServingFolder.write(tmp_path / "a", x, np.arange(3000), compact=c)
    f = tmp_path / "a" / "compact_codes.bin"
    # altered: one byte flipped → the background pass names the block
    raw = bytearray(f.read_bytes())
    raw[1234] ^= 0x40
    f.write_bytes(bytes(raw))
    sf = ServingFolder.open(tmp_path / "a")
    with pytest.raises(GalleryFileError, match=r"altered \(compact_codes.bin block 0\).*rebuild"):
        sf.check()
    # truncated → refused at open, before any search
    with open(f, "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(GalleryFileError, match="truncated.*rebuild it from the store"):
        ServingFolder.open(tmp_path / "a")
    m = tmp_path / "a" / "manifest.json"
    man = json.loads(m.read_text())
    man["version"] = 99
    m.write_text(json.dumps(man))
    with pytest.raises(FormatVersionError, match="version 99"):
        ServingFolder.open(tmp_path / "a")
    m.write_text("{not json")
    with pytest.raises(GalleryFileError, match="cannot be read"):
        ServingFolder.open(tmp_path / "a")
    with pytest.raises(GalleryFileError, match="not a serving folder"):
        ServingFolder.open(tmp_path / "nothing")
    with pytest.raises(InputError):
        ServingFolder.open(tmp_path / "a", verify="sometimes")


def test_append_spans_blocks_and_verifies(tmp_path: Path, rng: np.random.Generator) -> None:
    d = 512  # float32 rows of 2 KiB: 9000 rows cross a 16 MiB block boundary
    x = _gallery(rng, n=9000, d=d)
    sf = ServingFolder.write(
        tmp_path / "s", x[:5000], np.arange(5000), compact=pf.CompactMatrix.from_float32(x[:5000])
    )
    sf.append(x[5000:], np.arange(5000, 9000), compact=pf.CompactMatrix.from_float32(x[5000:]))
    assert x[:9000].nbytes > BLOCK_BYTES
    sf2 = ServingFolder.open(tmp_path / "s", verify="full")
    assert sf2.n == 9000
    np.testing.assert_array_equal(np.asarray(sf2.float32), x)
    whole = pf.CompactMatrix.from_float32(x, exact=x)
    mapped = sf2.compact()
    assert mapped is not None
    for a, b in zip(whole.topk(x[:5], 3), mapped.topk(x[:5], 3)):
        assert a.tobytes() == b.tobytes()
    with pytest.raises(InputError, match="arrays"):
        sf2.append(x[:2], np.arange(2))  # the compact arrays are missing


_WRITER = r"""
import sys, numpy as np, pyfacematch as pf
from pyfacematch.index.serving import ServingFolder
path, d = sys.argv[1], 64
sf = ServingFolder.open(path, verify="none")
i = sf.n
while True:
    rng = np.random.default_rng(i)
    x = pf.normalize(rng.standard_normal((50, d)))
    sf.append(x, np.arange(i, i + 50), compact=pf.CompactMatrix.from_float32(x))
    i += 50
    print(i, flush=True)
"""


def test_sigkill_during_append_loses_nothing_acknowledged(tmp_path: Path) -> None:
    d = 64
    x0 = pf.normalize(np.random.default_rng(-1 % 2**32).standard_normal((50, d)))
    ServingFolder.write(
        tmp_path / "k", x0, np.arange(50), compact=pf.CompactMatrix.from_float32(x0)
    )
    for delay in (0.6, 1.1):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path / "k")],
            stdout=subprocess.PIPE,
            text=True,
        )
        acked = 0
        t0 = time.monotonic()
        assert proc.stdout is not None
        while time.monotonic() - t0 < delay + 20:
            line = proc.stdout.readline()
            if not line:
                break
            acked = int(line)
            if time.monotonic() - t0 > delay and acked > 100:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        sf = ServingFolder.open(tmp_path / "k", verify="full")
        assert sf.n >= acked > 50  # every acknowledged row is there, checksums hold
        ids = np.asarray(sf.ids)
        np.testing.assert_array_equal(ids, np.arange(sf.n))
        for start in range(50, sf.n, 50):  # each committed batch is the one that was written
            want = pf.normalize(np.random.default_rng(start).standard_normal((50, d)))
            np.testing.assert_array_equal(np.asarray(sf.float32[start : start + 50]), want)
