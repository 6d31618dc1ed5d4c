"""SQLite store: format checks, transactions, erasure, typed errors."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from pyfacematch.errors import (
    DimensionError,
    DuplicateIdentityError,
    FormatVersionError,
    GalleryFileError,
    InputError,
    UnknownIdentityError,
)
from pyfacematch.gallery.atomic import atomic_write, read_verified, sha256_bytes
from pyfacematch.gallery.store import FORMAT_VERSION, Store


def _t(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_round_trip_and_generation(tmp_path):
    rng = np.random.default_rng(1)
    a, b = _t(rng, 2), _t(rng, 1)
    s = Store(tmp_path / "g.db", dim=16)
    tids, gen = s.insert_identities(
        [("alice", a, None, {"age": 30}), ("bob", b, None, None)], on_duplicate="refuse"
    )
    assert gen == 1 and [t.size for t in tids] == [2, 1]
    s.close()
    s = Store(tmp_path / "g.db")
    got_tids, names, mat, masks = s.load_all()
    assert names == ["alice", "alice", "bob"] and masks is None
    np.testing.assert_array_equal(mat, np.vstack([a, b]))
    np.testing.assert_array_equal(got_tids, np.concatenate(tids))
    assert s.identity_record("alice")["metadata"] == {"age": 30}
    assert s.generation == 1 and s.counts() == (2, 3)
    s.close()


def test_masks_round_trip_full_uint64_range(tmp_path):
    s = Store(tmp_path / "g.db", dim=4, blocks=[0, 2, 4])
    masks = np.array([1, 3], np.uint64)
    s.insert_identities(
        [("a", np.eye(4, dtype=np.float32)[:2], masks, None)], on_duplicate="refuse"
    )
    assert s.load_all()[3].tolist() == [1, 3]
    np.testing.assert_array_equal(s.blocks, [0, 2, 4])
    s.close()


def test_duplicate_refused_and_nothing_committed(tmp_path):
    rng = np.random.default_rng(2)
    s = Store(tmp_path / "g.db", dim=16)
    s.insert_identities([("a", _t(rng, 1), None, None)], on_duplicate="refuse")
    with pytest.raises(DuplicateIdentityError):
        # "b" comes first in the same transaction: it must be rolled back too
        s.insert_identities(
            [("b", _t(rng, 1), None, None), ("a", _t(rng, 1), None, None)],
            on_duplicate="refuse",
        )
    assert s.counts() == (1, 1) and not s.has_identity("b") and s.generation == 1
    s.insert_identities([("a", _t(rng, 2), None, None)], on_duplicate="append")
    assert s.counts() == (1, 3)
    s.close()


def test_unknown_identity_delete(tmp_path):
    s = Store(tmp_path / "g.db", dim=16)
    with pytest.raises(UnknownIdentityError) as e:
        s.delete_identity("nobody")
    assert isinstance(e.value, KeyError)
    s.close()


def test_erasure_leaves_no_template_bytes_in_db_or_wal(tmp_path):
    rng = np.random.default_rng(3)
    secret = _t(rng, 1, 64)
    others = _t(rng, 5, 64)
    p = tmp_path / "g.db"
    s = Store(p, dim=64)
    s.insert_identities([("x", secret, None, None)], on_duplicate="refuse")
    s.insert_identities(
        [(f"o{i}", others[i : i + 1], None, None) for i in range(5)], on_duplicate="refuse"
    )
    needle = secret.tobytes()[:64]
    wal = tmp_path / "g.db-wal"
    assert needle in p.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    s.delete_identity("x")
    blob = p.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    assert needle not in blob
    assert not wal.exists() or wal.stat().st_size == 0
    assert s.load_all()[2].shape == (5, 64)
    s.close()


def test_not_a_gallery(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GalleryFileError):
        Store(junk)
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(GalleryFileError):
        Store(empty, dim=4)
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.close()
    with pytest.raises(GalleryFileError) as e:
        Store(other)
    assert isinstance(e.value, OSError)
    with pytest.raises(GalleryFileError):
        Store(tmp_path)  # a folder


def test_unknown_format_version(tmp_path):
    p = tmp_path / "g.db"
    Store(p, dim=4).close()
    con = sqlite3.connect(p)
    con.execute("UPDATE meta SET value=? WHERE key='format_version'", (str(FORMAT_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(FormatVersionError, match="format version"):
        Store(p)


def test_dimension_mismatch_names_both(tmp_path):
    Store(tmp_path / "g.db", dim=8).close()
    with pytest.raises(DimensionError, match=r"dimension 8.*dim=16"):
        Store(tmp_path / "g.db", dim=16)


def test_truncated_file_is_refused(tmp_path):
    rng = np.random.default_rng(4)
    p = tmp_path / "g.db"
    s = Store(p, dim=256)
    s.insert_identities(
        [(f"i{i}", _t(rng, 1, 256), None, None) for i in range(200)], on_duplicate="refuse"
    )
    s.close()
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(GalleryFileError):
        s = Store(p)
        s.load_all()


def test_bad_creation_arguments(tmp_path):
    with pytest.raises(InputError):
        Store(tmp_path / "a.db")  # no dim
    with pytest.raises(InputError):
        Store(tmp_path / "b.db", dim=0)
    with pytest.raises(InputError):
        Store(tmp_path / "c.db", dim=8, blocks=[0, 3, 7])  # does not end at dim


def test_atomic_write_and_checksum(tmp_path):
    p = tmp_path / "f.bin"
    sha = atomic_write(p, b"hello" * 1000)
    assert sha == sha256_bytes(b"hello" * 1000)
    assert read_verified(p, sha) == b"hello" * 1000
    p.write_bytes(b"hello" * 999)  # truncated
    with pytest.raises(GalleryFileError, match="checksum"):
        read_verified(p, sha)
    with pytest.raises(GalleryFileError):
        read_verified(tmp_path / "missing.bin", sha)
    assert [f.name for f in tmp_path.iterdir()] == ["f.bin"]  # no temporary left behind


def test_write_blocked_by_another_writer_is_typed_and_rolled_back(tmp_path):
    p = tmp_path / "g.db"
    s = Store(p, dim=4)
    s._con.execute("PRAGMA busy_timeout=50")
    other = sqlite3.connect(p, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(GalleryFileError, match="another process"):
            s.insert_identities(
                [("a", np.eye(4, dtype=np.float32)[:1], None, None)], on_duplicate="refuse"
            )
    finally:
        other.execute("ROLLBACK")
        other.close()
    s.insert_identities([("a", np.eye(4, dtype=np.float32)[:1], None, None)], on_duplicate="refuse")
    assert s.counts() == (1, 1)
    s.close()
