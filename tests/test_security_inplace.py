"""Encrypting an existing plaintext gallery in place: answers unchanged, no plaintext left,
crash-safe under SIGKILL at every step; derived centres sealed."""

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
from _helpers import unit_rows

from pyfacematch.errors import GalleryReadOnlyError, InputError
from pyfacematch.gallery import Gallery
from pyfacematch.gallery.secret import ENV_VAR

DIM = 32


pytestmark = pytest.mark.usefixtures("no_key_env")


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    return unit_rows(rng, n, DIM)


def _plain(db: Path, n: int = 30, backend: str = "flat", **kw: object) -> np.ndarray:
    x = _unit(np.random.default_rng(3), n)
    with Gallery(DIM, path=db, backend=backend, **kw) as g:  # type: ignore[arg-type]
        g.enroll_many([f"p{i:03d}" for i in range(n)], x)
        g.remove("p001")  # a removal before: its scrub is done, its row is gone
        g.checkpoint()
    return x


def _answers(g: Gallery) -> list[tuple[tuple[str, float], ...]]:
    probes = _unit(np.random.default_rng(99), 10)
    return [
        tuple((c.identity, round(float(c.score), 5)) for c in r.candidates)
        for r in g.identify(probes, k=4)
    ]


def _files(db: Path) -> list[Path]:
    out = [p for p in db.parent.iterdir() if p.is_file() and p.name.startswith(db.name)]
    idx = db.with_name(db.name + ".index")
    if idx.is_dir():
        out += [p for p in idx.iterdir() if p.is_file()]
    return out


def _plaintext_hits(db: Path, x: np.ndarray) -> list[str]:
    """Files holding the first 16 bytes of any enrolled template (in clear)."""
    heads = [r.tobytes()[:16] for r in x]
    return [f.name for f in _files(db) if any(h in f.read_bytes() for h in heads)]


def _row_kinds(db: Path) -> set[str]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT data FROM templates").fetchall()
    finally:
        con.close()
    return {"sealed" if bytes(r[0])[:4] == b"PFE1" else "plain" for r in rows}


