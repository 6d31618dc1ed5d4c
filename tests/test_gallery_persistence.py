"""Gallery files: round trip, checkpoints, corruption, erasure, SIGKILL crash test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from pyfacematch.errors import FormatVersionError, GalleryFileError
from pyfacematch.gallery import Gallery


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(
    ("backend", "d"), [("binary", 48), ("binary", 512), ("hnsw", 48), ("ivf", 48), ("flat", 48)]
)
def test_round_trip(tmp_path, backend, d):
    rng = np.random.default_rng(1)
    n = 900
    t = unit(rng, n, d)
    p = tmp_path / "g.db"
    with Gallery.open(p, dim=d, backend=backend, tune_probes=200) as g:
        g.enroll_many([f"i{j}" for j in range(n)], t)
        g.enroll("meta", unit(rng, 2, d), metadata={"site": "A"}, consent="written-2024")
        g.calibrate(np.linspace(-0.2, 0.3, 1000), fmr=0.01)
        before = g.identify_arrays(t[:50], k=3)
        info = g.index_info()
    with Gallery.open(p) as g2:  # dim and backend come from the file
        assert g2.dim == d and g2.index_info()["backend"] == backend
        assert len(g2) == n + 1 and g2.record("meta")["consent"] == "written-2024"
        assert g2.record("meta")["metadata"] == {"site": "A"}
        after = g2.identify_arrays(t[:50], k=3)
        assert after.identities.tolist() == before.identities.tolist()
        np.testing.assert_array_equal(after.scores, before.scores)
        assert g2.threshold("fmr").target == 0.01
        assert g2.index_info().get("depth") == info.get("depth")
        assert g2.index_info().get("scan_shortlist") == info.get("scan_shortlist")
        if d == 512 and backend == "binary":  # two-plane codes: the scan depth is kept too
            assert info["scan_shortlist"] >= info["depth"]
        g2.verify_integrity()
    if backend in ("hnsw", "ivf", "flat"):
        assert len(list((tmp_path / "g.db.index").iterdir())) == 1


def _faiss_gallery(tmp_path, rng, n=800, d=32):
    t = unit(rng, n, d)
    p = tmp_path / "g.db"
    g = Gallery.open(p, dim=d, backend="ivf", tune_probes=100)
    g.enroll_many([f"i{j}" for j in range(n)], t)
    g.close()
    files = list((tmp_path / "g.db.index").iterdir())
    assert len(files) == 1
    return p, files[0], t


def test_corrupted_checkpoint_never_reaches_faiss(tmp_path, monkeypatch, caplog):
    import faiss

    rng = np.random.default_rng(2)
    p, f, t = _faiss_gallery(tmp_path, rng)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))

    def refuse(*a, **k):  # pragma: no cover - reaching it is the failure
        raise AssertionError("a checkpoint failing its checksum was handed to FAISS")

    monkeypatch.setattr(faiss, "deserialize_index", refuse)
    with Gallery.open(p) as g:  # rebuilt from the store
        assert "checksum" in caplog.text
        res = g.identify_arrays(t[:20], k=1)
        assert res.identities[:, 0].tolist() == [f"i{j}" for j in range(20)]
        g.verify_integrity()
        monkeypatch.undo()
    # truncated file: same
    f2 = next((tmp_path / "g.db.index").iterdir())
    f2.write_bytes(f2.read_bytes()[:100])
    with Gallery.open(p) as g:
        g.verify_integrity()


def test_stale_checkpoint_is_rebuilt(tmp_path, caplog):
    rng = np.random.default_rng(3)
    p, f, t = _faiss_gallery(tmp_path, rng)
    saved = f.read_bytes()
    with Gallery.open(p) as g:
        g.enroll("late", unit(rng, 1, 32))
        g._store.close()  # simulate a crash: no checkpoint written after the enroll
        g._lock.release()  # ... and the OS releases the writer lock of a dead process
        g._closed = True
    f.write_bytes(saved)  # the old checkpoint is still there (it is, but be explicit)
    with Gallery.open(p) as g:
        assert "late" in g
        assert g.identify(g.templates("late"))[0].candidates[0].identity == "late"
        g.verify_integrity()


def test_remove_erases_from_index_files(tmp_path):
    rng = np.random.default_rng(4)
    p, f, t = _faiss_gallery(tmp_path, rng)
    secret = t[7].tobytes()[:64]
    assert secret in f.read_bytes()  # IVF-Flat stores the vectors
    with Gallery.open(p) as g:
        g.remove("i7")
        assert not f.exists()  # the file holding the template is gone at once
        assert g.identify(t[7], k=5)[0].candidates[0].identity != "i7"
    for q in (tmp_path / "g.db.index").iterdir():
        assert secret not in q.read_bytes()
    blob = p.read_bytes()
    assert secret not in blob
    wal = tmp_path / "g.db-wal"
    assert not wal.exists() or secret not in wal.read_bytes()
    with Gallery.open(p) as g:
        g.checkpoint()
        (f2,) = (tmp_path / "g.db.index").iterdir()
        info = g.rebuild_index()  # retrain without the erased identity
        assert not f2.exists() and info["backend"] == "ivf" and info["search"] != "exact"
        searches = ("identify", "verify")  # searches are audited too (issue 13)
        assert [a[1] for a in g.audit_log() if a[1] not in searches][-1] == "remove"


def test_hnsw_checkpoint_never_holds_tombstones(tmp_path):
    rng = np.random.default_rng(5)
    d = 32
    t = unit(rng, 600, d)
    p = tmp_path / "g.db"
    with Gallery.open(p, dim=d, backend="hnsw", tune_probes=100) as g:
        g.enroll_many([f"i{j}" for j in range(600)], t)
        g.remove("i3")
        assert g.index_info()["tombstones"] == 1
        g.checkpoint()
        assert g.index_info()["tombstones"] == 0
    (f,) = (tmp_path / "g.db.index").iterdir()
    assert t[3].tobytes()[:64] not in f.read_bytes()
    assert t[4].tobytes()[:64] in f.read_bytes()


def test_unknown_version_and_not_a_gallery(tmp_path):
    import sqlite3

    p = tmp_path / "g.db"
    Gallery.open(p, dim=8).close()
    con = sqlite3.connect(p)
    con.execute("UPDATE meta SET value='99' WHERE key='format_version'")
    con.commit()
    con.close()
    with pytest.raises(FormatVersionError):
        Gallery.open(p)
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(GalleryFileError):
        Gallery.open(junk, dim=8)


# ----------------------------------------------------------------------------- crash test
CHILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from pyfacematch.gallery import Gallery
    path, ack, rnd = sys.argv[1], sys.argv[2], int(sys.argv[3])
    g = Gallery.open(path, dim=16, backend="flat")
    fd = os.open(ack, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    j = 0
    while True:
        name = f"r{rnd}-{j}"
        rng = np.random.default_rng(rnd * 100000 + j)
        g.enroll(name, rng.standard_normal((1 + j % 2, 16)))
        os.write(fd, (name + "\\n").encode())  # acknowledged only after enroll returned
        if j % 4 == 3:
            g.checkpoint()  # atomic index checkpoints get killed mid-way too
        j += 1
    """
)


