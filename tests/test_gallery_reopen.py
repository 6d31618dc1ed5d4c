"""A gallery reopened from its serving folder (``serving=True``) maps the files instead of reading
the store and rebuilding, and answers byte-identically; a folder that does not match the store
(stale, altered, truncated, another gallery's) is not used — rebuilt from the store with a log
line, never a wrong answer; a SIGKILL during an append or a removal loses nothing acknowledged and
resurrects no removal."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pyfacematch as pf
from pyfacematch.errors import InputError

D = 64
CASES = [
    ("exact", {"store": "int8"}),
    ("exact", {"store": "bf16"}),
    ("binary", {"rerank_store": "int8"}),
    ("binary", {}),
    ("exact", {}),
]


def _x(rng: np.random.Generator, n: int) -> np.ndarray:
    return pf.normalize(rng.standard_normal((n, D)))


def _answers(g: pf.Gallery, q: np.ndarray) -> tuple[bytes, list[Any], list[Any]]:
    a = g.identify_arrays(q, k=7)
    v = [g.verify(f"id{j}", q[j]).score for j in (0, 1, 2, 4, 5)]
    return a.scores.tobytes(), a.identities.tolist(), v


def _copy_store(src: Path, dst: Path) -> None:
    """The store alone (no serving folder): opening it rebuilds from the store."""
    for suffix in ("", ".key", ".audit.key"):
        if Path(str(src) + suffix).exists():
            shutil.copy(str(src) + suffix, str(dst) + suffix)


def _build(path: Path, rng: np.random.Generator, backend: str, opts: dict) -> np.ndarray:
    x = _x(rng, 1500)
    g = pf.Gallery(D, path=path, backend=backend, backend_options=opts, serving=True)
    g.enroll_many([f"id{j}" for j in range(1000)], x[:1000])
    g.enroll("id1000", x[1000:1003])  # several templates for one identity
    for j in (3, 500, 999):
        g.remove(f"id{j}")  # swap-with-last in memory and in the folder
    g.enroll_many([f"id{j}" for j in range(1100, 1400)], x[1100:1400])
    g.remove("id1100")
    g.close()
    return x


@pytest.mark.parametrize(("backend", "opts"), CASES)
def test_reopen_maps_the_folder_and_answers_byte_identically(
    tmp_path: Path, rng: np.random.Generator, backend: str, opts: dict
) -> None:
    path = tmp_path / "g.db"
    x = _build(path, rng, backend, opts)
    q = pf.normalize(x[:40] + 0.2 * rng.standard_normal((40, D)).astype(np.float32))
    g = pf.Gallery(path=path, backend=backend, backend_options=opts)
    before = _answers(g, q)
    assert g.info()["serving"]["mapped"]
    g.close()
    g = pf.Gallery(path=path, backend=backend, backend_options=opts)
    info = g.info()["serving"]
    assert info["mapped"] and info["not_used_because"] is None, info
    assert isinstance(g._m.data, np.memmap)  # the rows were mapped, not read from the store
    srv = tmp_path / "g.db.index" / "serving"
    assert all(f.stat().st_mode & 0o077 == 0 for f in [srv, *srv.iterdir()])  # owner only
    assert _answers(g, q) == before
    assert "id3" not in g and "id1100" not in g and len(g) == 1000 + 1 + 300 - 4
    g.verify_integrity()
    # a gallery rebuilt from the store alone answers the same
    _copy_store(path, tmp_path / "r.db")
    r = pf.Gallery(path=tmp_path / "r.db", backend=backend, backend_options=opts)
    assert r.info()["serving"]["not_used_because"] == "no serving folder"
    assert _answers(r, q) == before
    r.close()
    # still in step after more writes on the reopened (mapped) gallery, and after a rebuild
    g.enroll_many(["new1", "new2"], x[1400:1402])
    g.remove("id7")
    after = _answers(g, q)
    g.rebuild_index()
    g.close()
    g = pf.Gallery(path=path, read_only=True, backend_options=opts)  # options are not stored
    assert g.info()["serving"]["not_used_because"] is None
    assert _answers(g, q) == after
    assert "new2" in g and "id7" not in g
    g.close()


def test_a_folder_that_does_not_match_is_rebuilt_with_a_log_line(
    tmp_path: Path, rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "g.db"
    opts = {"store": "int8"}
    x = _build(path, rng, "exact", opts)
    q = pf.normalize(x[:30] + 0.2 * rng.standard_normal((30, D)).astype(np.float32))
    srv = tmp_path / "g.db.index" / "serving"
    old = tmp_path / "old-serving"
    shutil.copytree(srv, old)
    g = pf.Gallery(path=path, backend_options=opts)
    g.enroll("late", x[1450])  # the folder moves on: the copy is now stale
    g.remove("id10")
    want = _answers(g, q)
    g.close()

    def reopen(expect: str) -> None:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pyfacematch.gallery"):
            g = pf.Gallery(path=path, backend_options=opts)
        why = g.info()["serving"]["not_used_because"]
        assert why is not None and expect in why, why
        assert any("rebuilding from the store" in r.getMessage() for r in caplog.records)
        assert _answers(g, q) == want and "late" in g and "id10" not in g
        g.close()  # the folder was written again: the next open maps it
        g = pf.Gallery(path=path, backend_options=opts)
        assert g.info()["serving"]["not_used_because"] is None
        assert _answers(g, q) == want
        g.close()

    def put_back_old() -> None:
        shutil.rmtree(srv)
        shutil.copytree(old, srv)

    put_back_old()  # stale generation
    reopen("generation")
    man = json.loads((srv / "manifest.json").read_text())
    man["meta"]["generation"] += 1  # edited without the gallery's key
    (srv / "manifest.json").write_text(json.dumps(man))
    reopen("HMAC")
    with open(srv / "compact_codes.bin", "r+b") as fh:  # truncated
        fh.truncate(100)
    reopen("truncated")
    f = srv / "ids.bin"  # an altered block of the ids (verified before the first answer)
    raw = bytearray(f.read_bytes())
    raw[8] ^= 1
    f.write_bytes(bytes(raw))
    reopen("altered")
    (srv / "manifest.json").write_text("{")
    reopen("cannot be read")


def test_altered_float32_block_found_in_background_rebuilds(
    tmp_path: Path, rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "g.db"
    opts = {"store": "int8"}
    x = _build(path, rng, "exact", opts)
    q = pf.normalize(x[:30] + 0.2 * rng.standard_normal((30, D)).astype(np.float32))
    g = pf.Gallery(path=path, backend_options=opts)
    want = _answers(g, q)
    g.close()
    f = tmp_path / "g.db.index" / "serving" / "float32.bin"
    raw = bytearray(f.read_bytes())
    raw[4 * D * 5 + 3] ^= 0x20
    f.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="pyfacematch.gallery"):
        g = pf.Gallery(path=path, backend_options=opts)
        g._sf.folder.wait_verified()  # type: ignore[union-attr]
        got = _answers(g, q)  # the next call sees the failed pass and rebuilds first
    assert got == want
    # found at open or at the first call after (the pass runs in the background): never used
    assert any("float32.bin block 0" in r.getMessage() for r in caplog.records)
    assert g._m.mapped  # rebuilt from the store, then written again and mapped
    g.close()
    g = pf.Gallery(path=path, backend_options=opts)  # written again
    assert g.info()["serving"]["not_used_because"] is None and _answers(g, q) == want
    g.close()


def test_encrypted_galleries_refuse_a_serving_folder(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    g = pf.Gallery(D, path=tmp_path / "e.db", encrypt=True)
    g.close()
    with pytest.raises(InputError, match="encrypted at rest.*without serving=True"):
        pf.Gallery(path=tmp_path / "e.db", serving=True)
    with pytest.raises(InputError, match="gallery file"):
        pf.Gallery(D, serving=True)
    assert not (tmp_path / "e.db.index" / "serving").exists()


def test_removals_past_the_slack_threshold_compact_the_folder(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyfacematch.gallery import servingfiles

    monkeypatch.setattr(servingfiles, "COMPACT_MIN_ROWS", 40)
    monkeypatch.setattr(servingfiles, "COMPACT_SLACK", 0.03)
    path = tmp_path / "g.db"
    opts = {"rerank_store": "int8"}
    x = _build(path, rng, "binary", opts)
    f32 = tmp_path / "g.db.index" / "serving" / "float32.bin"
    g = pf.Gallery(path=path, backend_options=opts)
    rows0 = f32.stat().st_size // (4 * D)
    assert rows0 == g.n_templates + 1  # the last removal of _build left one zeroed row
    sizes = []
    for j in range(20, 80):  # removed: zeroed in place, the files keep their size …
        g.remove(f"id{j}")
        sizes.append(f32.stat().st_size // (4 * D))
        if j == 40:
            assert sizes[-1] == rows0
            tail = np.fromfile(f32, np.float32).reshape(-1, D)[g.n_templates :]
            assert not tail.any()  # … the freed rows hold zeros, not the removed templates
    # … until the zeroed rows pass 3 % of the live ones and 40 rows: then written afresh
    assert min(sizes) < rows0 and sizes[-1] - g.n_templates <= 41
    q = pf.normalize(x[:30] + 0.2 * rng.standard_normal((30, D)).astype(np.float32))
    want = _answers(g, q)
    g.close()
    g = pf.Gallery(path=path, backend_options=opts)
    assert g.info()["serving"]["not_used_because"] is None and _answers(g, q) == want
    g.verify_integrity()  # the codes follow the rows (a compaction right after a removal)
    srv = tmp_path / "g.db.index" / "serving"
    n = g.n_templates
    rows = np.fromfile(srv / "float32.bin", np.float32)[: n * D].reshape(n, D)
    codes = np.fromfile(srv / "compact_codes.bin", np.int8)[: n * 64].reshape(n, 64)
    np.testing.assert_array_equal(codes, pf.CompactMatrix.from_float32(rows, "int8").codes)
    g.close()


def test_turning_serving_off_deletes_the_folder(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "g.db"
    _build(path, rng, "exact", {"store": "int8"})
    assert (tmp_path / "g.db.index" / "serving" / "float32.bin").exists()
    g = pf.Gallery(path=path, serving=False)
    assert g.info()["serving"] is None and not (tmp_path / "g.db.index" / "serving").exists()
    g.close()
    g = pf.Gallery(path=path)  # remembered
    assert g.info()["serving"] is None
    g.close()


_CHILD = r"""
import sys, numpy as np, pyfacematch as pf
from pyfacematch.gallery import servingfiles
path, seed = sys.argv[1], int(sys.argv[2])
if seed == 2:  # every removal compacts: the kill lands in compactions too
    servingfiles.COMPACT_SLACK, servingfiles.COMPACT_MIN_ROWS = 0.0, 0
