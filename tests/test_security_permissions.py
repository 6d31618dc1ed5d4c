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
from pyfacematch.gallery.secret import ENV_VAR
from pyfacematch.gallery.store import Store


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


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
