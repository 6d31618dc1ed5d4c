"""Encryption at rest: AES-256-GCM rows and checkpoints, envelope keys, rotation under SIGKILL."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pyfacematch.errors import KeyFileError, TamperedRecordError, WrongKeyError
from pyfacematch.gallery import Gallery
from pyfacematch.gallery.secret import ENV_VAR, FileKeyProvider

DIM = 32


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _make(path: Path, n: int = 40, t: int = 2, backend: str = "exact", **kw: object) -> Gallery:
    rng = np.random.default_rng(7)
    g = Gallery(DIM, path=path, backend=backend, encrypt=True, **kw)  # type: ignore[arg-type]
    g.enroll_many([f"id{i:04d}" for i in range(n) for _ in range(t)], _unit(rng, n * t))
    return g


def _answers(g: Gallery) -> list[tuple[tuple[str, float], ...]]:
    probes = _unit(np.random.default_rng(99), 12)
    out = []
    for r in g.identify(probes, k=5):
        out.append(tuple((c.identity, round(float(c.score), 6)) for c in r.candidates))
    return out


def _rows(path: Path) -> list[tuple[int, int, bytes]]:
    con = sqlite3.connect(path)
    try:
        return [tuple(r) for r in con.execute("SELECT tid, identity, data FROM templates")]
    finally:
        con.close()


def test_rows_are_ciphertexts_that_differ_on_every_write(tmp_path: Path) -> None:
    x = _unit(np.random.default_rng(1), 1)
    g = Gallery(DIM, path=tmp_path / "g.db", encrypt=True, backend="exact")
    for i in range(4):  # the same template written four times
        g.enroll(f"p{i}", x)
    g.close()
    blobs = [r[2] for r in _rows(tmp_path / "g.db")]
    assert len(blobs) == 4 and len(set(blobs)) == 4
    assert len({b[12:24] for b in blobs}) == 4  # four different nonces
    raw = x.tobytes()
    for f in tmp_path.iterdir():
        if f.is_file():
            assert raw not in f.read_bytes(), f.name
            assert raw[:64] not in f.read_bytes(), f.name
    with Gallery.open(tmp_path / "g.db") as h:
        assert h.encrypted
        np.testing.assert_array_equal(h.templates("p2"), x)


def test_encrypted_answers_equal_plain_answers(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    ids, x = [f"id{i // 2}" for i in range(60)], _unit(rng, 60)
    plain = Gallery(DIM, backend="exact")
    plain.enroll_many(ids, x)
    with Gallery(DIM, path=tmp_path / "e.db", encrypt=True, backend="exact") as g:
        g.enroll_many(ids, x)
    with Gallery.open(tmp_path / "e.db") as g:
        assert _answers(g) == _answers(plain)


def test_masks_are_encrypted_and_restored(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    blocks = [0, 8, 16, 32]
    masks = np.array([0b011, 0b111, 0b101], np.uint64)
    with Gallery(DIM, path=tmp_path / "m.db", blocks=blocks, encrypt=True) as g:
        g.enroll("a", _unit(rng, 3), masks=masks)
    con = sqlite3.connect(tmp_path / "m.db")
    assert [r[0] for r in con.execute("SELECT mask FROM templates")] == [None] * 3
    con.close()
    with Gallery.open(tmp_path / "m.db") as g:
        np.testing.assert_array_equal(g._store.load_all()[3], masks)


def _snapshot(path: Path) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        return [tuple(r) for r in con.execute("SELECT * FROM templates ORDER BY tid")] + [
            tuple(r) for r in con.execute("SELECT * FROM meta ORDER BY key")
        ]
    finally:
        con.close()


def _tamper(path: Path, sql: str, *args: object) -> None:
    con = sqlite3.connect(path)
    con.execute(sql, args)
    con.commit()
    con.close()


@pytest.mark.parametrize("kind", ["flip", "swap", "replay-row", "replay-gallery"])
def test_tampered_rows_give_a_typed_error_and_change_nothing(tmp_path: Path, kind: str) -> None:
    db = tmp_path / "g.db"
    _make(db, n=6).close()
    rows = _rows(db)
    if kind == "flip":
        b = bytearray(rows[2][2])
        b[40] ^= 0x04
        _tamper(db, "UPDATE templates SET data=? WHERE tid=?", bytes(b), rows[2][0])
    elif kind == "swap":  # two rows of different identities exchange their ciphertexts
        _tamper(db, "UPDATE templates SET data=? WHERE tid=?", rows[0][2], rows[2][0])
        _tamper(db, "UPDATE templates SET data=? WHERE tid=?", rows[2][2], rows[0][0])
    elif kind == "replay-row":  # an old row copied in as a new template of its identity
        _tamper(db, "INSERT INTO templates(identity, data) VALUES (?, ?)", rows[0][1], rows[0][2])
    else:  # the same identity and template id in another gallery under the same key
        other = tmp_path / "other.db"
        _make(other, n=6, key_provider=FileKeyProvider(tmp_path / "g.db.key")).close()
        foreign = _rows(other)[0][2]
        _tamper(db, "UPDATE templates SET data=? WHERE tid=?", foreign, rows[0][0])
    before = _snapshot(db)
    with pytest.raises(TamperedRecordError, match="restore"):
        Gallery.open(db)
    assert _snapshot(db) == before


def test_wrong_key_and_missing_key_are_refused_and_change_nothing(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    _make(db, n=5).close()
    before = _snapshot(db)
    key = tmp_path / "g.db.key"
    good = key.read_bytes()
    key.write_bytes(b"f" * 64 + b"\n")
    with pytest.raises(WrongKeyError, match="another master key"):
        Gallery.open(db)
    key.unlink()
    with pytest.raises(KeyFileError, match="no key was found"):
        Gallery.open(db)
    assert not key.exists()  # a missing key is not replaced by a new one
    assert _snapshot(db) == before
    key.write_bytes(good)
    key.chmod(0o600)
    with Gallery.open(db) as g:
        assert len(g) == 5


def test_env_key_is_a_master_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "k" * 40)
    _make(tmp_path / "g.db", n=3).close()
    assert not (tmp_path / "g.db.key").exists()
    monkeypatch.setenv(ENV_VAR, "j" * 40)
    with pytest.raises(WrongKeyError):
        Gallery.open(tmp_path / "g.db")
    monkeypatch.setenv(ENV_VAR, "k" * 40)
    with Gallery.open(tmp_path / "g.db") as g:
        assert len(g) == 3


def test_unencrypted_gallery_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "pyfacematch.gallery")
    Gallery(DIM, path=tmp_path / "p.db").close()
    Gallery.open(tmp_path / "p.db").close()
    hits = [r for r in caplog.records if "not encrypted at rest" in r.getMessage()]
    assert len(hits) == 1


def test_master_rotation_rewraps_and_old_key_stops_working(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    g = _make(db, n=20, backend="flat")
    want = _answers(g)
    blobs = [r[2] for r in _rows(db)]
    old = (tmp_path / "g.db.key").read_bytes()
    g.rotate_master_key()
    g.close()
    assert [r[2] for r in _rows(db)] == blobs  # rows untouched: only the data key is rewrapped
    assert (tmp_path / "g.db.key").read_bytes() != old
    assert (tmp_path / "g.db.key").stat().st_mode & 0o777 == 0o600
    with Gallery.open(db) as h:
        assert _answers(h) == want
        assert h.info()["checkpoint"]["not_used_because"] is None
    (tmp_path / "g.db.key").write_bytes(old)
    with pytest.raises(WrongKeyError):
        Gallery.open(db)


def test_data_rotation_reencrypts_every_row_and_checkpoint(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    g = _make(db, n=20, backend="flat")
    g.checkpoint()
    want = _answers(g)
    before = {r[0]: r[2] for r in _rows(db)}
    assert g.rotate_data_key() == 40
    g.close()
    after = {r[0]: r[2] for r in _rows(db)}
    assert before.keys() == after.keys()
    assert all(before[t][4:12] != after[t][4:12] for t in before)  # new key id on every row
    with Gallery.open(db) as h:
        assert _answers(h) == want
        assert h.info()["checkpoint"]["not_used_because"] is None


def test_checkpoint_file_is_encrypted(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    rng = np.random.default_rng(5)
    x = _unit(rng, 50)
    with Gallery(DIM, path=db, backend="flat", encrypt=True) as g:
        g.enroll_many([f"i{i}" for i in range(50)], x)
        g.checkpoint()
    files = list((tmp_path / "g.db.index").iterdir())
    assert files
    for f in files:
        data = f.read_bytes()
        assert x[7].tobytes()[:32] not in data
    with Gallery.open(db) as g:
        assert g.info()["checkpoint"]["not_used_because"] is None


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pyfacematch.gallery import Gallery
    from pyfacematch.security import envelope
    import pyfacematch.gallery.encryption as enc
    enc._BATCH = 7
    target, nth, what, db = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    seen = {"n": 0}
    def step(name):
        if name == target:
            seen["n"] += 1
            if seen["n"] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
    envelope._step = step
    g = Gallery.open(db)
    if what == "master":
        g.rotate_master_key()
    else:
        g.rotate_data_key()
    os.kill(os.getpid(), signal.SIGKILL)
    """
)

