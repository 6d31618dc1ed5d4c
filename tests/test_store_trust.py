"""The store trusts nothing it reads: template rows, derived parameters, the WAL, file modes."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import struct

import numpy as np
import pytest

import pyfacematch as pf
from pyfacematch.errors import (
    GalleryFileError,
    InputError,
    NonFiniteError,
    PyFaceMatchError,
    ZeroVectorError,
)
from pyfacematch.gallery.quarantine import TemplateQuarantineWarning
from pyfacematch.gallery.store import MAX_DIM, CheckpointRecord, Store
from pyfacematch.gallery.wal import scan_wal

D = 32


def _unit(rng: np.random.Generator, n: int, d: int = D) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _gallery_file(tmp_path, n=40, seed=0):
    rng = np.random.default_rng(seed)
    t = _unit(rng, n)
    p = tmp_path / "g.db"
    with pf.Gallery(D, path=p, backend="exact") as g:
        g.enroll_many([f"p{i}" for i in range(n)], t)
    return p, t


def _set_blob(p, name: str, blob) -> int:
    con = sqlite3.connect(p)
    tid = con.execute(
        "SELECT t.tid FROM templates t JOIN identities i ON i.id=t.identity WHERE i.name=?",
        (name,),
    ).fetchone()[0]
    con.execute("UPDATE templates SET data=? WHERE tid=?", (blob, tid))
    con.commit()
    con.close()
    return int(tid)


# ----------------------------------------------------------------- defect 7: template rows
def test_bad_rows_are_quarantined_named_and_never_searched(tmp_path):
    p, t = _gallery_file(tmp_path)
    huge = (t[3].astype(np.float64) * 1e30).astype(np.float32).tobytes()
    nan = t[5].copy()
    nan[7] = np.nan
    bad = {
        _set_blob(p, "p3", huge): ("p3", "norm"),
        _set_blob(p, "p5", nan.tobytes()): ("p5", "non-finite"),
        _set_blob(p, "p8", np.zeros(D, np.float32).tobytes()): ("p8", "zero"),
        _set_blob(p, "p9", b"\x00\x01\x02"): ("p9", "length"),
        _set_blob(p, "p11", "a text value"): ("p11", "type"),
    }
    with pytest.warns(TemplateQuarantineWarning, match="5 template") as rec:
        g = pf.Gallery.open(p)
    assert isinstance(rec[0].message, PyFaceMatchError)
    try:
        got = {q.tid: (q.identity, q.reason.split(":")[0]) for q in g._store.quarantined}
        assert got == bad
        assert len(g) == 35 and g.n_templates == 35
        g.verify_integrity()  # store counts and digests leave quarantined rows out
        # identify does not raise (one NaN row made every exact identify raise) and the 1e30
        # row never wins: the answer is the brute-force top-1 over the healthy rows
        rng = np.random.default_rng(7)
        probes = _unit(rng, 200)
        live = [i for i in range(40) if f"p{i}" not in {v[0] for v in bad.values()}]
        ref = np.asarray(live)[
            np.argmax(probes.astype(np.float64) @ t[live].T.astype(np.float64), 1)
        ]
        res = g.identify(probes, k=3, threshold=0.9)
        assert [r.candidates[0].identity for r in res] == [f"p{i}" for i in ref]
        assert not any(
            c.identity in ("p3", "p5", "p8", "p9", "p11") for r in res for c in r.candidates
        )
        assert sum(r.identity is not None for r in res) == 0  # random probes: nobody accepted
        g.remove("p3")  # its quarantined row goes too
        assert {q.identity for q in g._store.quarantined} == {"p5", "p8", "p9", "p11"}
        g.verify_integrity()
    finally:
        g.close()
    con = sqlite3.connect(p)
    assert con.execute("SELECT count(*) FROM identities WHERE name='p3'").fetchone() == (0,)
    con.close()


def test_bad_mask_is_quarantined(tmp_path):
    p = tmp_path / "m.db"
    s = Store(p, dim=4, blocks=[0, 2, 4])
    e = np.eye(4, dtype=np.float32)
    s.insert_identities(
        [
            ("a", e[:1], np.array([3], np.uint64), None),
            ("b", e[1:2], np.array([1], np.uint64), None),
        ],
        on_duplicate="refuse",
    )
    s.close()
    con = sqlite3.connect(p)
    con.execute("UPDATE templates SET mask=? WHERE tid=2", (4,))  # a block the gallery lacks
    con.commit()
    con.close()
    s = Store(p)
    with pytest.warns(TemplateQuarantineWarning, match="'b'"):
        tids, names, _, masks = s.load_all()
    assert names == ["a"] and masks.tolist() == [3] and s.quarantined[0].reason.startswith("mask")
    assert s.counts() == (1, 1)
    s.close()


def test_store_refuses_bad_templates_before_writing(tmp_path):
    s = Store(tmp_path / "g.db", dim=4)
    e = np.eye(4, dtype=np.float32)
    cases = [
        (np.zeros((1, 4), np.float32), ZeroVectorError),
        (np.array([[np.nan, 0, 0, 1]], np.float32), NonFiniteError),
        (e[:1] * 1e30, InputError),
        (e[:1] * 0.5, InputError),
        (e[:1, :3].copy(), InputError),
    ]
    for tm, err in cases:
        with pytest.raises(err):
            s.insert_identities(
                [("ok", e[:1], None, None), ("x", tm, None, None)], on_duplicate="refuse"
            )
    assert s.counts() == (0, 0) and s.generation == 0
    s.close()


# ----------------------------------------------------------------- defect 9: derived data
@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[1, 2]",
        '{"depth": NaN}',
        '{"center": [NaN, 0, 0, 0]}',
        '{"center": [0.5, 0.5]}',
        '{"center": [1e30, 0, 0, 0]}',
        '{"depth": -3}',
        '{"depth": 1e400}',
        '{"tuned_size": 10000000000000000000000}',
        '{"measured_recall": 7}',
    ],
)
def test_malformed_params_are_treated_as_absent(tmp_path, text):
    s = Store(tmp_path / "g.db", dim=4)
    s.set_meta("tuning:binary", text)
    assert s.get_params("tuning:binary") is None
    s.set_meta("tuning:binary", '{"depth": 5, "center": [0.5, 0, 0, -1], "measured_recall": 1}')
    assert s.get_params("tuning:binary") == {
        "depth": 5,
        "center": [0.5, 0, 0, -1],
        "measured_recall": 1,
    }
    assert s.get_params("tuning:absent") is None
    s.close()


def test_non_finite_params_are_not_written(tmp_path):
    s = Store(tmp_path / "g.db", dim=2)
    with pytest.raises(InputError, match="non-finite"):
        s.set_params("tuning:binary", {"center": [float("nan"), 0.0]})
    with pytest.raises(InputError):
        s.set_checkpoint(CheckpointRecord("flat", "f", "0" * 64, 0, 0, "d", {"x": float("inf")}))
    assert s.get_params("tuning:binary") is None and s.get_checkpoint("flat") is None
    s.set_params("tuning:binary", {"depth": 3})
    assert s.get_params("tuning:binary") == {"depth": 3}
    s.close()


def test_malformed_checkpoint_record_is_treated_as_absent(tmp_path):
    p = tmp_path / "g.db"
    s = Store(p, dim=2)
    s.set_checkpoint(CheckpointRecord("flat", "f.faiss", "0" * 64, 1, 0, "d", {"depth": 4}))
    assert s.get_checkpoint("flat").params == {"depth": 4}
    for sql, args in [
        ("UPDATE checkpoints SET params=?", ("{broken",)),
        ("UPDATE checkpoints SET params=?", ('{"depth": NaN}',)),
        ("UPDATE checkpoints SET params='{}', generation=?", ("many",)),
        ("UPDATE checkpoints SET generation=1, file=?", (b"\x00blob",)),
    ]:
        s._con.execute(sql, args)
        assert s.get_checkpoint("flat") is None
    s.close()


# ----------------------------------------------------------------- defect 9: the WAL
def _crashed_copy(tmp_path, commits=12):
    """A gallery file and the -wal a crash would leave (copied while the store is open)."""
    rng = np.random.default_rng(3)
    p = tmp_path / "live.db"
    s = Store(p, dim=D)
    for i in range(commits):
        s.insert_identities([(f"p{i}", _unit(rng, 1), None, None)], on_duplicate="refuse")
    dst = tmp_path / "crashed.db"
    shutil.copy(p, dst)
    shutil.copy(tmp_path / "live.db-wal", tmp_path / "crashed.db-wal")
    s.close()
    return dst


def test_wal_left_by_a_crash_is_replayed_and_checked(tmp_path):
    dst = _crashed_copy(tmp_path)
    rep = scan_wal(tmp_path / "crashed.db-wal")
    assert rep.lost_commits == 0 and rep.valid_frames == rep.frames and rep.valid_commits >= 12
    s = Store(dst)
    assert s.counts() == (12, 12)
    s.close()


def test_damaged_wal_frame_that_would_drop_later_commits_is_refused(tmp_path):
    dst = _crashed_copy(tmp_path)
    wal = tmp_path / "crashed.db-wal"
    data = bytearray(wal.read_bytes())
    page = struct.unpack(">I", data[8:12])[0]
    frames = (len(data) - 32) // (24 + page)
    bad = 2 * frames // 3  # a frame of one of the last inserts
    data[32 + bad * (24 + page) + 24 + 50] ^= 0xFF  # one byte of its page
    wal.write_bytes(bytes(data))
    before = wal.read_bytes()
    with pytest.raises(GalleryFileError, match=r"committed transaction\(s\) lie after"):
        Store(dst)
    assert wal.read_bytes() == before  # nothing changed: the evidence is kept
    # SQLite itself sees an older, consistent database: later commits silently gone
    s = Store(dst, integrity_check=False)
    assert s.counts()[0] < 12
    s.close()


# ----------------------------------------------------------------- defect 11: file modes
@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_gallery_files_are_owner_only_whatever_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        p = tmp_path / "g.db"
        g = pf.Gallery(D, path=p, backend="exact")
        g.enroll("a", _unit(np.random.default_rng(0), 1))
        for f in (p, tmp_path / "g.db-wal", tmp_path / "g.db-shm"):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        g.close()
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_existing_world_readable_gallery_is_tightened(tmp_path):
    p = tmp_path / "g.db"
    Store(p, dim=4).close()
    os.chmod(p, 0o644)
    s = Store(p)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    wal = tmp_path / "g.db-wal"
    assert not wal.exists() or stat.S_IMODE(wal.stat().st_mode) == 0o600
    s.close()


# ----------------------------------------------------------------- defect 10: dimension
def test_huge_dim_is_refused_before_any_file_exists(tmp_path):
    p = tmp_path / "g.db"
    for dim in (10**12, MAX_DIM + 1, -1, 0, 2.5):
        with pytest.raises(InputError, match="dim"):
            pf.Gallery(dim, path=p)
        assert sorted(os.listdir(tmp_path)) == []
    with pytest.raises(InputError):
        Store(p, dim=8, blocks=[0, 3, 7])
    assert sorted(os.listdir(tmp_path)) == []
    Store(p, dim=8).close()  # the path is still free to use


def test_crafted_dimension_in_file_is_a_typed_error(tmp_path):
    p = tmp_path / "g.db"
    Store(p, dim=4).close()
    con = sqlite3.connect(p)
    con.execute("UPDATE meta SET value=? WHERE key='dim'", (str(10**12),))
    con.commit()
    con.close()
    with pytest.raises(GalleryFileError, match="dimension"):
        Store(p)
    con = sqlite3.connect(p)
    con.execute("UPDATE meta SET value='4' WHERE key='dim'")
    con.execute("UPDATE meta SET value=? WHERE key='blocks'", (json.dumps([0, 9]),))
    con.commit()
    con.close()
    with pytest.raises(GalleryFileError, match="block"):
        Store(p)