rng = np.random.default_rng(seed)
g = pf.Gallery(path=path, backend_options={"rerank_store": "int8"})
i = len(g)
while True:
    x = pf.normalize(rng.standard_normal((50, 64)))
    names = [f"k{i + j}" for j in range(50)]
    g.enroll_many(names, x)
    print("enrolled", names[0], names[-1], flush=True)
    gone = f"k{i + 7}"
    g.remove(gone)
    print("removed", gone, flush=True)
    i += 50
"""


@pytest.mark.parametrize(("delay", "mode"), [(0.6, 1), (1.3, 1), (0.9, 2)])
def test_sigkill_during_append_removal_and_compaction_loses_nothing(
    tmp_path: Path, rng: np.random.Generator, delay: float, mode: int
) -> None:
    path = tmp_path / "g.db"
    x = _x(rng, 400)
    g = pf.Gallery(
        D, path=path, backend="binary", backend_options={"rerank_store": "int8"}, serving=True
    )
    g.enroll_many([f"id{j}" for j in range(400)], x)
    g.close()
    child = tmp_path / "child.py"
    child.write_text(_CHILD)
    p = subprocess.Popen(
        [sys.executable, str(child), str(path), str(mode)], stdout=subprocess.PIPE, text=True
    )
    time.sleep(delay + 1.5)  # import + open, then a stream of writes
    os.kill(p.pid, signal.SIGKILL)
    out, _ = p.communicate()
    enrolled: set[str] = set()
    removed: set[str] = set()
    in_flight = set()  # a removal committed but killed before it was acknowledged may be either
    for line in out.splitlines():
        what, *names = line.split()
        if what == "enrolled":
            a, b = (int(n[1:]) for n in names)
            enrolled.update(f"k{j}" for j in range(a, b + 1))
            in_flight = {f"k{a + 7}"}
        else:
            removed.update(names)
            in_flight = set()
    assert enrolled, "the child acknowledged nothing before the kill: raise the delay"
    opts = {"rerank_store": "int8"}
    g = pf.Gallery(path=path, backend_options=opts)
    live = set(g.identities())
    assert enrolled - removed - in_flight <= live  # nothing acknowledged is lost
    assert not (removed & live)  # no acknowledged removal comes back
    q = pf.normalize(x[:20] + 0.2 * rng.standard_normal((20, D)).astype(np.float32))
    got = _answers(g, q)
    g.verify_integrity()
    g.close()
    _copy_store(path, tmp_path / "r.db")
    r = pf.Gallery(path=tmp_path / "r.db", backend_options=opts)
    assert _answers(r, q) == got  # the same as rebuilt from the store
    r.close()
    g = pf.Gallery(path=path, backend_options=opts)  # and the folder is in use again
    assert g.info()["serving"]["not_used_because"] is None and _answers(g, q) == got
    g.close()


_RSS_CHILD = r"""
import resource, sys, numpy as np, pyfacematch as pf
path, serving, chunks, rows, d = sys.argv[1], sys.argv[2] == "1", 12, 2000, 1024
rng = np.random.default_rng(0)