def test_sigkill_during_enrollment_loses_no_acknowledged_enrollment(tmp_path):
    path = tmp_path / "g.db"
    ack = tmp_path / "ack.txt"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    Gallery.open(path, dim=16, backend="flat").close()
    rng = np.random.default_rng(0)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    kills = 0
    for rnd in range(32):
        before = ack.read_text().count("\n") if ack.exists() else 0
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), str(ack), str(rnd)],
            env=env,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        # wait until the child is inside its loop, then kill it at a random moment
        while (ack.read_text().count("\n") if ack.exists() else 0) == before:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode()[-2000:])
            assert time.monotonic() < deadline
            time.sleep(0.002)
        time.sleep(float(rng.uniform(0.0, 0.03)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        kills += 1
    assert kills >= 30
    acked = ack.read_text().split()
    assert len(acked) >= 30
    with Gallery.open(path) as g:
        enrolled = set(g.identities())
        assert set(acked) <= enrolled  # every acknowledged enrollment survived
        assert len(enrolled - set(acked)) <= kills  # at most one unacknowledged per kill
        g.verify_integrity()  # the index matches the store
        for name in acked[::7]:
            rnd, j = (int(x) for x in name[1:].split("-"))
            t = np.random.default_rng(rnd * 100000 + j).standard_normal((1 + j % 2, 16))
            t /= np.linalg.norm(t, axis=1, keepdims=True)
            np.testing.assert_allclose(g.templates(name), t, atol=1e-6)
            assert g.identify(t[0])[0].candidates[0].identity == name
