"""Small holes of Gallery (issue 12, defect 10): typed errors before anything is written,
derived data that is rebuilt, close() racing writers, owner-only index files."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import threading
import time

import numpy as np
import pytest

import pyfacematch as pf
from pyfacematch.errors import (
    BackendOptionError,
    GalleryClosedError,
    InputError,
    NonFiniteError,
    PyFaceMatchError,
)
from pyfacematch.gallery.quarantine import TemplateQuarantineWarning
from pyfacematch.gallery.store import Store

D = 16


def _unit(rng: np.random.Generator, n: int, d: int = D) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------ options refused before any file
@pytest.mark.parametrize(
    "kwargs, err",
    [
        ({"dim": 10**12}, InputError),
        ({"min_fraction": 5}, InputError),
        ({"min_fraction": float("nan")}, NonFiniteError),
        ({"tune_probes": 0}, InputError),
        ({"tune_probes": -5}, InputError),
        ({"tune_probes": 2.5}, InputError),
        ({"backend": "binary", "backend_options": {"safety": float("nan")}}, BackendOptionError),
        ({"backend": "binary", "backend_options": {"safety": 0.25}}, BackendOptionError),
        ({"backend_options": "hnsw_m=8"}, InputError),
        ({"recall_target": float("nan")}, InputError),
        ({"recall_target": "high"}, InputError),
        ({"seed": -1}, InputError),
        ({"backend": "no-such-backend"}, InputError),
    ],
)
def test_bad_options_are_typed_and_leave_no_file(tmp_path, kwargs, err):
    kw = {"dim": D, **kwargs}
    with pytest.raises(err) as e:
        pf.Gallery(kw.pop("dim"), path=tmp_path / "g.db", **kw)
    assert isinstance(e.value, PyFaceMatchError)
    assert os.listdir(tmp_path) == []  # nothing created, so nothing left unopenable
    pf.Gallery(D, path=tmp_path / "g.db").close()  # the path is still usable


def test_tune_probes_and_min_fraction_checked_when_set():
    g = pf.Gallery(D)
    for bad in (0, -1, True, None):
        with pytest.raises(InputError):
            g.tune_probes = bad
    with pytest.raises(InputError):
        g.min_fraction = 1.5
    g.tune_probes, g.min_fraction = 7, 0.5
    assert (g.tune_probes, g.min_fraction) == (7, 0.5)


def test_enroll_many_refuses_a_str_as_ids():
    g = pf.Gallery(D)
    t = _unit(np.random.default_rng(0), 3)
    for ids in ("xyz", b"xyz"):
        with pytest.raises(InputError, match="single"):
            g.enroll_many(ids, t)
    with pytest.raises(InputError):
        g.enroll_many(3, t)
    assert len(g) == 0 and g.n_templates == 0
    g.enroll_many(["x", "y", "z"], t)
    assert g.identities() == ["x", "y", "z"]


def test_ids_with_lone_surrogates_are_typed_errors(tmp_path):
    g = pf.Gallery(D, path=tmp_path / "g.db", backend="exact")
    t = _unit(np.random.default_rng(1), 2)
    bad = "caf\udce9"  # os.fsdecode of a Latin-1 file name
    calls = [
        lambda: g.enroll(bad, t[0]),
        lambda: g.enroll_many(["ok", bad], t),
        lambda: g.enroll("ok", t[0], consent="gr\ud800nted"),
        lambda: g.verify(bad, t[0]),
        lambda: g.remove(bad),
        lambda: g.record(bad),
    ]
    for call in calls:
        with pytest.raises(InputError, match="UTF-8") as e:
            call()
        assert not isinstance(e.value, UnicodeError)
    assert len(g) == 0 and g._store.counts() == (0, 0)
    g.close()


# ------------------------------------------------------------ close() racing writers
def test_writer_waiting_while_close_runs_gets_a_typed_error():
    g = pf.Gallery(D)
    t = _unit(np.random.default_rng(2), 1)
    outcome: list[BaseException | None] = []

    def writer() -> None:
        try:
            g.enroll("late", t)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test inspects the type
            outcome.append(exc)

    g._wmutex.acquire()  # a write in progress: the writer below passes its check, then waits
    w = threading.Thread(target=writer)
    w.start()
    time.sleep(0.1)
    c = threading.Thread(target=g.close)
    c.start()
    c.join(0.3)  # before the fix, close() finished here and the writer hit a closed store
    g._wmutex.release()
    w.join(5)
    c.join(5)
    assert not w.is_alive() and not c.is_alive()
    assert outcome[0] is None or isinstance(outcome[0], GalleryClosedError), outcome
    with pytest.raises(GalleryClosedError, match="closed"):
        g.enroll("after", t)
    with pytest.raises(GalleryClosedError):
        g.remove("late")
    g.close()  # idempotent


def test_close_racing_many_writers(tmp_path):
    g = pf.Gallery(D, path=tmp_path / "g.db", backend="exact")
    rng = np.random.default_rng(3)
    t = _unit(rng, 400)
    errors: list[BaseException] = []
    done: list[str] = []  # list.append is atomic: acknowledged enrollments

    def writer(k: int) -> None:
        for i in range(100):
            try:
                g.enroll(f"w{k}-{i}", t[(k * 100 + i) % 400])
                done.append(f"w{k}-{i}")
            except GalleryClosedError:
                return
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    ws = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for w in ws:
        w.start()
    time.sleep(0.05)
    closers = [threading.Thread(target=g.close) for _ in range(3)]
    for c in closers:
        c.start()
    for th in ws + closers:
        th.join(20)
    assert errors == []
    s2 = Store(tmp_path / "g.db")
    assert sorted(s2.identity_names()) == sorted(done)  # every acknowledged one, no other
    s2.close()


def test_store_used_after_close_is_typed(tmp_path):
    s = Store(tmp_path / "g.db", dim=4)
    s.close()
    with pytest.raises(GalleryClosedError):
        s.insert_identities(
            [("a", np.eye(4, dtype=np.float32)[:1], None, None)], on_duplicate="refuse"
        )
    with pytest.raises(GalleryClosedError):
        s.counts()
    s.close()


# ------------------------------------------------------------ remove() after its commit
def test_remove_with_a_folder_where_a_checkpoint_is_expected(tmp_path, caplog):
    p = tmp_path / "g.db"
    t = _unit(np.random.default_rng(4), 20)
    with pf.Gallery(D, path=p, backend="flat") as g:
        g.enroll_many([f"p{i}" for i in range(20)], t)
    (f,) = (tmp_path / "g.db.index").iterdir()
    f.unlink()
    f.mkdir()  # a folder where the checkpoint file should be
    (f / "keep.txt").write_text("not the gallery's")
    with caplog.at_level(logging.WARNING, "pyfacematch.gallery"):
        g = pf.Gallery.open(p)
        g.remove("p3")  # raised IsADirectoryError after the delete was committed
    assert "p3" not in g and len(g) == 19
    assert all(r.candidates[0].identity != "p3" for r in g.identify(t[3:4], k=1))
    assert (f / "keep.txt").read_text() == "not the gallery's"  # not ours: left alone
    msgs = [r.getMessage() for r in caplog.records]
    assert any("not a regular file" in m or "could not be deleted" in m for m in msgs)
    g.close()
    with pf.Gallery.open(p) as g:
        assert "p3" not in g and len(g) == 19


# ------------------------------------------------------------ derived data rebuilt
def _binary_gallery(tmp_path, n=300, d=32):
    rng = np.random.default_rng(5)
    t = _unit(rng, n, d)
    p = tmp_path / "b.db"
    with pf.Gallery(d, path=p, backend="binary", tune_probes=200) as g:
        g.enroll_many([f"p{i}" for i in range(n)], t)
        assert g.index_info()["search"] == "shortlist+exact-rerank"
    noise = rng.standard_normal((n, d)) * 0.02
    probes = t + noise.astype(np.float32)
    return p, t, probes


def _set_tuning(p, fn):
    con = sqlite3.connect(p)
    (text,) = con.execute("SELECT value FROM meta WHERE key='tuning:binary'").fetchone()
    con.execute("UPDATE meta SET value=? WHERE key='tuning:binary'", (fn(text),))
    con.commit()
    con.close()


def test_malformed_tuning_json_is_rebuilt_not_fatal(tmp_path):
    p, t, probes = _binary_gallery(tmp_path)
    _set_tuning(p, lambda text: text[: len(text) // 2])  # truncated JSON
    with pf.Gallery.open(p) as g:  # raised JSONDecodeError: the gallery would not open
        top = [r.candidates[0].identity for r in g.identify(probes, k=1)]
        assert top == [f"p{i}" for i in range(len(t))]
        assert g.index_info()["tuned_at_size"] == len(t)  # re-tuned
    with sqlite3.connect(p) as con:
        (text,) = con.execute("SELECT value FROM meta WHERE key='tuning:binary'").fetchone()
    assert json.loads(text)["tuned_size"] == len(t)  # and stored again, well formed


def test_nan_tuning_centre_is_not_used(tmp_path):
    p, t, probes = _binary_gallery(tmp_path)

    def nan_centre(text: str) -> str:
        obj = json.loads(text)
        obj["center"] = [float("nan")] * len(obj["center"])
        return json.dumps(obj)

    _set_tuning(p, nan_centre)
    with pf.Gallery.open(p) as g:
        assert np.isfinite(g._backend.center).all()
        top = [r.candidates[0].identity for r in g.identify(probes, k=1)]
    # before the fix every code was packed around NaN and most top-1 answers were wrong
    assert top == [f"p{i}" for i in range(len(t))]


def test_gallery_reports_quarantined_rows(tmp_path):
    p = tmp_path / "g.db"
    t = _unit(np.random.default_rng(6), 5)
    with pf.Gallery(D, path=p, backend="exact") as g:
        g.enroll_many(list("abcde"), t)
        assert g.quarantined == []
    with sqlite3.connect(p) as con:
        con.execute(
            "UPDATE templates SET data=? WHERE tid=2", (np.full(D, 1e30, np.float32).tobytes(),)
        )
    with pytest.warns(TemplateQuarantineWarning, match="'b'"):
        g = pf.Gallery.open(p)
    assert [(q.tid, q.identity) for q in g.quarantined] == [(2, "b")]
    assert "b" not in g and len(g) == 4
    g.remove("b")
    assert g.quarantined == []
    g.close()
    with pf.Gallery.open(p) as g:
        assert g.quarantined == [] and len(g) == 4


# ------------------------------------------------------------ file modes of the index folder
def test_index_folder_and_checkpoints_are_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        with pf.Gallery(D, path=tmp_path / "g.db", backend="flat") as g:
            g.enroll_many(["a", "b"], _unit(np.random.default_rng(7), 2))
    finally:
        os.umask(old)
    d = tmp_path / "g.db.index"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    files = list(d.iterdir())
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert stat.S_IMODE((tmp_path / "g.db").stat().st_mode) == 0o600