_POINTS = [
    ("master", "master:wrapped", 1),
    ("master", "master:keyfile", 1),
    ("master", "master:retired", 1),
    ("data", "data:added", 1),
    ("data", "data:batch", 1),
    ("data", "data:batch", 3),
    ("data", "data:retired", 1),
]


@pytest.mark.parametrize(("what", "point", "nth"), _POINTS)
def test_rotation_survives_sigkill_at_every_step(
    tmp_path: Path, what: str, point: str, nth: int
) -> None:
    db = tmp_path / "g.db"
    g = _make(db, n=12, backend="flat")  # 24 rows: several batches of 7
    g.checkpoint()
    want = _answers(g)
    g.close()
    old_key = (tmp_path / "g.db.key").read_bytes()
    env = dict(os.environ)
    env.pop(ENV_VAR, None)
    p = subprocess.run(
        [sys.executable, "-c", _CHILD, point, str(nth), what, str(db)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()[-2000:]
    with Gallery.open(db) as h:  # whatever key file is on disk now: old or new
        assert _answers(h) == want
        ring = h._ring
        assert ring is not None and len(ring.keys) == 1 and len(ring.wraps) == 1
    if what == "master" and point == "master:wrapped":
        assert (tmp_path / "g.db.key").read_bytes() == old_key  # rolled back