def hwm():
    # VmHWM: ru_maxrss is inherited from the parent across fork + exec (a big pytest process)
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


g = pf.Gallery(d, path=path, backend="exact", serving=serving)
peak = []
for c in range(chunks):  # the input is made a chunk at a time, as a bulk job reads it
    x = pf.normalize(rng.standard_normal((rows, d)))
    g.enroll_many([f"p{(c * rows + j) // 10}" for j in range(rows)], x)
    peak.append(hwm())
g.close()
print((peak[-1] - peak[2]) / ((chunks - 3) * rows))  # after the allocator's warm-up
"""


def test_bulk_enroll_with_a_serving_folder_keeps_float32_out_of_memory(tmp_path: Path) -> None:
    """Growth of peak memory (VmHWM, in a fresh process) per template enrolled after the first
    three chunks of a chunked bulk enroll: with the serving folder the float32 rows (4,096 bytes at
    d = 1024) go to the mapped file and memory grows by ids and bookkeeping only (plus per-chunk
    transients that do not grow with the gallery); without it by the rows."""
    child = tmp_path / "rss.py"
    child.write_text(_RSS_CHILD)
    per_row = {}
    for serving in ("1", "0"):
        out = subprocess.run(
            [sys.executable, str(child), str(tmp_path / f"g{serving}.db"), serving],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        per_row[serving] = float(out.split()[-1])
    assert per_row["1"] < 0.3 * 4096, per_row
    assert per_row["0"] > 4096, per_row  # the same measure sees the rows held in memory


def test_cli_enroll_with_serving_appends_chunk_by_chunk(tmp_path: Path) -> None:
    from pyfacematch.io import write_table

    rng = np.random.default_rng(3)
    x = pf.normalize(rng.standard_normal((600, D)))
    write_table(tmp_path / "in.npy", "npy", [str(j) for j in range(600)], x)  # ids: row numbers
    env = dict(os.environ, PYTHONSAFEPATH="1")
    cmd = ["enroll", "-g", "g.db", "-i", "in.npy", "--serving", "-q", "--chunk-size", "250"]
    r = subprocess.run(
        [sys.executable, "-m", "pyfacematch", *cmd],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    man = json.loads((tmp_path / "g.db.index" / "serving" / "manifest.json").read_text())
    assert man["rows"] == 600
    g = pf.Gallery(path=tmp_path / "g.db")
    assert g.info()["serving"]["not_used_because"] is None and g._m.mapped
    a = g.identify_arrays(x[:5], k=1)
    assert a.identities[:, 0].tolist() == [str(j) for j in range(5)]
    g.close()
