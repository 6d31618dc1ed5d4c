"""Gallery file safety (issue 12 defects 1, 2, 3, 4, 8): one writer, all-or-nothing removal,
untrusted checkpoint paths, crash leftovers, authenticated checkpoints, reported tuning saves,
and the accept/reject boundary of identify and verify."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import pyfacematch.gallery.gallery as gallery_mod
from pyfacematch.errors import (
    GalleryFileError,
    GalleryLockedError,
    GalleryReadOnlyError,
    KeyFileError,
    PyFaceMatchError,
    UnknownIdentityError,
)
from pyfacematch.gallery import Gallery
from pyfacematch.gallery.secret import ENV_VAR

D = 16
N = 12


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def people(seed: int = 0, n: int = N, d: int = D) -> np.ndarray:
    return unit(np.random.default_rng(seed), n, d)


def make(path, backend="flat", n=N, d=D, seed=0) -> np.ndarray:
    t = people(seed, n, d)
    with Gallery.open(path, dim=d, backend=backend) as g:
        g.enroll_many([f"p{j}" for j in range(n)], t)
    return t


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))


def _child(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _index_files(path) -> list[str]:
    d = path.with_name(path.name + ".index")
    return sorted(os.listdir(d)) if d.is_dir() else []


# --------------------------------------------------------------------------- defect 1
def test_second_writer_is_refused_in_another_process_and_in_this_one(tmp_path):
    p = tmp_path / "g.db"
    make(p)
    with Gallery.open(p) as g:
        child = _child(
            """
            import sys
            from pyfacematch.gallery import Gallery
            try:
                Gallery.open(sys.argv[1])
            except Exception as exc:
                print(type(exc).__name__, exc)
            else:
                print("opened")
            """,
            str(p),
        )
        out, err = child.communicate(timeout=120)
        assert out.startswith("GalleryLockedError"), out + err
        assert str(p) in out and "read_only=True" in out
        with pytest.raises(GalleryLockedError) as ei:
            Gallery.open(p)
        assert isinstance(ei.value, PyFaceMatchError) and isinstance(ei.value, OSError)
        assert len(g) == N  # the refused open changed nothing
    with Gallery.open(p) as g:  # released by close()
        assert len(g) == N


def test_writer_lock_is_released_when_the_writer_is_killed(tmp_path):
    p = tmp_path / "g.db"
    make(p)
    child = _child(
        """
        import sys, time
        from pyfacematch.gallery import Gallery
        g = Gallery.open(sys.argv[1])
        print("ready", flush=True)
        time.sleep(600)
        """,
        str(p),
    )
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        with pytest.raises(GalleryLockedError):
            Gallery.open(p)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    with Gallery.open(p) as g:
        assert len(g) == N


def test_read_only_process_never_returns_a_removed_identity(tmp_path):
    p = tmp_path / "g.db"
    t = make(p)
    with Gallery.open(p) as writer:
        reader = _child(
            f"""
            import sys
            import numpy as np
            from pyfacematch.gallery import Gallery
            from pyfacematch.errors import UnknownIdentityError
            rng = np.random.default_rng(0)
            x = rng.standard_normal(({N}, {D}))
            t = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
            g = Gallery.open(sys.argv[1], read_only=True)
            for line in sys.stdin:
                top = g.identify(t[5], k=3)[0].candidates
                try:
                    v = "%.3f" % g.verify("p5", t[5], threshold=0.5).score
                except UnknownIdentityError:
                    v = "unknown"
                print(top[0].identity, v, "p5" in g, len(g), flush=True)
            """,
            str(p),
        )
        try:
            reader.stdin.write("go\n")
            reader.stdin.flush()
            assert reader.stdout.readline().split() == ["p5", "1.000", "True", str(N)]
            writer.remove("p5")
            for _ in range(3):
                reader.stdin.write("go\n")
                reader.stdin.flush()
                top, v, contained, n = reader.stdout.readline().split()
                assert top != "p5" and v == "unknown" and contained == "False"
                assert int(n) == N - 1
            writer.enroll("late", t[5])  # later commits are seen too
            reader.stdin.write("go\n")
            reader.stdin.flush()
            assert reader.stdout.readline().split()[0] == "late"
        finally:
            reader.stdin.close()
            reader.wait(timeout=60)
            err = reader.stderr.read()
            reader.stdout.close()
            reader.stderr.close()
        assert reader.returncode == 0, err


def test_read_only_gallery_refuses_writes_and_creates_nothing(tmp_path):
    p = tmp_path / "g.db"
    with pytest.raises(GalleryFileError):
        Gallery.open(p, read_only=True)
    assert not p.exists()
    t = make(p)
    with Gallery.open(p) as w, Gallery.open(p, read_only=True) as r:  # a reader beside the writer
        assert r.identify(t[3])[0].candidates[0].identity == "p3"
        for call in (
            lambda: r.enroll("x", t[0]),
            lambda: r.remove("p1"),
            lambda: r.calibrate(np.linspace(0, 1, 1000), fmr=0.01),
            r.checkpoint,
        ):
            with pytest.raises(GalleryReadOnlyError):
                call()
        assert "p1" in w and len(w) == N


# --------------------------------------------------------------------------- defect 2
def test_remove_with_a_reader_holding_a_transaction_completes_for_the_caller(tmp_path, caplog):
    p = tmp_path / "g.db"
    t = make(p, backend="binary")
    secret = t[5].tobytes()
    with Gallery.open(p) as g:
        other = sqlite3.connect(p)
        other.execute("BEGIN")
        other.execute("SELECT count(*) FROM templates").fetchone()  # holds a read snapshot
        with caplog.at_level(logging.WARNING, "pyfacematch.gallery"):
            t0 = time.monotonic()
            g.remove("p5")  # committed: must neither raise nor leave p5 searchable
            assert time.monotonic() - t0 < 4.0
        assert "p5" not in g and "p5" not in g.identities()
        assert g.identify(t[5], k=N)[0].candidates[0].identity != "p5"
        with pytest.raises(UnknownIdentityError):
            g.verify("p5", t[5])
        assert g.erasure_pending and g.info()["erasure"]["pending"]
        assert "not yet complete" in caplog.text
        with pytest.raises(UnknownIdentityError):  # a retry says it is gone, as it is
            g.remove("p5")
        other.rollback()
        other.close()
        deadline = time.monotonic() + 30
        while g.erasure_pending:
            assert time.monotonic() < deadline, g.info()["erasure"]
            time.sleep(0.05)
        st = g.info()["erasure"]
        assert st["completed_at"] is not None and st["attempts"] >= 2
        wal = p.with_name(p.name + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0
        for f in tmp_path.iterdir():
            if f.is_file():
                assert secret not in f.read_bytes(), f.name


def test_remove_that_cannot_commit_changes_nothing_and_says_so(tmp_path):
    p = tmp_path / "g.db"
    t = make(p, backend="binary")
    with Gallery.open(p) as g:
        other = sqlite3.connect(p, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        try:
            with pytest.raises(GalleryFileError) as ei:
                g.remove("p5")
            assert "nothing changed" in str(ei.value) and "still enrolled" in str(ei.value)
            assert "p5" in g and g.identify(t[5])[0].candidates[0].identity == "p5"
            assert not g.erasure_pending
        finally:
            other.execute("ROLLBACK")
            other.close()
        g.remove("p5")  # the retry works
        assert "p5" not in g


# --------------------------------------------------------------------------- defect 3
@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_crafted_checkpoint_name_never_deletes_outside_files(tmp_path, kind):
    p = tmp_path / "g.db"
    make(p)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    name = "../victim.txt" if kind == "relative" else os.fspath(victim)
    con = sqlite3.connect(p)
    con.execute("UPDATE checkpoints SET file=?", (name,))
    con.commit()
    con.close()
    with Gallery.open(p) as g:  # open, remove and close all used to unlink it
        g.remove("p1")
        g.info()
    assert victim.read_text() == "keep me"


def test_symlinked_index_folder_is_not_emptied(tmp_path):
    p = tmp_path / "g.db"
    make(p)
    d = p.with_name(p.name + ".index")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for f in d.iterdir():
        os.replace(f, elsewhere / f.name)  # even files named like checkpoints
    (elsewhere / "precious.txt").write_text("x")
    d.rmdir()
    d.symlink_to(elsewhere, target_is_directory=True)
    before = sorted(os.listdir(elsewhere))
    with Gallery.open(p) as g:
        g.remove("p2")
        g.enroll("q", people(9, 1)[0])
    assert sorted(os.listdir(elsewhere)) == before


def test_user_files_in_the_index_folder_are_kept(tmp_path):
    p = tmp_path / "g.db"
    make(p)
    d = p.with_name(p.name + ".index")
    (d / "notes.txt").write_text("mine")
    (d / "flat-g1-nothex!.faiss").write_text("mine too")
    with Gallery.open(p) as g:
        g.remove("p3")
        g.checkpoint()
    assert (d / "notes.txt").read_text() == "mine"
    assert (d / "flat-g1-nothex!.faiss").read_text() == "mine too"


# --------------------------------------------------------------------------- defect 4
def test_temporary_file_left_by_sigkill_during_checkpoint_is_swept(tmp_path):
    p = tmp_path / "g.db"
    t = make(p, n=300)
    child = _child(
        """
        import os, sys, time
        from pyfacematch.gallery import Gallery
        g = Gallery.open(sys.argv[1])
        g.enroll("new", g.templates("p0"))
        def stall(*a, **k):
            print("ready", flush=True)
            time.sleep(600)
        os.replace = stall  # killed between writing the temporary file and renaming it
        g.checkpoint()
        """,
        str(p),
    )
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    d = p.with_name(p.name + ".index")
    tmp = [f for f in os.listdir(d) if ".faiss.tmp-" in f]
    assert len(tmp) == 1
    leftover = (d / tmp[0]).read_bytes()
    assert t[7].tobytes()[:64] in leftover  # it holds every template
    with Gallery.open(p) as g:  # swept when a writer opens
        assert not [f for f in os.listdir(d) if ".tmp-" in f]
        (d / tmp[0]).write_bytes(leftover)  # and before an erasure completes
        g.remove("p7")
        assert not [f for f in os.listdir(d) if ".tmp-" in f]
        assert not g.erasure_pending
        for f in os.listdir(d):
            assert t[7].tobytes()[:64] not in (d / f).read_bytes()


# --------------------------------------------------------------------------- defect 8
def _checkpoint(p):
    con = sqlite3.connect(p)
    row = con.execute("SELECT file, sha256 FROM checkpoints").fetchone()
    con.close()
    return row


def test_key_file_is_private_and_refused_when_others_can_read_it(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    p = tmp_path / "g.db"
    make(p)
    key = tmp_path / "g.db.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes() not in p.read_bytes()  # the database does not hold the key
    os.chmod(key, 0o644)
    with pytest.raises(KeyFileError) as ei:
        Gallery.open(p)
    assert "chmod 600" in str(ei.value)
    os.chmod(key, 0o600)
    with Gallery.open(p) as g:
        assert g.info()["checkpoint"]["file"] == _checkpoint(p)[0]  # authenticated and used


def test_checkpoint_with_a_recomputed_sha256_is_not_trusted(tmp_path, caplog):
    """Whoever can write the database used to be able to re-sign a poisoned checkpoint."""
    p = tmp_path / "g.db"
    t = make(p, n=300)
    f, _ = _checkpoint(p)
    path = p.with_name(p.name + ".index") / f
    data = bytearray(path.read_bytes())
    pos = bytes(data).find(t[4].tobytes()[:64])
    assert pos > 0
    data[pos : pos + 64] = t[5].tobytes()[:64]  # hide p4 behind p5's vector
    path.write_bytes(bytes(data))
    con = sqlite3.connect(p)
    con.execute("UPDATE checkpoints SET sha256=?", (hashlib.sha256(bytes(data)).hexdigest(),))
    con.commit()
    con.close()
    with caplog.at_level(logging.WARNING, "pyfacematch.gallery"), Gallery.open(p) as g:
        assert "not used" in caplog.text
        assert g.info()["checkpoint"]["file"] is None
        assert g.info()["checkpoint"]["not_used_because"]
        g.verify_integrity()
    with Gallery.open(p) as g:  # re-saved from the store, under the key
        assert g.info()["checkpoint"]["file"] is not None


def test_checkpoint_made_under_another_key_is_rebuilt(tmp_path, monkeypatch, caplog):
    p = tmp_path / "g.db"
    monkeypatch.setenv(ENV_VAR, "a" * 40)
    make(p)
    assert not (tmp_path / "g.db.key").exists()  # the environment variable is the key
    with Gallery.open(p) as g:
        assert g.info()["checkpoint"]["file"] is not None
    monkeypatch.setenv(ENV_VAR, "b" * 40)
    with caplog.at_level(logging.WARNING, "pyfacematch.gallery"), Gallery.open(p) as g:
        assert g.info()["checkpoint"]["file"] is None and "checksum" in caplog.text
        assert len(g) == N
    monkeypatch.setenv(ENV_VAR, "short")
    with pytest.raises(KeyFileError):
        Gallery.open(p)


def test_fifo_checkpoint_does_not_hang_open(tmp_path):
    p = tmp_path / "g.db"
    make(p)
    f, _ = _checkpoint(p)
    path = p.with_name(p.name + ".index") / f
    path.unlink()
    os.mkfifo(path)
    child = _child(
        """
        import sys
        from pyfacematch.gallery import Gallery
        g = Gallery.open(sys.argv[1])
        print(len(g), g.info()["checkpoint"]["not_used_because"], flush=True)
        g.close()
        """,
        str(p),
    )
    try:
        out, err = child.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        pytest.fail("opening a gallery whose checkpoint is a FIFO hung")
    assert child.returncode == 0, err
    assert out.startswith(f"{N} ") and "regular file" in out


def test_huge_checkpoint_is_refused_before_reading(tmp_path, monkeypatch):
    p = tmp_path / "g.db"
    make(p)
    f, _ = _checkpoint(p)
    path = p.with_name(p.name + ".index") / f
    os.truncate(path, 3 << 30)  # sparse 3 GB
    reads = []
    real = os.readv
    monkeypatch.setattr(os, "readv", lambda fd, bufs: reads.append(1) or real(fd, bufs))
    with Gallery.open(p) as g:
        assert "bytes on disk" in g.info()["checkpoint"]["not_used_because"]
        assert len(g) == N
    assert not reads


def test_checkpoint_faiss_cannot_load_is_rebuilt_not_fatal(tmp_path, monkeypatch, caplog):
    import faiss

    p = tmp_path / "g.db"
    t = make(p)

    def absurd(*a, **k):
        raise MemoryError("std::bad_alloc")  # what a crafted IVF nlist does

    monkeypatch.setattr(faiss, "deserialize_index", absurd)
    with caplog.at_level(logging.WARNING, "pyfacematch.gallery"), Gallery.open(p) as g:
        why = g.info()["checkpoint"]["not_used_because"]
        assert "bad_alloc" in why and ("out of memory" in why or "could not read" in why)
        assert g.identify(t[3])[0].candidates[0].identity == "p3"


def test_failed_tuning_save_is_reported(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(gallery_mod, "SMALL_GALLERY", 16)
    store_cls = gallery_mod.Store
    real = store_cls.set_meta

    def refuse(self, key, value):
        if key.startswith("tuning:"):
            raise GalleryFileError("disk full (simulated)")
        return real(self, key, value)

    monkeypatch.setattr(store_cls, "set_meta", refuse)
    with caplog.at_level(logging.WARNING, "pyfacematch.gallery"):
        g = Gallery.open(tmp_path / "g.db", dim=D, backend="binary", tune_probes=32)
        g.enroll_many([f"p{j}" for j in range(64)], people(1, 64))
    info = g.info()
    assert info["tuning_saved"] is False and "disk full" in info["tuning_error"]
    assert "could not be saved" in caplog.text
    monkeypatch.setattr(store_cls, "set_meta", real)
    g.rebuild_index()
    assert g.info()["tuning_saved"] is True
    g.close()


# --------------------------------------------------------------------------- boundary
def test_identify_and_verify_accept_a_score_equal_to_the_threshold():
    g = Gallery(dim=4, backend="exact")
    g.enroll("a", np.array([1.0, 0.0, 0.0, 0.0], np.float32))
    probe = np.array([0.5, 0.5, 0.5, 0.5], np.float32)  # unit norm, cosine exactly 0.5
    v = g.verify("a", probe, threshold=0.5)
    assert v.score == 0.5 and v.decision.accepted is True
    assert g.verify("a", probe, threshold=float(np.nextafter(0.5, 1.0))).decision.accepted is False
    r = g.identify(probe, threshold=0.5)[0]
    assert r.candidates[0].score == 0.5 and r.decision.accepted is True and r.identity == "a"
    arr = g.identify_arrays(probe, threshold=0.5)
    assert arr.accepted.tolist() == [True]
    above = g.identify(probe, threshold=float(np.nextafter(0.5, 1.0)))[0]
    assert above.decision.accepted is False and above.identity is None


def test_removal_is_atomic_for_concurrent_searches_of_a_read_only_gallery(tmp_path):
    """Readers in threads of a read-only gallery see a removal entirely or not at all."""
    p = tmp_path / "g.db"
    t = make(p)
    errors: list[BaseException] = []
    with Gallery.open(p) as w, Gallery.open(p, read_only=True) as r:
        removed = threading.Event()

        def search() -> None:
            try:
                for _ in range(200):
                    seen_removed = removed.is_set()
                    top = r.identify(t[6])[0].candidates[0].identity
                    if seen_removed:
                        assert top != "p6"
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=search) for _ in range(3)]
        for th in threads:
            th.start()
        time.sleep(0.05)
        w.remove("p6")
        removed.set()
        for th in threads:
            th.join()
    assert not errors, errors[0]


def test_an_array_passed_as_an_identity_id_is_not_printed_in_the_error(tmp_path):
    # verify(probe, "p4") with the arguments swapped: the message must not carry the template
    from pyfacematch.errors import InputError

    p = tmp_path / "g.db"
    t = make(p, backend="binary")
    with Gallery.open(p) as g:
        with pytest.raises(InputError) as ei:
            g.verify(t[4], "p4")
        msg = str(ei.value)
        assert "shape" in msg and f"{t[4][0]:.4f}"[:6] not in msg
        assert repr(float(t[4][0]))[:8] not in msg
