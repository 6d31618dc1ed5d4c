"""SQLite ``quick_check`` at open only when needed (issue 15): the clean-close marker.

A writer records the file's fingerprint at a clean close; the next open skips the whole-file
check only while the file is exactly as that close left it. A damaged page, a crash-left store,
a rewrite of the same bytes or a foreign write must still be checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import pyfacematch as pf
from pyfacematch.errors import GalleryFileError
from pyfacematch.gallery.store import clean_marker_path, closed_cleanly

D = 32


def _unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _make(path: Path, n: int = 400) -> None:
    with pf.Gallery(D, path=path, backend="exact") as g:
        g.enroll_many([f"p{i}" for i in range(n)], _unit(n, 0))


def _checked(path: Path, **kw: object) -> str:
    with pf.Gallery(path=path, **kw) as g:  # type: ignore[arg-type]
        return str(g.info()["integrity_check_at_open"])


def test_clean_close_skips_the_whole_file_check_and_a_writer_clears_the_marker(tmp_path):
    p = tmp_path / "g.db"
    _make(p)
    assert clean_marker_path(p).exists() and closed_cleanly(p)
    assert _checked(p, read_only=True) == "closed cleanly"
    assert _checked(p, read_only=True) == "closed cleanly"  # a reader leaves the file as it was
    g = pf.Gallery(path=p)
    try:
        assert g.info()["integrity_check_at_open"] == "closed cleanly"
        assert not clean_marker_path(p).exists()  # gone before the writer's first write
        # while the writer is open another process must check the file
        assert _checked(p, read_only=True) == "quick_check"
        g.enroll_many(["late"], _unit(1, 5))
    finally:
        g.close()
    assert _checked(p, read_only=True) == "closed cleanly"
    assert _checked(p, read_only=True, integrity_check=False) == "off"


def _damage_a_page(p: Path) -> None:
    """Overwrite one b-tree page in the middle of the file with junk (a bit-rot / bad copy)."""
    size = p.stat().st_size
    page = 4096
    pages = size // page
    assert pages > 8
    with open(p, "r+b") as fh:
        fh.seek((pages // 2) * page)
        fh.write(b"\xa5" * page)


def test_a_damaged_page_after_a_clean_close_is_still_caught(tmp_path):
    p = tmp_path / "g.db"
    _make(p, 2000)
    assert closed_cleanly(p)
    _damage_a_page(p)
    assert not closed_cleanly(p)  # the write changed the fingerprint
    with pytest.raises(GalleryFileError, match="corrupted|not a readable gallery"):
        pf.Gallery(path=p, read_only=True)


def test_same_bytes_rewritten_or_marker_forged_still_checks(tmp_path):
    p = tmp_path / "g.db"
    _make(p)
    raw = p.read_bytes()
    p.write_bytes(raw)  # identical content, but the file was written: ctime/mtime moved
    assert not closed_cleanly(p)
    assert _checked(p, read_only=True) == "quick_check"
    _make(tmp_path / "h.db")
    clean_marker_path(p).write_bytes(b"{not json")
    assert not closed_cleanly(p)
    clean_marker_path(p).write_bytes(clean_marker_path(tmp_path / "h.db").read_bytes())
    assert not closed_cleanly(p)  # another file's fingerprint


def test_a_crash_left_store_is_checked_in_full(tmp_path):
    p = tmp_path / "g.db"
    _make(p)
    code = textwrap.dedent(
        f"""
        import os, numpy as np, pyfacematch as pf
        g = pf.Gallery(path={str(p)!r})
        x = np.random.default_rng(9).standard_normal((5, {D})).astype(np.float32)
        g.enroll_many([f"c{{i}}" for i in range(5)], x / np.linalg.norm(x, axis=1, keepdims=True))
        os._exit(0)  # no close: the WAL is left, no clean-close marker
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))
    assert not clean_marker_path(p).exists()
    assert not closed_cleanly(p)
    with pf.Gallery(path=p, read_only=True) as g:
        assert g.info()["integrity_check_at_open"] == "integrity_check"  # the WAL was left
        assert g.info()["identities"] == 405  # nothing acknowledged was lost