def test_encrypt_in_place_keeps_answers_and_leaves_no_plaintext(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    x = _plain(db)
    with Gallery.open(db) as g:
        want = _answers(g)
        assert _plaintext_hits(db, x)  # the premise: templates are in clear before
        n = g.encrypt_in_place()
        assert n == 29 and g.encrypted
        assert _answers(g) == want
        ck = g.info()["checkpoint"]["file"]
        assert ck is not None  # checkpoint re-written ...
    assert _row_kinds(db) == {"sealed"}
    assert _plaintext_hits(db, x) == []  # ... encrypted; no stale row copy, WAL truncated
    with Gallery.open(db) as g:
        assert g.encrypted and _answers(g) == want
        assert g.info()["checkpoint"]["not_used_because"] is None  # the encrypted file loads
        rep = g.leak_audit()
    assert rep["clean"], rep["findings"]
    with Gallery.open(db, encrypt=True) as g:  # opening as encrypted is now consistent
        assert _answers(g) == want


def test_refusals(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    _plain(db, n=5, backend="exact")
    with pytest.raises(InputError, match="encrypt_in_place"):  # the old message points here
        Gallery.open(db, encrypt=True)
    with Gallery.open(db, read_only=True) as r, pytest.raises(GalleryReadOnlyError):
        r.encrypt_in_place()
    with pytest.raises(InputError, match="in-memory"):
        Gallery(DIM).encrypt_in_place()
    with Gallery.open(db) as g:
        g.encrypt_in_place()
        with pytest.raises(InputError, match="already encrypted"):
            g.encrypt_in_place()


def test_cancelable_gallery_secret_moves_into_the_key_ring(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    _plain(db, n=20, backend="exact", cancelable=True)
    with Gallery.open(db) as g:
        want = _answers(g)
        g.encrypt_in_place()
    con = sqlite3.connect(db)
    (doc,) = con.execute("SELECT value FROM meta WHERE key='cancelable'").fetchone()
    con.close()
    assert json.loads(doc)["in"] == "key-ring"
    with Gallery.open(db) as g:
        assert g.cancelable and g.encrypted and _answers(g) == want


def _meta_tuning(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        return " ".join(
            str(v) for (v,) in con.execute("SELECT value FROM meta WHERE key LIKE 'tuning:%'")
        )
    finally:
        con.close()


@pytest.mark.parametrize("how", ["created", "in-place"])
def test_binary_centre_is_sealed_in_an_encrypted_gallery(tmp_path: Path, how: str) -> None:
    db = tmp_path / "g.db"
    x = _unit(np.random.default_rng(4), 400)  # above SMALL_GALLERY: the binary backend tunes
    with Gallery(DIM, path=db, backend="binary", encrypt=how == "created") as g:
        g.enroll_many([f"p{i}" for i in range(400)], x)
        want = _answers(g)
        if how == "in-place":
            assert '"center"' in _meta_tuning(db)  # the premise: in clear when unencrypted
            g.encrypt_in_place()
    text = _meta_tuning(db)
    assert "center_sealed" in text and '"center"' not in text
    with Gallery.open(db) as g:
        assert _answers(g) == want
    assert _meta_tuning(db) == text  # the sealed parameters were used, not re-tuned and saved
    with Gallery.open(db) as g:
        g.rotate_data_key()  # the sealed centre moves to the new data key
    text = _meta_tuning(db)
    assert "center_sealed" in text
    with Gallery.open(db) as g:
        assert _answers(g) == want
    assert _meta_tuning(db) == text


def test_cli_encrypt_then_leak_audit_is_clean(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    x = _plain(db)
    env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, "PYFACEMATCH_AUDIT_KEY")}
    leaks = [sys.executable, "-m", "pyfacematch", "audit", "leaks", "-g", str(db), "-q"]
    assert subprocess.run(leaks, env=env, capture_output=True, timeout=120).returncode == 1
    r = subprocess.run(
        [sys.executable, "-m", "pyfacematch", "encrypt", "-g", str(db)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert b"29 templates" in r.stderr
    r = subprocess.run(leaks, env=env, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stdout.decode()[-3000:]
    assert _plaintext_hits(db, x) == []


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pyfacematch.gallery import Gallery
    from pyfacematch.security import envelope
    import pyfacematch.gallery.encryption as enc
    enc._BATCH = 4
    target, nth, db = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    seen = {"n": 0}
    def step(name):
        if name == target:
            seen["n"] += 1
            if seen["n"] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
    envelope._step = step
    g = Gallery.open(db)
    g.encrypt_in_place()
    os.kill(os.getpid(), signal.SIGKILL)
    """
)
_POINTS = [
    ("encrypt:batch", 2, "plain"),
    ("encrypt:before-commit", 1, "plain"),
    ("encrypt:committed", 1, "sealed"),
    ("encrypt:dropped", 1, "sealed"),
    ("encrypt:scrubbed", 1, "sealed"),
    ("never", 1, "sealed"),  # killed after encrypt_in_place() returned, before close()
]


@pytest.mark.parametrize(("point", "nth", "state"), _POINTS)
def test_encrypt_in_place_survives_sigkill_at_every_step(
    tmp_path: Path, point: str, nth: int, state: str
) -> None:
    db = tmp_path / "g.db"
    x = _plain(db)
    with Gallery.open(db) as g:
        want = _answers(g)
    env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, "PYFACEMATCH_AUDIT_KEY")}
    p = subprocess.run(
        [sys.executable, "-c", _CHILD, point, str(nth), str(db)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()[-2000:]
    assert _row_kinds(db) == {state}  # never a mix
    with Gallery.open(db) as g:  # the writable open finishes what the crash left
        assert g.encrypted == (state == "sealed")
        assert _answers(g) == want
    if state == "sealed":
        assert _plaintext_hits(db, x) == []
        with Gallery.open(db, read_only=True) as r:
            rep = r.leak_audit()
        assert rep["clean"], rep["findings"]


def test_a_reader_open_during_the_encryption_keeps_answering(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    _plain(db, backend="exact")
    r = Gallery.open(db, read_only=True)
    want = _answers(r)
    with Gallery.open(db) as g:
        g.encrypt_in_place()
    assert _answers(r) == want  # reloaded through the new key ring, not quarantined rows
    assert r.encrypted and r.quarantined == []
    r.close()
