"""Gallery files that other users can write are refused at open (typed error naming the chmod),
never silently tightened; nothing is read or changed."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from pyfacematch.errors import GalleryFileError, UnsafePermissionsError
from pyfacematch.gallery import Gallery
from pyfacematch.gallery.store import Store

pytestmark = pytest.mark.usefixtures("no_key_env")


def _make(tmp_path: Path) -> Path:
    db = tmp_path / "g.db"
    x = np.random.default_rng(0).standard_normal((20, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with Gallery(16, path=db, backend="flat") as g:
        g.enroll_many([f"p{i}" for i in range(20)], x)
        g.checkpoint()
    return db


def _digest(d: Path) -> dict[str, tuple[str, int]]:
    out = {}
    for f in sorted(d.rglob("*")):
        if f.is_file():
            out[os.fspath(f)] = (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mode)
    return out


@pytest.mark.parametrize(
    ("which", "mode", "chmod"),
    [
        ("db", 0o666, "600"),
        ("db", 0o620, "600"),
        ("lock", 0o646, "600"),
        ("index", 0o777, "700"),
        ("checkpoint", 0o602, "600"),
    ],
)
@pytest.mark.parametrize("read_only", [False, True])
def test_writable_by_others_is_refused_and_left_alone(
    tmp_path: Path, which: str, mode: int, chmod: str, read_only: bool
) -> None:
    db = _make(tmp_path)
    idx = tmp_path / "g.db.index"
    target = {
        "db": db,
        "lock": tmp_path / "g.db.lock",
        "index": idx,
        "checkpoint": next(idx.iterdir()),
    }[which]
    if not target.exists():
        target.touch()
    os.chmod(target, mode)
    before = _digest(tmp_path)
    with pytest.raises(UnsafePermissionsError) as ei:
        Gallery.open(db, read_only=read_only)
    assert isinstance(ei.value, GalleryFileError) and isinstance(ei.value, PermissionError)
    assert f"chmod {chmod} {os.fspath(target)}" in str(ei.value)
    assert stat.S_IMODE(target.stat().st_mode) == mode  # not silently tightened
    assert _digest(tmp_path) == before  # nothing written, not even a WAL
    os.chmod(target, int(chmod, 8))
    with Gallery.open(db, read_only=read_only) as g:  # after the chmod it opens
        assert len(g) == 20


def test_store_alone_refuses_too(tmp_path: Path) -> None:
    db = _make(tmp_path)
    os.chmod(db, 0o664)
    with pytest.raises(UnsafePermissionsError, match="chmod 600"):
        Store(db)


def test_readable_by_others_is_still_tightened_with_a_warning(tmp_path: Path) -> None:
    db = _make(tmp_path)
    os.chmod(db, 0o644)
    with Gallery.open(db) as g:
        assert len(g) == 20
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


# --- the folder that holds the gallery (OpenSSH StrictModes-style rule) ---


def _folder_digest(d: Path) -> list[tuple[str, int]]:
    return sorted((os.fspath(f), f.stat().st_mode) for f in d.iterdir())


@pytest.mark.parametrize("existing", [False, True])
def test_a_folder_anyone_can_write_is_refused(tmp_path: Path, existing: bool) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    db = folder / "g.db"
    if existing:
        x = np.eye(4, 16, dtype=np.float32)
        with Gallery(16, path=db, backend="flat") as g:
            g.enroll_many(["a", "b", "c", "d"], x)
    os.chmod(folder, 0o777)  # no sticky bit: anyone may rename or unlink our files
    before = _folder_digest(folder)
    for read_only in [False, True] if existing else [False]:
        with pytest.raises(UnsafePermissionsError) as ei:
            Gallery.open(db, read_only=read_only) if existing else Gallery(16, path=db)
        assert f"chmod o-w {os.fspath(folder)}" in str(ei.value)
        assert _folder_digest(folder) == before  # nothing created or changed, not even a lock
    with pytest.raises(UnsafePermissionsError):
        Store(db, dim=16)
    os.chmod(folder, 0o755)
    with Gallery(16, path=db) as g:  # the advice works
        assert len(g) == (4 if existing else 0)


def test_a_sticky_shared_folder_is_allowed_but_planted_files_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "tmp"
    folder.mkdir()
    os.chmod(folder, 0o1777)  # like /tmp
    db = folder / "g.db"
    with Gallery(16, path=db, backend="flat") as g:
        g.enroll_many(["a"], np.eye(1, 16, dtype=np.float32))
    with Gallery.open(db) as g:
        assert len(g) == 1
    if os.geteuid() != 0:
        pytest.skip("planting a file owned by another user needs root (chown)")
    wal = folder / "g.db-wal"
    wal.touch()
    os.chmod(wal, 0o600)
    os.chown(wal, 12345, 12345)  # planted by "another user" before our open
    with pytest.raises(UnsafePermissionsError, match="belongs to another user"):
        Gallery.open(db)
    assert wal.stat().st_uid == 12345 and wal.stat().st_size == 0


def test_a_folder_writable_by_a_shared_group_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a folder to another group needs root (chgrp)")
    folder = tmp_path / "team"
    folder.mkdir()
    os.chown(folder, -1, 54321)  # a group that is not this user's private group
    os.chmod(folder, 0o770)
    with pytest.raises(UnsafePermissionsError, match=r"chmod g-w"):
        Gallery(16, path=folder / "g.db")
    assert list(folder.iterdir()) == []
    os.chmod(folder, 0o750)  # group may read, not write
    with Gallery(16, path=folder / "g.db") as g:
        assert len(g) == 0


def test_a_group_writable_folder_of_a_private_group_is_allowed(tmp_path: Path) -> None:
    from pyfacematch.gallery.filemodes import _private_group

    if not _private_group(os.getegid()):
        pytest.skip("this account's primary group holds other users here")
    folder = tmp_path / "mine"
    folder.mkdir()
    os.chown(folder, -1, os.getegid())
    os.chmod(folder, 0o775)  # umask 002 with user private groups (Debian/Ubuntu default)
    with Gallery(16, path=folder / "g.db") as g:
        assert len(g) == 0
