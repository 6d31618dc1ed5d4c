"""Searches of read-only galleries are audited (sidecar chained in at the next writable open);
no search record is lost to a SIGKILL of a reader, nor beyond flush_seconds for a writer."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pyfacematch.gallery import Gallery
from pyfacematch.gallery.audit import AUDIT_ENV_VAR, AuditTrail
from pyfacematch.gallery.secret import ENV_VAR

DIM = 16


pytestmark = pytest.mark.usefixtures("no_key_env")


def _unit(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _make(tmp_path: Path) -> Path:
    db = tmp_path / "g.db"
    with Gallery(DIM, path=db, backend="exact", encrypt=True) as g:
        g.enroll_many([f"p{i}" for i in range(10)], _unit(10))
    return db


def _records(db: Path, *actions: str) -> list[tuple[str, str | None, dict]]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT action, actor, detail FROM audit ORDER BY seq").fetchall()
    finally:
        con.close()
    return [(a, who, json.loads(d)) for a, who, d in rows if a in actions]


def _sidecars(db: Path) -> list[Path]:
    return sorted(db.parent.glob(db.name + ".audit-ro-*"))


def test_read_only_searches_join_the_chain_at_the_next_writable_open(tmp_path: Path) -> None:
    db = _make(tmp_path)
    with Gallery.open(db, read_only=True, actor="kiosk-7") as r:
        r.identify(_unit(3, 1), k=2)
        r.identify(_unit(2, 2), k=1, actor="auditor")
        r.verify("p4", _unit(1, 3)[0])
        (side,) = _sidecars(db)
        assert side.stat().st_mode & 0o077 == 0
    assert _records(db, "identify", "verify") == []  # the reader never wrote the database
    with Gallery.open(db) as g:
        got = _records(db, "identify", "verify", "audit-import")
        assert [(a, who) for a, who, _ in got] == [
            ("identify", "kiosk-7"),
            ("identify", "auditor"),
            ("verify", "kiosk-7"),
            ("audit-import", None),
        ]
        assert got[0][2]["probes"] == 3 and got[2][2]["identity"] == "p4"
        assert got[3][2]["records"] == 3
        assert g.audit_verify()["ok"]
    assert _sidecars(db) == []
    with Gallery.open(db) as g:  # imported once, never twice
        assert len(_records(db, "identify", "verify")) == 3


def test_a_live_reader_is_imported_incrementally(tmp_path: Path) -> None:
    db = _make(tmp_path)
    r = Gallery.open(db, read_only=True)
    r.identify(_unit(1, 1))
    r.identify(_unit(1, 2))
    with Gallery.open(db) as g:
        assert len(_records(db, "identify")) == 2  # the reader still holds its sidecar
        assert len(_sidecars(db)) == 1
        r.verify("p1", _unit(1, 3)[0])
        assert g.audit_flush() == 1
        r.close()
        assert g.audit_flush() == 0 and _sidecars(db) == []
        assert len(_records(db, "identify", "verify")) == 3
        assert g.audit_verify()["ok"]


def test_an_edited_sidecar_is_rejected_from_the_edit_on(tmp_path: Path) -> None:
    db = _make(tmp_path)
    with Gallery.open(db, read_only=True) as r:
        for i in range(3):
            r.identify(_unit(1, i))
    (side,) = _sidecars(db)
    lines = side.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'\\"probes\\":1', b'\\"probes\\":9')
    side.write_bytes(b"".join(lines))
    with Gallery.open(db) as g:
        assert len(_records(db, "identify")) == 1
        (rej,) = _records(db, "audit-sidecar-rejected")
        assert rej[2]["line"] == 2 and "hash" in rej[2]["reason"]
        assert g.audit_verify()["ok"]
    assert _sidecars(db) == [side.with_name(side.name + ".rejected")]


_READER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from pyfacematch.gallery import Gallery
    g = Gallery.open(sys.argv[1], read_only=True)
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    for i in range(5):
        g.identify(x[i : i + 1])
    os.kill(os.getpid(), signal.SIGKILL)  # no close(): nothing flushed by hand
    """
)

_WRITER = textwrap.dedent(
    """
    import os, signal, sys, time
    import numpy as np
    from pyfacematch.gallery import Gallery
    g = Gallery.open(sys.argv[1])
    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    g.identify(x[:1], k=1)
    time.sleep(float(sys.argv[2]))
    g.identify(x, k=2)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _run(code: str, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, AUDIT_ENV_VAR)}
    p = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()[-2000:]


def test_sigkilled_reader_loses_no_search_record(tmp_path: Path) -> None:
    db = _make(tmp_path)
    _run(_READER, str(db))
    with Gallery.open(db) as g:
        assert len(_records(db, "identify")) == 5
        assert g.audit_verify()["ok"]
    assert _sidecars(db) == []


def test_sigkilled_writer_loses_only_the_last_flush_interval(tmp_path: Path) -> None:
    db = _make(tmp_path)
    wait = 3 * AuditTrail.flush_seconds + 0.5  # the stated bound, with room on a loaded machine
    _run(_WRITER, str(db), str(wait))
    with Gallery.open(db) as g:
        got = _records(db, "identify")
        assert got and got[0][2]["probes"] == 1  # older than the bound: written
        assert g.audit_verify()["ok"]
